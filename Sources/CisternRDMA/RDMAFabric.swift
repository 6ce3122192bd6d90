import CisternCore

/// A one-sided RDMA operation.
enum RDMAOperation: Sendable {
    /// RDMA READ: remote memory into local memory.
    case read
    /// RDMA WRITE: local memory into remote memory.
    case write

    /// The verbs name, for errors.
    var name: String {
        switch self {
        case .read: return "RDMA READ"
        case .write: return "RDMA WRITE"
        }
    }
}

/// The local port as the handshake describes it.
struct RDMAPortInfo: Sendable, Equatable {
    var lid: UInt16
    var gid: RDMAGID
    var pathMTU: RDMAPathMTU
    /// RDMA READs a queue pair serves and issues at once.
    var readDepth: UInt8
}

/// A registered, pinned buffer that work requests read and write. The memory stays
/// registered and valid as long as the object lives.
protocol RDMARegisteredBuffer: AnyObject, Sendable {
    /// The first byte.
    var base: UnsafeMutableRawPointer { get }
    /// The length in bytes.
    var count: Int { get }
    /// The buffer's registration (its address is `base`).
    var region: MemoryRegion { get }
}

/// One end of a reliable-connected queue pair.
protocol RDMAQueuePairHandle: AnyObject, Sendable {
    /// The queue pair number the peer connects to.
    var number: UInt32 { get }
    /// The first packet sequence number this end sends with.
    var packetSequenceNumber: UInt32 { get }
    /// Connects to the peer `remote` describes (RESET -> INIT -> RTR -> RTS).
    func connect(to remote: QueuePairInfo) throws(RDMAError)
    /// Runs one signaled READ or WRITE of `length` bytes between `local` at
    /// `localOffset` and the peer's memory at `remoteAddress` (`rkey`), and returns when
    /// it has completed. Completion is bounded by the queue pair's retry limits; a
    /// failure leaves the queue pair in the error state.
    func post(
        _ operation: RDMAOperation, local: any RDMARegisteredBuffer, localOffset: Int, length: Int,
        remoteAddress: UInt64, rkey: UInt32
    ) async throws(RDMAError)
    /// Moves the queue pair to the error state: outstanding work fails, no more runs.
    func close()
}

/// What `RDMATransport` needs from an RDMA device: registered buffers and connected
/// queue pairs. `RDMADevice` is the libibverbs implementation; `LoopbackFabric` runs
/// the same protocol in one process without a device (for tests).
protocol RDMAFabric: AnyObject, Sendable {
    /// The device's name, for logs.
    var name: String { get }
    /// The local port.
    var portInfo: RDMAPortInfo { get }
    /// Allocates and registers `bytes` bytes for local access and remote READ and WRITE.
    func registerBuffer(bytes: Int) throws(RDMAError) -> any RDMARegisteredBuffer
    /// A new queue pair that sends with `packetSequenceNumber` (24 bits).
    func makeQueuePair(packetSequenceNumber: UInt32) throws(RDMAError) -> any RDMAQueuePairHandle
    /// Fails outstanding work and stops background work; resources are released as
    /// the objects using them are dropped.
    func close() async
}
