import CisternCore
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// This node's outbound side toward one remote node: at most one connection,
/// shared by every call; connects on demand (resolving the node's addresses afresh
/// each time and trying them in order), waits out a capped exponential backoff after
/// failed attempts, and forgets the connection (and so the address) when it closes.
final class TCPPeer: Sendable {
    /// What a peer needs from its transport.
    struct Context: Sendable {
        let localNode: NodeID
        let resolver: any CisternCore.Resolver
        let runtime: any Runtime
        let group: any EventLoopGroup
        let logger: Logger
    }

    let node: NodeID
    private let context: Context
    private let state = Mutex(State())

    private struct Waiter {
        let continuation: CheckedContinuation<Acquired, Never>
        var timer: Scheduled<Void>?
    }

    private struct State {
        var connection: TCPOutboundConnection?
        var connecting = false
        var waiters: [UInt64: Waiter] = [:]
        var nextWaiterID: UInt64 = 0
        var consecutiveFailures = 0
        var retryAt = NIODeadline.uptimeNanoseconds(0)
        var lastFailure: TransportError?
        var isShutdown = false
    }

    private enum Acquired {
        case connection(TCPOutboundConnection)
        case failure(TransportError)
        /// In backoff: try again at this time.
        case retry(at: NIODeadline)
    }

    init(node: NodeID, context: Context) {
        self.node = node
        self.context = context
    }

    /// The open connection to the node, connecting first when there is none; fails
    /// with `.timeout` at `deadline`.
    func connection(deadline: NIODeadline, timeoutNanoseconds: UInt64) async -> Result<TCPOutboundConnection, TransportError> {
        while true {
            switch await acquire(deadline: deadline, timeoutNanoseconds: timeoutNanoseconds) {
            case .connection(let connection): return .success(connection)
            case .failure(let error): return .failure(error)
            case .retry(let at):
                let now = NIODeadline.now()
                if at > now {
                    do {
                        try await context.runtime.sleep(nanoseconds: UInt64((at - now).nanoseconds))
                    } catch {
                        return .failure(.timeout(node: node, nanoseconds: timeoutNanoseconds))
                    }
                }
            }
        }
    }

    private func acquire(deadline: NIODeadline, timeoutNanoseconds: UInt64) async -> Acquired {
        await withCheckedContinuation { continuation in
            enum Step {
                case done(Acquired)
                case wait(id: UInt64, startConnect: Bool)
            }
            let now = NIODeadline.now()
            let step: Step = state.withLock { s in
                if s.isShutdown { return .done(.failure(.shutdown)) }
                if let connection = s.connection, connection.isOpen { return .done(.connection(connection)) }
                s.connection = nil
                var start = false
                if !s.connecting {
                    if now < s.retryAt {
                        if s.retryAt >= deadline {
                            let last = s.lastFailure.map { "\($0)" } ?? "connection failed"
                            let wait = (s.retryAt - now).nanoseconds / 1_000_000
                            return .done(.failure(.unreachable(node: node, reason: "\(last); next attempt in \(wait) ms")))
                        }
                        return .done(.retry(at: s.retryAt))
                    }
                    s.connecting = true
                    start = true
                }
                let id = s.nextWaiterID
                s.nextWaiterID += 1
                s.waiters[id] = Waiter(continuation: continuation, timer: nil)
                return .wait(id: id, startConnect: start)
            }
            switch step {
            case .done(let acquired):
                continuation.resume(returning: acquired)
            case .wait(let id, let startConnect):
                let node = self.node
                let timer = context.group.any().scheduleTask(deadline: deadline) { [self] in
                    let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
                    waiter?.continuation.resume(returning: .failure(.timeout(node: node, nanoseconds: timeoutNanoseconds)))
                }
                let keep = state.withLock { s in
                    guard s.waiters[id] != nil else { return false }
                    s.waiters[id]!.timer = timer
                    return true
                }
                if !keep { timer.cancel() }
                if startConnect {
                    context.runtime.spawn("tcp.connect.\(node)") { [self] in await connect() }
                }
            }
        }
    }

    /// Resolves the node, tries each address in order, and hands the outcome to every waiter.
    private func connect() async {
        let outcome = await attemptConnection()
        let (waiters, connection): ([Waiter], TCPOutboundConnection?) = state.withLock { s in
            s.connecting = false
            let waiters = Array(s.waiters.values)
            s.waiters = [:]
            switch outcome {
            case .success(let connection):
                if s.isShutdown { return (waiters, connection) }
                s.connection = connection
                s.consecutiveFailures = 0
                s.lastFailure = nil
            case .failure(let error):
                s.consecutiveFailures += 1
                s.lastFailure = error
                let backoff = TCPTransportLimits.reconnectRetry.delayNanoseconds(beforeAttempt: s.consecutiveFailures)
                s.retryAt = NIODeadline.now() + .nanoseconds(Int64(backoff))
            }
            return (waiters, nil)
        }
        let acquired: Acquired
        if let connection {
            // Shut down while connecting.
            connection.close(.shutdown)
            acquired = .failure(.shutdown)
        } else {
            switch outcome {
            case .success(let connection): acquired = .connection(connection)
            case .failure(let error): acquired = .failure(error)
            }
        }
        for waiter in waiters {
            waiter.timer?.cancel()
            waiter.continuation.resume(returning: acquired)
        }
    }

    private func attemptConnection() async -> Result<TCPOutboundConnection, TransportError> {
        let addresses: [NodeAddress]
        do {
            addresses = try await context.resolver.resolve(node)
        } catch {
            return .failure(error)
        }
        guard !addresses.isEmpty else {
            return .failure(.unreachable(node: node, reason: "the resolver knows no address for \(node)"))
        }
        var failures: [String] = []
        for address in addresses {
            let connection = TCPOutboundConnection(node: node, address: address, localNode: context.localNode) { [self] closed in
                connectionClosed(closed)
            }
            let logger = context.logger
            let bootstrap = ClientBootstrap(group: context.group)
                .connectTimeout(.nanoseconds(Int64(TCPTransportLimits.connectTimeoutNanosecondsMax)))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelOption(.recvAllocator, value: TCPTransportLimits.receiveAllocator)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(TCPFrameDecoder()))
                        try channel.pipeline.syncOperations.addHandler(
                            TCPClientHandler(connection: connection, logger: logger))
                    }
                }
            do {
                let channel = try await bootstrap.connect(host: address.host, port: Int(address.port)).get()
                if connection.attach(channel) {
                    context.logger.debug("connected to \(node) at \(address)")
                    return .success(connection)
                }
                failures.append("\(address): connection closed as soon as it opened")
            } catch {
                failures.append("\(address): \(error)")
            }
        }
        let reason =
            failures.count == 1
            ? "cannot connect to \(failures[0])"
            : "cannot connect to any of \(addresses.count) addresses (\(failures.joined(separator: "; ")))"
        context.logger.debug("\(node): \(reason)")
        return .failure(.unreachable(node: node, reason: reason))
    }

    /// Forgets `connection` once it closed, so the next call resolves the node again.
    private func connectionClosed(_ connection: TCPOutboundConnection) {
        state.withLock { s in
            if s.connection === connection { s.connection = nil }
        }
    }

    /// Closes the connection and fails every waiter with `.shutdown`; later calls fail too.
    func shutdown() {
        let (connection, waiters): (TCPOutboundConnection?, [Waiter]) = state.withLock { s in
            s.isShutdown = true
            let taken = (s.connection, Array(s.waiters.values))
            s.connection = nil
            s.waiters = [:]
            return taken
        }
        connection?.close(.shutdown)
        for waiter in waiters {
            waiter.timer?.cancel()
            waiter.continuation.resume(returning: .failure(.shutdown))
        }
    }
}
