import CisternWire

/// A service's number on the wire (one per server role: mgmtd, meta, storage, ...).
public struct ServiceID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(_ rawValue: UInt16) { self.rawValue = rawValue }
    public static func < (a: ServiceID, b: ServiceID) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "service#\(rawValue)" }
}

/// What travels in one direction of a call: a small header (a `WireCodable`
/// request or response) and an optional bulk payload for large buffers. Bulk bytes
/// are never re-encoded: TCP sends them inline after the header, RDMA moves them
/// with one-sided reads and writes, the simulator hands the array over.
public struct Message: Sendable, Equatable {
    public var method: UInt16
    public var header: [UInt8]
    public var bulk: [UInt8]

    public init(method: UInt16, header: [UInt8], bulk: [UInt8] = []) {
        self.method = method
        self.header = header
        self.bulk = bulk
    }

    public var byteCount: Int { header.count + bulk.count }
}

/// A request as the serving side sees it.
public struct IncomingRequest: Sendable {
    public var from: NodeID
    public var service: ServiceID
    public var message: Message
    public init(from: NodeID, service: ServiceID, message: Message) {
        self.from = from
        self.service = service
        self.message = message
    }
}

/// Serves one service's requests. Errors thrown here reach the caller as
/// `TransportError.remote`; application errors belong in the response message.
public typealias RequestHandler = @Sendable (IncomingRequest) async throws -> Message

/// Limits every transport enforces.
public enum TransportLimits {
    /// Largest message (header plus bulk) a transport accepts, in bytes.
    public static let messageBytesMax = 64 << 20
    /// Longest timeout a caller may ask for.
    public static let timeoutNanosecondsMax: UInt64 = 600_000_000_000
}

/// Why a call failed. `timeout` and `unreachable` leave it unknown whether the
/// request was executed; callers that retry must make requests idempotent.
public enum TransportError: Error, Equatable, Sendable, CustomStringConvertible {
    case timeout(node: NodeID, nanoseconds: UInt64)
    case unreachable(node: NodeID, reason: String)
    case noSuchService(node: NodeID, service: ServiceID)
    case remote(node: NodeID, message: String)
    case messageTooLarge(bytes: Int, limitBytes: Int)
    case malformed(node: NodeID, detail: String)
    case shutdown

    public var description: String {
        switch self {
        case .timeout(let n, let ns): return "call to \(n) timed out after \(Double(ns) / 1e6) ms"
        case .unreachable(let n, let reason): return "\(n) is unreachable: \(reason)"
        case .noSuchService(let n, let s): return "\(n) does not serve \(s): is the right role running there?"
        case .remote(let n, let m): return "\(n) failed the request: \(m)"
        case .messageTooLarge(let b, let l): return "message of \(b) bytes exceeds the \(l)-byte limit; split the batch"
        case .malformed(let n, let d): return "malformed frame from \(n): \(d)"
        case .shutdown: return "the transport is shut down"
        }
    }
}

/// Request/response messages between logical nodes. Implementations: the simulated
/// network, TCP (SwiftNIO), RDMA verbs.
public protocol Transport: Sendable {
    /// The node this transport speaks for.
    var localNode: NodeID { get }

    /// Sends `message` to `service` on `node` and waits for its response, at most
    /// `timeoutNanoseconds`. Resolves the node's address through the resolver and
    /// re-resolves after a failure, so address changes are followed.
    func call(
        _ node: NodeID, service: ServiceID, _ message: Message, timeoutNanoseconds: UInt64
    ) async throws(TransportError) -> Message

    /// Starts serving `service` with `handler`, replacing any earlier handler.
    func serve(_ service: ServiceID, handler: @escaping RequestHandler) async

    /// Stops serving and fails calls in flight with `.shutdown`.
    func shutdown() async
}

/// Finds a node's current addresses by its identity (a simulated name service in
/// the simulator, DNS or a static table in production). More than one address
/// means more than one network path; callers try them in order.
public protocol Resolver: Sendable {
    func resolve(_ node: NodeID) async throws(TransportError) -> [NodeAddress]
}

/// A `Transport` a process starts listening with: the production transports (TCP, RDMA).
public protocol ListeningTransport: Transport {
    /// Starts accepting connections and returns the bound address (with the actual
    /// port when the configured one was 0).
    @discardableResult
    func start() async throws -> NodeAddress
    /// The bound address; nil before `start()` and after `shutdown()`.
    var boundAddress: NodeAddress? { get }
}
