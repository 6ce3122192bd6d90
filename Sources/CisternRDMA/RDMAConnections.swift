import CisternCore
import CisternWire
import Synchronization

/// The calling side of one RDMA connection to a peer: our queue pair, our staging
/// buffer (source of RDMA WRITEs and destination of RDMA READs), and the peer's
/// advertised buffer, whose landing zone we allocate for request bulk.
///
/// Every one-sided operation on the connection is started here, so the serving side
/// never posts work: it only exposes memory.
final class OutboundConnection: Sendable {
    let id: UInt64
    let node: NodeID
    let queuePair: any RDMAQueuePairHandle
    let staging: any RDMARegisteredBuffer
    let fabric: any RDMAFabric
    /// The peer's buffer for this connection.
    let remote: RemoteBuffer
    /// The bytes at the start of `remote` we may write requests into.
    let landingBytes: Int
    /// The peer's advertised regions (one): every remote access is checked against it
    /// before it is posted, so a bad offset is an error here, not a broken queue pair.
    let remoteRegions: MemoryRegionTable

    private struct State {
        var staging: ExtentAllocator
        var landing: ExtentAllocator
        /// Landing slots of calls that ended without a response: the peer may still
        /// copy them, so they are reused only after a grace period.
        var quarantine: [(extent: BufferExtent, untilNanoseconds: UInt64)] = []
        /// Response slots we have read; sent with the next request so the peer frees them.
        var releasedTokens: [UInt64] = []
        var isRetired = false
    }
    private let state: Mutex<State>

    init(
        id: UInt64, node: NodeID, queuePair: any RDMAQueuePairHandle, staging: any RDMARegisteredBuffer,
        fabric: any RDMAFabric, remote: RemoteBuffer, landingBytes: Int
    ) throws(MemoryRegionError) {
        self.id = id
        self.node = node
        self.queuePair = queuePair
        self.staging = staging
        self.fabric = fabric
        self.remote = remote
        self.landingBytes = landingBytes
        var table = MemoryRegionTable()
        try table.insert(remote.region)
        self.remoteRegions = table
        self.state = Mutex(State(staging: ExtentAllocator(capacity: staging.count), landing: ExtentAllocator(capacity: landingBytes)))
    }

    /// True once the connection was given up (its calls finish, new ones go elsewhere).
    var isRetired: Bool { state.withLock { $0.isRetired } }

    /// Marks the connection retired and moves its queue pair to the error state.
    func retire() {
        let first = state.withLock { s -> Bool in
            defer { s.isRetired = true }
            return !s.isRetired
        }
        if first { queuePair.close() }
    }

    /// A landing slot of `length` bytes in the peer's buffer, or nil when none is free.
    func reserveLanding(_ length: Int, nowNanoseconds: UInt64) -> BufferExtent? {
        state.withLock { s in
            if !s.quarantine.isEmpty {
                var kept: [(extent: BufferExtent, untilNanoseconds: UInt64)] = []
                for entry in s.quarantine {
                    if entry.untilNanoseconds <= nowNanoseconds {
                        try? s.landing.free(entry.extent)
                    } else {
                        kept.append(entry)
                    }
                }
                s.quarantine = kept
            }
            return s.landing.allocate(length)
        }
    }

    /// Frees a landing slot the peer has certainly copied (its call got a response).
    func releaseLanding(_ extent: BufferExtent) {
        state.withLock { s in try? s.landing.free(extent) }
    }

    /// Holds a landing slot until `untilNanoseconds`: the peer may still copy it.
    func quarantineLanding(_ extent: BufferExtent, untilNanoseconds: UInt64) {
        state.withLock { s in s.quarantine.append((extent, untilNanoseconds)) }
    }

    /// Records a response slot we have finished reading.
    func noteReleased(_ token: UInt64) {
        state.withLock { $0.releasedTokens.append(token) }
    }

    /// The tokens to send with the next request (at most 1024 per request).
    func takeReleasedTokens() -> [UInt64] {
        state.withLock { s in
            let taken = Array(s.releasedTokens.prefix(1024))
            s.releasedTokens.removeFirst(taken.count)
            return taken
        }
    }

    /// Puts back tokens that were taken but not sent.
    func restoreReleasedTokens(_ tokens: [UInt64]) {
        guard !tokens.isEmpty else { return }
        state.withLock { $0.releasedTokens.insert(contentsOf: tokens, at: 0) }
    }

    /// Writes `bytes` into landing slot `slot` of the peer's buffer with RDMA WRITE and
    /// returns their CRC-32C.
    func write(_ bytes: [UInt8], to slot: BufferExtent) async throws(RDMAError) -> UInt32 {
        let remoteAddress = try remoteAddress(offset: UInt64(slot.offset), length: UInt64(bytes.count))
        let (buffer, extent) = try localSpace(bytes.count)
        defer { if let extent { freeLocal(extent) } }
        let offset = extent?.offset ?? 0
        bytes.withUnsafeBytes { source in
            if let from = source.baseAddress {
                (buffer.base + offset).copyMemory(from: from, byteCount: source.count)
            }
        }
        let checksum = CRC32C.checksum(bytes)
        try await queuePair.post(
            .write, local: buffer, localOffset: offset, length: bytes.count, remoteAddress: remoteAddress, rkey: remote.rkey)
        return checksum
    }

    /// Reads `length` bytes at `offset` of the peer's buffer with RDMA READ.
    func read(offset: UInt64, length: Int) async throws(RDMAError) -> [UInt8] {
        let remoteAddress = try remoteAddress(offset: offset, length: UInt64(length))
        let (buffer, extent) = try localSpace(length)
        defer { if let extent { freeLocal(extent) } }
        let localOffset = extent?.offset ?? 0
        try await queuePair.post(
            .read, local: buffer, localOffset: localOffset, length: length, remoteAddress: remoteAddress, rkey: remote.rkey)
        let source = UnsafeRawBufferPointer(start: buffer.base + localOffset, count: length)
        return [UInt8](source)
    }

    /// The peer's address of `[offset, offset + length)` of its buffer, checked against
    /// what it advertised.
    private func remoteAddress(offset: UInt64, length: UInt64) throws(RDMAError) -> UInt64 {
        let (address, overflow) = remote.address.addingReportingOverflow(offset)
        guard !overflow else {
            throw .memoryRegion(.outOfRange(address: remote.address, length: offset, region: remote.region))
        }
        do throws(MemoryRegionError) {
            try remoteRegions.validateRemoteAccess(rkey: remote.rkey, address: address, length: length)
        } catch {
            throw .memoryRegion(error)
        }
        return address
    }

    /// Local registered space for `length` bytes: a slot of the staging buffer, or a
    /// buffer registered for this one transfer when the staging buffer is full.
    private func localSpace(_ length: Int) throws(RDMAError) -> (any RDMARegisteredBuffer, BufferExtent?) {
        if let extent = state.withLock({ $0.staging.allocate(length) }) {
            return (staging, extent)
        }
        return (try fabric.registerBuffer(bytes: length), nil)
    }

    private func freeLocal(_ extent: BufferExtent) {
        state.withLock { s in try? s.staging.free(extent) }
    }
}

/// The serving side of one RDMA connection: our queue pair (connected to the
/// caller's, passive) and our buffer for it: a landing zone the caller writes request
/// bulk into, then a response zone we fill for the caller to read.
final class InboundConnection: Sendable {
    let id: UInt64
    let node: NodeID
    let queuePair: any RDMAQueuePairHandle
    let buffer: any RDMARegisteredBuffer
    let landingBytes: Int

    private struct State {
        var responses: ExtentAllocator
        /// Response slot token -> its extent (in the response zone) and lease end.
        var leases: [UInt64: (extent: BufferExtent, untilNanoseconds: UInt64)] = [:]
        var nextToken: UInt64 = 1
        var lastUsedNanoseconds: UInt64
    }
    private let state: Mutex<State>

    init(
        id: UInt64, node: NodeID, queuePair: any RDMAQueuePairHandle, buffer: any RDMARegisteredBuffer, landingBytes: Int,
        nowNanoseconds: UInt64
    ) {
        self.id = id
        self.node = node
        self.queuePair = queuePair
        self.buffer = buffer
        self.landingBytes = min(landingBytes, buffer.count)
        self.state = Mutex(
            State(responses: ExtentAllocator(capacity: buffer.count - self.landingBytes), lastUsedNanoseconds: nowNanoseconds))
    }

    /// When the connection last carried a call.
    var lastUsedNanoseconds: UInt64 { state.withLock { $0.lastUsedNanoseconds } }

    /// True when the connection carried no call for more than `idleNanoseconds` and no
    /// response slot is leased past `nowNanoseconds`.
    func isIdle(nowNanoseconds: UInt64, idleNanoseconds: UInt64) -> Bool {
        state.withLock { s in
            nowNanoseconds >= s.lastUsedNanoseconds && nowNanoseconds - s.lastUsedNanoseconds > idleNanoseconds
                && s.leases.values.allSatisfy { $0.untilNanoseconds <= nowNanoseconds }
        }
    }

    func touch(nowNanoseconds: UInt64) {
        state.withLock { $0.lastUsedNanoseconds = max($0.lastUsedNanoseconds, nowNanoseconds) }
    }

    /// Copies request bulk out of the landing zone and checks it against `checksum`;
    /// returns why not when the range is outside the landing zone or the bytes do not
    /// match (the caller gave up on the call and reused the slot).
    func takeRequestBulk(offset: UInt64, length: UInt64, checksum: UInt32) -> Result<[UInt8], RDMAProtocolError> {
        guard length <= UInt64(landingBytes), offset <= UInt64(landingBytes) - length else {
            return .failure(RDMAProtocolError(text: "bulk of \(length) bytes at offset \(offset) is outside the \(landingBytes)-byte landing zone"))
        }
        let bytes = [UInt8](UnsafeRawBufferPointer(start: buffer.base + Int(offset), count: Int(length)))
        let actual = CRC32C.checksum(bytes)
        guard actual == checksum else {
            return .failure(
                RDMAProtocolError(
                    text: "bulk of \(length) bytes at offset \(offset) has CRC-32C \(String(actual, radix: 16)), the caller sent \(String(checksum, radix: 16))"))
        }
        return .success(bytes)
    }

    /// Copies response bulk into a fresh response slot leased until `untilNanoseconds`
    /// and returns where the caller finds it; nil when the response zone has no room.
    func placeResponse(_ bytes: [UInt8], untilNanoseconds: UInt64, nowNanoseconds: UInt64) -> BulkPlacement? {
        let slot: (BufferExtent, UInt64)? = state.withLock { s in
            let expired = s.leases.filter { $0.value.untilNanoseconds <= nowNanoseconds }.map(\.key)
            for token in expired {
                if let lease = s.leases.removeValue(forKey: token) { try? s.responses.free(lease.extent) }
            }
            guard let extent = s.responses.allocate(bytes.count) else { return nil }
            let token = s.nextToken
            s.nextToken &+= 1
            s.leases[token] = (extent, untilNanoseconds)
            return (extent, token)
        }
        guard let (extent, token) = slot else { return nil }
        let offset = landingBytes + extent.offset
        bytes.withUnsafeBytes { source in
            if let from = source.baseAddress {
                (buffer.base + offset).copyMemory(from: from, byteCount: source.count)
            }
        }
        return .remote(offset: UInt64(offset), length: UInt64(bytes.count), checksum: CRC32C.checksum(bytes), token: token)
    }

    /// Frees the response slots the caller has read.
    func release(_ tokens: [UInt64]) {
        guard !tokens.isEmpty else { return }
        state.withLock { s in
            for token in tokens {
                if let lease = s.leases.removeValue(forKey: token) { try? s.responses.free(lease.extent) }
            }
        }
    }
}
