import CisternCore
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// A `Transport` over TCP, on SwiftNIO. Each message travels as one `TCPFrame`
/// (see there for the byte layout).
///
/// Promises:
/// - One outbound connection per remote node, shared by all concurrent calls to it
///   (told apart by request id), at most `TCPTransportLimits.inFlightCallsPerConnectionMax`
///   at a time.
/// - A node's addresses come from the resolver each time a connection is made, and
///   are tried in order. When a connection fails or closes, its calls fail with
///   `.unreachable` and the address is forgotten, so the next call resolves again:
///   this is how a node's move to a new address is followed. After failed attempts,
///   connecting waits a backoff that doubles from
///   `TCPTransportLimits.reconnectBackoffNanosecondsMin` to `reconnectBackoffNanosecondsMax`.
/// - A call ends by its deadline (`timeoutNanoseconds`, at most
///   `TransportLimits.timeoutNanosecondsMax`) with `.timeout`; a response that comes
///   later is dropped. If not a byte came on the connection since that call was
///   sent, the connection probes the peer and, when the probe is not answered
///   within a second, is abandoned (its other calls fail with `.unreachable`): a
///   peer whose address vanished or whose host died sends no reset, and the next
///   call must connect again, resolving afresh, rather than wait on a dead socket.
/// - Messages over `TransportLimits.messageBytesMax` are refused with
///   `.messageTooLarge` before anything is sent; incoming frames that claim more
///   are refused before their body is buffered.
/// - A malformed incoming frame closes its connection with a logged description; it
///   never crashes the process.
/// - Each incoming request runs its service's handler in its own task; an error the
///   handler throws reaches the caller as `.remote` with the error's description, and
///   a request for a service not served here as `.noSuchService`.
/// - `shutdown()` closes the listener and every connection and fails calls in flight
///   with `.shutdown`; later calls fail with `.shutdown` too.
public final class TCPTransport: ListeningTransport {
    public let localNode: NodeID
    /// The address `start()` was asked to listen on (port 0: any free port).
    public let listenAddress: NodeAddress
    let runtime: any Runtime
    private let resolver: any CisternCore.Resolver
    private let group: any EventLoopGroup
    private let logger: Logger
    private let state = Mutex(State())

    private struct State {
        var services: [ServiceID: RequestHandler] = [:]
        var peers: [NodeID: TCPPeer] = [:]
        var inbound: [ObjectIdentifier: any Channel] = [:]
        var listener: (any Channel)?
        var boundAddress: NodeAddress?
        var nextRequestID: UInt64 = 1
        var isShutdown = false
    }

    public init(
        localNode: NodeID, listen: NodeAddress, resolver: any CisternCore.Resolver, runtime: any Runtime,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.localNode = localNode
        self.listenAddress = listen
        self.resolver = resolver
        self.runtime = runtime
        self.group = group
        self.logger = runtime.logger("transport.tcp")
    }

    /// The address the listener is bound to (with the actual port when `listen` had
    /// port 0); nil before `start()` and after `shutdown()`.
    public var boundAddress: NodeAddress? { state.withLock { $0.boundAddress } }

    /// Binds the listener and starts accepting connections. Returns the bound address
    /// (the same one again when already started). Throws the socket error when the
    /// address cannot be bound, or `TransportError.shutdown` after `shutdown()`.
    @discardableResult
    public func start() async throws -> NodeAddress {
        let current: Result<NodeAddress?, TransportError> = state.withLock { s in
            s.isShutdown ? .failure(.shutdown) : .success(s.boundAddress)
        }
        if let bound = try current.get() { return bound }
        let logger = self.logger
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.recvAllocator, value: TCPTransportLimits.receiveAllocator)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(TCPFrameDecoder()))
                    try channel.pipeline.syncOperations.addHandler(TCPServerHandler(transport: self, logger: logger))
                }
            }
            .bind(host: listenAddress.host, port: Int(listenAddress.port))
            .get()
        let bound = NodeAddress(
            host: channel.localAddress?.ipAddress ?? listenAddress.host,
            port: UInt16(clamping: channel.localAddress?.port ?? Int(listenAddress.port)))
        let accepted: Result<NodeAddress?, TransportError> = state.withLock { s in
            if s.isShutdown { return .failure(.shutdown) }
            if let earlier = s.boundAddress { return .success(earlier) }
            s.listener = channel
            s.boundAddress = bound
            return .success(nil)
        }
        if case .success(nil) = accepted {
            logger.info("\(localNode) listening on \(bound)")
            return bound
        }
        // Shut down, or started concurrently by another caller: keep the other listener.
        try? await channel.close()
        if let earlier = try accepted.get() { return earlier }
        throw TransportError.shutdown
    }

    public func call(
        _ node: NodeID, service: ServiceID, _ message: Message, timeoutNanoseconds: UInt64
    ) async throws(TransportError) -> Message {
        guard message.byteCount <= TransportLimits.messageBytesMax else {
            throw .messageTooLarge(bytes: message.byteCount, limitBytes: TransportLimits.messageBytesMax)
        }
        let timeout = min(timeoutNanoseconds, TransportLimits.timeoutNanosecondsMax)
        let deadline = NIODeadline.now() + .nanoseconds(Int64(timeout))
        let (peer, requestID): (TCPPeer?, UInt64) = state.withLock { s in
            guard !s.isShutdown else { return (nil, 0) }
            let id = s.nextRequestID
            s.nextRequestID &+= 1
            if let peer = s.peers[node] { return (peer, id) }
            let peer = TCPPeer(
                node: node,
                context: TCPPeer.Context(
                    localNode: localNode, resolver: resolver, runtime: runtime, group: group, logger: logger))
            s.peers[node] = peer
            return (peer, id)
        }
        guard let peer else { throw .shutdown }
        let connection = try await peer.connection(deadline: deadline, timeoutNanoseconds: timeout).get()
        let frame = TCPFrame(
            kind: .request, requestID: requestID, source: localNode, destination: node, service: service,
            method: message.method, header: message.header, bulk: message.bulk)
        return try await connection.call(frame, deadline: deadline, timeoutNanoseconds: timeout).get()
    }

    public func serve(_ service: ServiceID, handler: @escaping RequestHandler) {
        state.withLock { $0.services[service] = handler }
    }

    /// Stops serving `service`; its requests then fail with `.noSuchService`.
    public func stopServing(_ service: ServiceID) {
        state.withLock { _ = $0.services.removeValue(forKey: service) }
    }

    public func shutdown() async {
        let (listener, peers, inbound): ((any Channel)?, [TCPPeer], [any Channel]) = state.withLock { s in
            s.isShutdown = true
            let taken = (s.listener, Array(s.peers.values), Array(s.inbound.values))
            s.listener = nil
            s.boundAddress = nil
            s.peers = [:]
            s.inbound = [:]
            s.services = [:]
            return taken
        }
        for peer in peers { peer.shutdown() }
        if let listener { try? await listener.close() }
        for channel in inbound { try? await channel.close() }
    }

    func handler(for service: ServiceID) -> RequestHandler? {
        state.withLock { $0.services[service] }
    }

    /// Tracks an accepted connection so `shutdown()` can close it; false after shutdown.
    func registerInbound(_ channel: any Channel) -> Bool {
        state.withLock { s in
            guard !s.isShutdown else { return false }
            s.inbound[ObjectIdentifier(channel)] = channel
            return true
        }
    }

    func unregisterInbound(_ channel: any Channel) {
        state.withLock { _ = $0.inbound.removeValue(forKey: ObjectIdentifier(channel)) }
    }
}
