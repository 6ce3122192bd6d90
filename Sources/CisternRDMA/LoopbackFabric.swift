import CisternCore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An in-process stand-in for an RDMA network: the buffers and queue pairs of every
/// `LoopbackFabric` made on it, so one-sided READ and WRITE between them are memory
/// copies checked exactly as an adapter checks them (the queue pairs must be connected
/// to each other, the rkey must name a registered buffer of the peer, and the range
/// must lie inside it). Used to run `RDMATransport`'s protocol without a device.
final class LoopbackRDMANetwork: Sendable {
    private struct State {
        var regions = MemoryRegionTable()
        var buffers: [UInt64: LoopbackBufferBox] = [:]
        var queuePairs: [UInt32: LoopbackQueuePairBox] = [:]
        var nextQueuePairNumber: UInt32 = 1
        var nextKey: UInt32 = 0x100
        /// Operations to fail before any more succeed (fault injection).
        var failReads = 0
        var failWrites = 0
        var reads = 0
        var writes = 0
    }
    private let state = Mutex(State())

    init() {}

    /// Makes the next `count` RDMA READs (or WRITEs) fail with a completion error, as
    /// a broken link would.
    func failNext(_ operation: RDMAOperation, count: Int = 1) {
        state.withLock { s in
            switch operation {
            case .read: s.failReads += count
            case .write: s.failWrites += count
            }
        }
    }

    /// Completed one-sided operations so far.
    var completed: (reads: Int, writes: Int) { state.withLock { ($0.reads, $0.writes) } }

    /// Buffers registered now (all fabrics together).
    var registeredBufferCount: Int { state.withLock { $0.regions.count } }

    func register(_ buffer: LoopbackBuffer) throws(RDMAError) -> MemoryRegion {
        let result: Result<MemoryRegion, MemoryRegionError> = state.withLock { s in
            let key = s.nextKey
            s.nextKey &+= 1
            let region = MemoryRegion(
                address: UInt64(UInt(bitPattern: buffer.base)), length: UInt64(buffer.count), lkey: key, rkey: key)
            do throws(MemoryRegionError) {
                try s.regions.insert(region)
            } catch {
                return .failure(error)
            }
            s.buffers[region.address] = LoopbackBufferBox(value: buffer)
            return .success(region)
        }
        switch result {
        case .success(let region): return region
        case .failure(let error): throw .memoryRegion(error)
        }
    }

    func unregister(_ region: MemoryRegion) {
        state.withLock { s in
            _ = try? s.regions.remove(address: region.address)
            s.buffers[region.address] = nil
        }
    }

    func add(_ queuePair: LoopbackQueuePair) -> UInt32 {
        state.withLock { s in
            let number = s.nextQueuePairNumber
            s.nextQueuePairNumber = (s.nextQueuePairNumber + 1) & QueuePairInfo.twentyFourBitMax
            s.queuePairs[number] = LoopbackQueuePairBox(value: queuePair)
            return number
        }
    }

    func remove(queuePairNumber: UInt32) {
        state.withLock { _ = $0.queuePairs.removeValue(forKey: queuePairNumber) }
    }

    /// Runs one operation from `source` (connected to queue pair `peer`) as an adapter
    /// would, or says why it fails. The lock is held only to look things up: no strong
    /// reference is made (or dropped) under it, since dropping the last one runs a
    /// deinit that takes the lock again.
    func transfer(
        _ operation: RDMAOperation, from source: LoopbackQueuePair, peer: UInt32, localAddress: UInt64, length: Int,
        remoteAddress: UInt64, rkey: UInt32
    ) -> Result<Void, RDMAError> {
        let retryExceeded = RDMAError.completionFailed(
            operation: operation.name, status: "transport retry counter exceeded", vendorError: 0x81)
        let lookup: Result<(LoopbackQueuePairBox?, LoopbackBufferBox?), RDMAError> = state.withLock { s in
            switch operation {
            case .read where s.failReads > 0:
                s.failReads -= 1
                return .failure(retryExceeded)
            case .write where s.failWrites > 0:
                s.failWrites -= 1
                return .failure(retryExceeded)
            default: break
            }
            do throws(MemoryRegionError) {
                let target = try s.regions.validateRemoteAccess(rkey: rkey, address: remoteAddress, length: UInt64(length))
                return .success((s.queuePairs[peer], s.buffers[target.address]))
            } catch {
                return .failure(
                    .completionFailed(operation: operation.name, status: "remote access error (\(error))", vendorError: 0x88))
            }
        }
        let boxes: (LoopbackQueuePairBox?, LoopbackBufferBox?)
        switch lookup {
        case .success(let found): boxes = found
        case .failure(let error): return .failure(error)
        }
        // The peer's queue pair must exist and be connected to ours, as an RC path needs.
        guard let remote = boxes.0?.value, remote.isConnected(to: source.number) else { return .failure(retryExceeded) }
        guard let target = boxes.1?.value,
            let localPointer = UnsafeMutableRawPointer(bitPattern: UInt(localAddress)),
            let remotePointer = UnsafeMutableRawPointer(bitPattern: UInt(remoteAddress))
        else {
            return .failure(.completionFailed(operation: operation.name, status: "remote access error", vendorError: 0x88))
        }
        switch operation {
        case .read: localPointer.copyMemory(from: remotePointer, byteCount: length)
        case .write: remotePointer.copyMemory(from: localPointer, byteCount: length)
        }
        withExtendedLifetime(target) {}
        state.withLock { s in
            switch operation {
            case .read: s.reads += 1
            case .write: s.writes += 1
            }
        }
        return .success(())
    }
}

/// A weak reference to a loopback buffer.
struct LoopbackBufferBox: Sendable {
    weak var value: LoopbackBuffer?
}

/// A weak reference to a loopback queue pair.
struct LoopbackQueuePairBox: Sendable {
    weak var value: LoopbackQueuePair?
}

/// One node's view of a `LoopbackRDMANetwork`, standing in for an `RDMADevice`.
final class LoopbackFabric: RDMAFabric, Sendable {
    let network: LoopbackRDMANetwork
    let name: String
    let portInfo: RDMAPortInfo
    private let closed = Atomic<Bool>(false)

    init(network: LoopbackRDMANetwork, name: String = "loopback", lid: UInt16 = 1) {
        self.network = network
        self.name = name
        self.portInfo = RDMAPortInfo(lid: lid, gid: .zero, pathMTU: .bytes4096, readDepth: 16)
    }

    var isClosed: Bool { closed.load(ordering: .acquiring) }

    func registerBuffer(bytes: Int) throws(RDMAError) -> any RDMARegisteredBuffer {
        guard !isClosed else { throw .shutdown }
        return try LoopbackBuffer(network: network, bytes: bytes)
    }

    func makeQueuePair(packetSequenceNumber: UInt32) throws(RDMAError) -> any RDMAQueuePairHandle {
        guard !isClosed else { throw .shutdown }
        return LoopbackQueuePair(fabric: self, packetSequenceNumber: packetSequenceNumber)
    }

    func close() async {
        closed.store(true, ordering: .releasing)
    }
}

/// Heap memory registered on a loopback network.
final class LoopbackBuffer: RDMARegisteredBuffer, @unchecked Sendable {
    let network: LoopbackRDMANetwork
    let base: UnsafeMutableRawPointer
    let count: Int
    private(set) var region = MemoryRegion(address: 0, length: 0, lkey: 0, rkey: 0)

    init(network: LoopbackRDMANetwork, bytes: Int) throws(RDMAError) {
        guard bytes > 0 else { throw .invalidArgument("a registered buffer needs at least 1 byte, not \(bytes)") }
        self.network = network
        self.base = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
        // Zeroed so a peer never reads stale heap contents (memset: fast in any build).
        memset(self.base, 0, bytes)
        self.count = bytes
        do throws(RDMAError) {
            region = try network.register(self)
        } catch {
            base.deallocate()
            throw error
        }
    }

    deinit {
        if region.length > 0 { network.unregister(region) }
        base.deallocate()
    }
}

/// A queue pair on a loopback network.
final class LoopbackQueuePair: RDMAQueuePairHandle, Sendable {
    let fabric: LoopbackFabric
    let packetSequenceNumber: UInt32
    private let peer = Mutex<UInt32?>(nil)
    private let closed = Atomic<Bool>(false)
    private let assignedNumber = Atomic<UInt32>(0)

    var number: UInt32 { assignedNumber.load(ordering: .acquiring) }

    init(fabric: LoopbackFabric, packetSequenceNumber: UInt32) {
        self.fabric = fabric
        self.packetSequenceNumber = packetSequenceNumber
        assignedNumber.store(fabric.network.add(self), ordering: .releasing)
    }

    deinit {
        fabric.network.remove(queuePairNumber: number)
    }

    func isConnected(to other: UInt32) -> Bool {
        !closed.load(ordering: .acquiring) && peer.withLock { $0 } == other
    }

    func connect(to remote: QueuePairInfo) throws(RDMAError) {
        guard !closed.load(ordering: .acquiring) else { throw .notConnected("the queue pair was closed") }
        peer.withLock { $0 = remote.queuePairNumber }
    }

    func post(
        _ operation: RDMAOperation, local: any RDMARegisteredBuffer, localOffset: Int, length: Int,
        remoteAddress: UInt64, rkey: UInt32
    ) async throws(RDMAError) {
        guard !fabric.isClosed else { throw .shutdown }
        guard length > 0, localOffset >= 0, localOffset <= local.count - length else {
            throw .invalidArgument("\(operation.name) of \(length) bytes at offset \(localOffset) of a \(local.count)-byte buffer")
        }
        guard !closed.load(ordering: .acquiring), let peer = peer.withLock({ $0 }) else {
            throw .notConnected("the queue pair is not connected")
        }
        let localAddress = UInt64(UInt(bitPattern: local.base)) + UInt64(localOffset)
        let result = fabric.network.transfer(
            operation, from: self, peer: peer, localAddress: localAddress, length: length, remoteAddress: remoteAddress, rkey: rkey)
        if case .failure = result { close() }
        try result.get()
    }

    func close() {
        closed.store(true, ordering: .releasing)
    }
}
