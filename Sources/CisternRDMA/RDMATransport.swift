import CisternCore
import CisternNIO
import CisternWire
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// A `Transport` whose bulk bytes move with one-sided RDMA over reliable-connected
/// queue pairs (libibverbs), while headers, connection setup and everything small
/// travel over an inner `TCPTransport`.
///
/// How a call moves:
/// - Connection setup: the first call to a node starts a handshake over TCP (a call to
///   the reserved control service carrying a `QueuePairInfo`: QP number, PSN, LID, GID,
///   MTU, READ depth, and the buffer the peer may access with its rkey). The serving
///   side creates a queue pair and registers a buffer for this caller (a landing zone
///   for request bulk, then a response zone), connects its queue pair and answers with
///   its own `QueuePairInfo`; the caller connects its queue pair. Until the handshake is
///   done (or when it fails, for example because the peer runs plain TCP) calls go
///   plainly over TCP, so RDMA and TCP-only nodes interoperate.
/// - Request bulk of at least `bulkThresholdBytes`: the caller allocates a slot in the
///   peer's landing zone, RDMA WRITEs the bytes there (with their CRC-32C), then sends
///   the header over TCP naming the slot. The serving side copies and checks the bulk
///   before the handler runs.
/// - Response bulk: the serving side copies it into a slot of its response zone and
///   answers with the slot; the caller fetches it with RDMA READ, checks the CRC-32C,
///   and frees the slot with its next request (the slot is also freed when the call's
///   timeout plus a grace period has passed, so a caller that gave up leaks nothing).
/// - Only the caller posts work requests; the serving side's queue pair is passive.
///
/// Promises (beyond `Transport`'s):
/// - Bulk never arrives corrupted: every remote slot is checksummed, and a slot reused
///   while a late request was still in flight fails that request's check, so it never
///   runs (the caller gave up on it already).
/// - An RDMA failure before the request was sent (WRITE error, no landing space, or the
///   peer lost the connection) falls back to sending the message over TCP; a READ
///   failure after the handler ran fails the call with `.unreachable`. A failed queue
///   pair retires its connection; the node is reached over TCP for
///   `retryAfterFailureNanoseconds`, then a new handshake is tried.
/// - Application services must not use `ServiceID(0xFFF0)` or `ServiceID(0xFFF1)`.
/// - `shutdown()` fails calls in flight with `.shutdown`, moves every queue pair to the
///   error state, stops the inner TCP transport and closes the device.
public final class RDMATransport: ListeningTransport {
    /// Sizes, thresholds and timers of an `RDMATransport`.
    public struct Configuration: Sendable, Equatable {
        /// The device to open (nil: the first one libibverbs lists).
        public var deviceName: String?
        /// The device port (1-based).
        public var port: UInt8 = 1
        /// The GID table entry to route with (RoCE needs a valid one; see `show_gids`).
        public var gidIndex: Int = 0
        /// The registered staging buffer of each outbound connection (source of WRITEs,
        /// destination of READs). A transfer that does not fit registers a buffer of its own.
        public var stagingBytes: Int = 16 << 20
        /// The zone of each inbound connection's buffer that callers WRITE request bulk
        /// into. Request bulk that does not fit travels over TCP.
        public var landingBytes: Int = 16 << 20
        /// The zone of each inbound connection's buffer that holds responses for callers
        /// to READ. Response bulk that does not fit travels over TCP.
        public var responseBytes: Int = 16 << 20
        /// Bulk smaller than this travels inline over TCP (RDMA setup costs more than a copy).
        public var bulkThresholdBytes: Int = 16 << 10
        /// The longest a handshake may take.
        public var handshakeTimeoutNanoseconds: UInt64 = 5_000_000_000
        /// When true, the first call to a node waits for the handshake (within its own
        /// timeout); when false it goes over TCP while the handshake runs in the background.
        public var handshakeOnFirstCall = false
        /// After a failed handshake or a failed queue pair, calls to that node go over
        /// TCP this long before a new handshake is tried.
        public var retryAfterFailureNanoseconds: UInt64 = 30_000_000_000
        /// How long a landing slot of a call that ended without a response stays unused.
        public var quarantineNanoseconds: UInt64 = 5_000_000_000
        /// How long past a caller's timeout a response slot stays leased.
        public var leaseGraceNanoseconds: UInt64 = 5_000_000_000
        /// Inbound connections kept per calling node (the oldest beyond it is dropped).
        public var inboundConnectionsPerNodeMax = 2
        /// An inbound connection unused this long, with no response slot leased, is
        /// dropped when another connection is accepted (its caller may have died). A
        /// caller whose connection was dropped resends over TCP and connects again.
        public var inboundIdleNanoseconds: UInt64 = 600_000_000_000

        /// The defaults.
        public init() {}
    }

    /// Counters of what the transport did, for tests and `cistern` reports.
    public struct Statistics: Sendable, Equatable {
        /// Handshakes this side started that connected.
        public var handshakes = 0
        /// Handshakes this side started that failed.
        public var failedHandshakes = 0
        /// Connections other nodes opened to this one.
        public var inboundConnections = 0
        /// RDMA WRITEs of request bulk, and their bytes.
        public var rdmaWrites = 0
        /// Bytes moved by RDMA WRITE.
        public var rdmaWriteBytes = 0
        /// RDMA READs of response bulk.
        public var rdmaReads = 0
        /// Bytes moved by RDMA READ.
        public var rdmaReadBytes = 0
        /// Calls sent plainly over TCP (no connection yet, or a fallback).
        public var tcpCalls = 0
        /// Calls resent over TCP after their RDMA path failed before anything ran.
        public var fallbacks = 0
        /// Connections given up after a failure.
        public var retiredConnections = 0
    }

    /// The node this transport speaks for.
    public let localNode: NodeID
    /// The configuration the transport runs with.
    public let configuration: Configuration
    let tcp: TCPTransport
    let fabric: any RDMAFabric
    let runtime: any Runtime
    private let logger: Logger
    private let state: Mutex<State>

    private enum Outbound {
        case connecting([CheckedContinuation<Void, Never>])
        case connected(OutboundConnection)
        case unavailable(untilNanoseconds: UInt64, reason: String)
    }

    private struct InboundKey: Hashable {
        var node: NodeID
        var id: UInt64
    }

    private struct State {
        var services: [ServiceID: RequestHandler] = [:]
        var outbound: [NodeID: Outbound] = [:]
        var inbound: [InboundKey: InboundConnection] = [:]
        var nextConnectionID: UInt64
        var random: DeterministicRandom
        var statistics = Statistics()
        var isShutdown = false
    }

    /// Opens the RDMA device `configuration` names and prepares the TCP side on
    /// `listen`. Throws the `RDMAError` of opening the device (no device, no such
    /// name, port down, a failing verbs call); nothing is left open then.
    public convenience init(
        localNode: NodeID, listen: NodeAddress, resolver: any CisternCore.Resolver, runtime: any Runtime,
        configuration: Configuration = Configuration(),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) throws(RDMAError) {
        let device = try RDMADevice.open(
            name: configuration.deviceName, port: configuration.port, gidIndex: configuration.gidIndex)
        self.init(
            localNode: localNode, listen: listen, resolver: resolver, runtime: runtime, configuration: configuration,
            group: group, fabric: device)
    }

    /// A transport over `fabric` (an `RDMADevice`, or a `LoopbackFabric` in tests).
    init(
        localNode: NodeID, listen: NodeAddress, resolver: any CisternCore.Resolver, runtime: any Runtime,
        configuration: Configuration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        fabric: any RDMAFabric
    ) {
        self.localNode = localNode
        self.configuration = configuration
        self.runtime = runtime
        self.fabric = fabric
        self.logger = runtime.logger("transport.rdma")
        self.tcp = TCPTransport(localNode: localNode, listen: listen, resolver: resolver, runtime: runtime, group: group)
        var random = runtime.random("transport.rdma")
        let firstID = random.next() >> 16 | 1
        self.state = Mutex(State(nextConnectionID: firstID, random: random))
        tcp.serve(RDMAServices.control) { [weak self] request in
            guard let self else { throw RDMAError.shutdown }
            return try await self.serveControl(request)
        }
        tcp.serve(RDMAServices.data) { [weak self] request in
            guard let self else { throw RDMAError.shutdown }
            return try await self.serveData(request)
        }
    }

    /// The RDMA device's name.
    public var deviceName: String { fabric.name }

    /// What the transport has done so far.
    public var statistics: Statistics { state.withLock { $0.statistics } }

    /// The TCP side's bound address; nil before `start()` and after `shutdown()`.
    public var boundAddress: NodeAddress? { tcp.boundAddress }

    /// Starts the TCP side (see `TCPTransport.start()`) and returns its bound address.
    @discardableResult
    public func start() async throws -> NodeAddress {
        let address = try await tcp.start()
        logger.info("\(localNode) serving RDMA on \(fabric.name), TCP side on \(address)")
        return address
    }

    /// Serves `service` with `handler` (replacing any earlier one), for RDMA and plain TCP
    /// callers alike. The reserved services are refused with a logged error.
    public func serve(_ service: ServiceID, handler: @escaping RequestHandler) {
        guard service != RDMAServices.control, service != RDMAServices.data else {
            logger.error("\(service) is reserved for the RDMA transport's own use; not serving it")
            return
        }
        state.withLock { $0.services[service] = handler }
        tcp.serve(service, handler: handler)
    }

    /// Stops serving `service`; its requests then fail with `.noSuchService`.
    public func stopServing(_ service: ServiceID) {
        guard service != RDMAServices.control, service != RDMAServices.data else { return }
        state.withLock { _ = $0.services.removeValue(forKey: service) }
        tcp.stopServing(service)
    }

    // MARK: Calls

    /// Sends `message` to `service` on `node` and waits for the response (see the type's
    /// notes for which bytes move by RDMA).
    public func call(
        _ node: NodeID, service: ServiceID, _ message: Message, timeoutNanoseconds: UInt64
    ) async throws(TransportError) -> Message {
        guard message.byteCount <= TransportLimits.messageBytesMax else {
            throw .messageTooLarge(bytes: message.byteCount, limitBytes: TransportLimits.messageBytesMax)
        }
        let timeout = min(timeoutNanoseconds, TransportLimits.timeoutNanosecondsMax)
        let deadline = runtime.nowNanoseconds() &+ timeout
        if let connection = try await readyConnection(to: node, deadline: deadline) {
            return try await call(over: connection, service: service, message, deadline: deadline, timeout: timeout)
        }
        return try await plainCall(node, service: service, message, deadline: deadline, timeout: timeout)
    }

    /// Connects to `node` now (the handshake any call would start) and waits for the
    /// result, at most `timeoutNanoseconds`. Throws `.unreachable` naming why RDMA to
    /// `node` is not available (calls to it still work over TCP), or `.shutdown`.
    public func connect(to node: NodeID, timeoutNanoseconds: UInt64) async throws(TransportError) {
        let deadline = runtime.nowNanoseconds() &+ min(timeoutNanoseconds, TransportLimits.timeoutNanosecondsMax)
        for _ in 0..<2 {
            if try await readyConnection(to: node, deadline: deadline, wait: true) != nil { return }
            let reason: String? = state.withLock { s in
                if case .unavailable(_, let why)? = s.outbound[node] { return why }
                return nil
            }
            if let reason { throw .unreachable(node: node, reason: "no RDMA connection: \(reason)") }
        }
        throw .unreachable(node: node, reason: "no RDMA connection: the handshake did not finish")
    }

    /// A call over TCP to the service itself (no envelope), as a TCP-only node makes it.
    private func plainCall(
        _ node: NodeID, service: ServiceID, _ message: Message, deadline: UInt64, timeout: UInt64
    ) async throws(TransportError) -> Message {
        let now = runtime.nowNanoseconds()
        guard now < deadline else { throw .timeout(node: node, nanoseconds: timeout) }
        state.withLock { $0.statistics.tcpCalls += 1 }
        return try await tcp.call(node, service: service, message, timeoutNanoseconds: deadline - now)
    }

    /// A call to `RDMAServices.data` on `connection`'s node: request bulk by RDMA WRITE
    /// (or inline), response bulk by RDMA READ (or inline).
    private func call(
        over connection: OutboundConnection, service: ServiceID, _ message: Message, deadline: UInt64, timeout: UInt64
    ) async throws(TransportError) -> Message {
        let node = connection.node
        var placement = BulkPlacement.inline
        var inlineBulk = message.bulk
        var landing: BufferExtent?
        if message.bulk.count >= max(configuration.bulkThresholdBytes, 1),
            let slot = connection.reserveLanding(message.bulk.count, nowNanoseconds: runtime.nowNanoseconds())
        {
            do throws(RDMAError) {
                let checksum = try await connection.write(message.bulk, to: slot)
                placement = .remote(offset: UInt64(slot.offset), length: UInt64(slot.length), checksum: checksum, token: 0)
                inlineBulk = []
                landing = slot
                state.withLock { s in
                    s.statistics.rdmaWrites += 1
                    s.statistics.rdmaWriteBytes += slot.length
                }
            } catch {
                // Nothing names the slot: free it and send the message over TCP.
                connection.releaseLanding(slot)
                try checkNotShutdown()
                retire(connection, reason: "RDMA WRITE of \(message.bulk.count) bytes failed: \(error)")
                state.withLock { $0.statistics.fallbacks += 1 }
                return try await plainCall(node, service: service, message, deadline: deadline, timeout: timeout)
            }
        }
        let now = runtime.nowNanoseconds()
        guard now < deadline else {
            if let landing { connection.releaseLanding(landing) }
            throw .timeout(node: node, nanoseconds: timeout)
        }
        let envelope = RDMARequestEnvelope(
            connectionID: connection.id, service: service, header: message.header, bulk: placement,
            remainingNanoseconds: deadline - now, releasedTokens: connection.takeReleasedTokens())
        let envelopeBytes = envelope.wireBytes()
        if envelopeBytes.count + inlineBulk.count > TransportLimits.messageBytesMax {
            // The envelope would push an inline message over the limit: send it plainly.
            connection.restoreReleasedTokens(envelope.releasedTokens)
            if let landing { connection.releaseLanding(landing) }
            return try await plainCall(node, service: service, message, deadline: deadline, timeout: timeout)
        }
        let reply: Message
        do throws(TransportError) {
            reply = try await tcp.call(
                node, service: RDMAServices.data, Message(method: message.method, header: envelopeBytes, bulk: inlineBulk),
                timeoutNanoseconds: deadline - now)
        } catch {
            if let landing {
                connection.quarantineLanding(landing, untilNanoseconds: runtime.nowNanoseconds() &+ configuration.quarantineNanoseconds)
            }
            switch error {
            case .noSuchService(_, let missing) where missing == RDMAServices.data:
                // The node runs plain TCP now (it restarted): nothing ran there.
                retire(connection, reason: "\(node) no longer serves RDMA calls")
                state.withLock { $0.statistics.fallbacks += 1 }
                return try await plainCall(node, service: service, message, deadline: deadline, timeout: timeout)
            case .unreachable:
                retire(connection, reason: "\(error)", backOff: false)
            default:
                break
            }
            throw error
        }
        if let landing { connection.releaseLanding(landing) }
        let response: RDMAResponseEnvelope
        do throws(WireError) {
            response = try RDMAResponseEnvelope(wireBytes: reply.header)
        } catch {
            throw .malformed(node: node, detail: "RDMA response envelope: \(error)")
        }
        switch response.status {
        case .ok:
            break
        case .noSuchService:
            throw .noSuchService(node: node, service: service)
        case .unknownConnection, .bulkRejected:
            // Nothing ran there: resend over TCP.
            logger.debug("\(node) did not run a call on RDMA connection \(connection.id) (\(response.detail)); resending over TCP")
            if response.status == .unknownConnection {
                retire(connection, reason: "\(node) does not know the connection: \(response.detail)", backOff: false)
            }
            state.withLock { $0.statistics.fallbacks += 1 }
            return try await plainCall(node, service: service, message, deadline: deadline, timeout: timeout)
        }
        switch response.bulk {
        case .inline:
            return Message(method: reply.method, header: response.header, bulk: reply.bulk)
        case .remote(let offset, let length, let checksum, let token):
            // The token is released whatever happens: after a failed READ the
            // connection is retired and the peer's lease frees the slot.
            defer { connection.noteReleased(token) }
            guard length <= UInt64(TransportLimits.messageBytesMax) else {
                throw .malformed(node: node, detail: "response bulk of \(length) bytes exceeds the message limit")
            }
            // Never READ after the deadline: the peer's lease on the slot runs from it.
            guard runtime.nowNanoseconds() < deadline else { throw .timeout(node: node, nanoseconds: timeout) }
            let bulk: [UInt8]
            do throws(RDMAError) {
                bulk = try await connection.read(offset: offset, length: Int(length))
            } catch {
                try checkNotShutdown()
                if case .memoryRegion(let detail) = error {
                    throw .malformed(node: node, detail: "response bulk outside the advertised buffer: \(detail)")
                }
                retire(connection, reason: "RDMA READ of \(length) bytes failed: \(error)")
                throw .unreachable(node: node, reason: "RDMA READ of the \(length)-byte response failed: \(error)")
            }
            let actual = CRC32C.checksum(bulk)
            guard actual == checksum else {
                throw .malformed(
                    node: node,
                    detail: "response bulk of \(length) bytes has CRC-32C \(String(actual, radix: 16)), expected \(String(checksum, radix: 16))")
            }
            state.withLock { s in
                s.statistics.rdmaReads += 1
                s.statistics.rdmaReadBytes += bulk.count
            }
            return Message(method: reply.method, header: response.header, bulk: bulk)
        }
    }

    /// The id of the connected RDMA connection to `node`, if any (for tests).
    func outboundConnectionID(to node: NodeID) -> UInt64? {
        state.withLock { s in
            if case .connected(let connection)? = s.outbound[node] { return connection.id }
            return nil
        }
    }

    /// How many inbound connections this node keeps (for tests).
    var inboundConnectionCount: Int { state.withLock { $0.inbound.count } }

    private func checkNotShutdown() throws(TransportError) {
        if state.withLock({ $0.isShutdown }) { throw .shutdown }
    }

    // MARK: Outbound connections

    /// The connected RDMA connection to `node`, or nil when calls to it go over TCP
    /// for now. Starts a handshake when none is running or backing off; waits for it
    /// when `wait` or `handshakeOnFirstCall` says so.
    private func readyConnection(
        to node: NodeID, deadline: UInt64, wait: Bool = false
    ) async throws(TransportError) -> OutboundConnection? {
        let now = runtime.nowNanoseconds()
        enum Next { case use(OutboundConnection), plain, waitForHandshake, handshake }
        let next: Result<Next, TransportError> = state.withLock { s in
            guard !s.isShutdown else { return .failure(.shutdown) }
            switch s.outbound[node] {
            case .connected(let connection)?:
                return .success(.use(connection))
            case .connecting?:
                return .success(wait ? .waitForHandshake : .plain)
            case .unavailable(let until, _)? where now < until:
                return .success(.plain)
            case .unavailable?, nil:
                s.outbound[node] = .connecting([])
                return .success(.handshake)
            }
        }
        switch try next.get() {
        case .use(let connection):
            return connection
        case .plain:
            return nil
        case .waitForHandshake:
            await waitForHandshake(node)
        case .handshake:
            let remaining = deadline > now ? deadline - now : 0
            if wait || configuration.handshakeOnFirstCall {
                await handshake(node, timeoutNanoseconds: min(remaining, configuration.handshakeTimeoutNanoseconds))
            } else {
                let timeout = configuration.handshakeTimeoutNanoseconds
                runtime.spawn("rdma.handshake.\(node)") { [self] in
                    await handshake(node, timeoutNanoseconds: timeout)
                }
                return nil
            }
        }
        return state.withLock { s in
            if case .connected(let connection)? = s.outbound[node] { return connection }
            return nil
        }
    }

    private func waitForHandshake(_ node: NodeID) async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let waiting = state.withLock { s -> Bool in
                guard case .connecting(var waiters)? = s.outbound[node] else { return false }
                waiters.append(waiter)
                s.outbound[node] = .connecting(waiters)
                return true
            }
            if !waiting { waiter.resume() }
        }
    }

    /// Runs the handshake with `node` and records the outcome (resuming waiters).
    private func handshake(_ node: NodeID, timeoutNanoseconds: UInt64) async {
        let result = await openConnection(to: node, timeoutNanoseconds: timeoutNanoseconds)
        let now = runtime.nowNanoseconds()
        let (waiters, shutDown): ([CheckedContinuation<Void, Never>], Bool) = state.withLock { s in
            var waiters: [CheckedContinuation<Void, Never>] = []
            if case .connecting(let w)? = s.outbound[node] { waiters = w }
            if s.isShutdown {
                s.outbound[node] = nil
                return (waiters, true)
            }
            switch result {
            case .success(let connection):
                s.outbound[node] = .connected(connection)
                s.statistics.handshakes += 1
            case .failure(let reason):
                s.outbound[node] = .unavailable(
                    untilNanoseconds: now &+ configuration.retryAfterFailureNanoseconds, reason: reason.text)
                s.statistics.failedHandshakes += 1
            }
            return (waiters, false)
        }
        if shutDown, case .success(let connection) = result { connection.retire() }
        switch result {
        case .success(let connection):
            logger.debug("\(localNode) connected to \(node) over RDMA (connection \(connection.id))")
        case .failure(let reason):
            if reason.expected {
                logger.debug("\(node) does not serve RDMA; calls to it go over TCP (\(reason.text))")
            } else {
                logger.warning("RDMA handshake with \(node) failed; calls to it go over TCP for now: \(reason.text)")
            }
        }
        for waiter in waiters { waiter.resume() }
    }

    private struct HandshakeFailure: Error {
        var text: String
        /// True when the peer simply does not run RDMA (no warning is logged).
        var expected = false
    }

    /// Creates our queue pair and staging buffer, exchanges `QueuePairInfo` with `node`
    /// over TCP and connects the queue pair.
    private func openConnection(
        to node: NodeID, timeoutNanoseconds: UInt64
    ) async -> Result<OutboundConnection, HandshakeFailure> {
        let (id, psn): (UInt64, UInt32) = state.withLock { s in
            let id = s.nextConnectionID
            s.nextConnectionID &+= 1
            return (id, UInt32(truncatingIfNeeded: s.random.next()) & QueuePairInfo.twentyFourBitMax)
        }
        let queuePair: any RDMAQueuePairHandle
        let staging: any RDMARegisteredBuffer
        do throws(RDMAError) {
            queuePair = try fabric.makeQueuePair(packetSequenceNumber: psn)
            staging = try fabric.registerBuffer(bytes: max(configuration.stagingBytes, 1))
        } catch {
            return .failure(HandshakeFailure(text: error.description))
        }
        let port = fabric.portInfo
        let mine = QueuePairInfo(
            node: localNode, connectionID: id, queuePairNumber: queuePair.number, packetSequenceNumber: psn, lid: port.lid,
            gid: port.gid, pathMTU: port.pathMTU, readDepth: port.readDepth,
            buffer: RemoteBuffer(address: staging.region.address, length: UInt64(staging.count), rkey: staging.region.rkey),
            landingBytes: 0)
        let reply: Message
        do throws(TransportError) {
            reply = try await tcp.call(
                node, service: RDMAServices.control, Message(method: RDMAControlMethod.connect.rawValue, header: mine.wireBytes()),
                timeoutNanoseconds: timeoutNanoseconds)
        } catch {
            if case .noSuchService = error {
                return .failure(HandshakeFailure(text: "\(node) serves no RDMA control service", expected: true))
            }
            return .failure(HandshakeFailure(text: "connect request: \(error)"))
        }
        let theirs: QueuePairInfo
        do throws(WireError) {
            theirs = try QueuePairInfo(wireBytes: reply.header)
        } catch {
            return .failure(HandshakeFailure(text: "\(node) answered with a malformed QueuePairInfo: \(error)"))
        }
        guard theirs.node == node, theirs.connectionID == id else {
            return .failure(
                HandshakeFailure(text: "\(node) answered for \(theirs.node) connection \(theirs.connectionID), expected connection \(id)"))
        }
        do throws(RDMAError) {
            try queuePair.connect(to: theirs)
        } catch {
            return .failure(HandshakeFailure(text: "connecting the queue pair to \(node): \(error)"))
        }
        do throws(MemoryRegionError) {
            return .success(
                try OutboundConnection(
                    id: id, node: node, queuePair: queuePair, staging: staging, fabric: fabric, remote: theirs.buffer,
                    landingBytes: Int(clamping: theirs.landingBytes)))
        } catch {
            return .failure(HandshakeFailure(text: "\(node) advertised an unusable buffer: \(error)"))
        }
    }

    /// Gives up `connection`: later calls to its node go over TCP (for
    /// `retryAfterFailureNanoseconds` when `backOff`, else until a new handshake), and
    /// the peer is told to drop its side.
    private func retire(_ connection: OutboundConnection, reason: String, backOff: Bool = true) {
        guard !connection.isRetired else { return }
        connection.retire()
        let now = runtime.nowNanoseconds()
        state.withLock { s in
            s.statistics.retiredConnections += 1
            if case .connected(let current)? = s.outbound[connection.node], current === connection {
                s.outbound[connection.node] =
                    backOff ? .unavailable(untilNanoseconds: now &+ configuration.retryAfterFailureNanoseconds, reason: reason) : nil
            }
        }
        logger.warning("RDMA connection \(connection.id) to \(connection.node) retired: \(reason)")
        let node = connection.node
        let header = RDMAConnectionRef(connectionID: connection.id).wireBytes()
        let tcp = self.tcp
        runtime.spawn("rdma.disconnect.\(node)") {
            _ = try? await tcp.call(
                node, service: RDMAServices.control, Message(method: RDMAControlMethod.disconnect.rawValue, header: header),
                timeoutNanoseconds: 1_000_000_000)
        }
    }

    // MARK: Serving

    /// Serves `RDMAServices.control`: connect and disconnect.
    private func serveControl(_ request: IncomingRequest) async throws -> Message {
        switch RDMAControlMethod(rawValue: request.message.method) {
        case .connect?:
            return try acceptConnection(request)
        case .disconnect?:
            let ref = try RDMAConnectionRef(wireBytes: request.message.header)
            let dropped = state.withLock { $0.inbound.removeValue(forKey: InboundKey(node: request.from, id: ref.connectionID)) }
            dropped?.queuePair.close()
            return Message(method: RDMAControlMethod.disconnect.rawValue, header: [])
        case nil:
            throw RDMAProtocolError(text: "unknown RDMA control method \(request.message.method)")
        }
    }

    /// Creates our side of a connection a caller asked for and answers with its info.
    private func acceptConnection(_ request: IncomingRequest) throws -> Message {
        let theirs = try QueuePairInfo(wireBytes: request.message.header)
        guard theirs.node == request.from else {
            throw RDMAProtocolError(text: "connect request from \(request.from) names \(theirs.node)")
        }
        let psn: UInt32 = state.withLock { UInt32(truncatingIfNeeded: $0.random.next()) & QueuePairInfo.twentyFourBitMax }
        let queuePair = try fabric.makeQueuePair(packetSequenceNumber: psn)
        let landing = max(configuration.landingBytes, 0)
        let buffer = try fabric.registerBuffer(bytes: max(landing + max(configuration.responseBytes, 0), 1))
        try queuePair.connect(to: theirs)
        let now = runtime.nowNanoseconds()
        let connection = InboundConnection(
            id: theirs.connectionID, node: request.from, queuePair: queuePair, buffer: buffer, landingBytes: landing,
            nowNanoseconds: now)
        let dropped: [InboundConnection] = state.withLock { s in
            var dropped: [InboundConnection] = []
            let key = InboundKey(node: request.from, id: theirs.connectionID)
            if let old = s.inbound.updateValue(connection, forKey: key) { dropped.append(old) }
            let mine = s.inbound.filter { $0.key.node == request.from && $0.key != key }
                .sorted { $0.value.lastUsedNanoseconds < $1.value.lastUsedNanoseconds }
            let excess = mine.count + 1 - max(configuration.inboundConnectionsPerNodeMax, 1)
            if excess > 0 {
                for (oldKey, old) in mine.prefix(excess) {
                    s.inbound[oldKey] = nil
                    dropped.append(old)
                }
            }
            let idle = s.inbound.filter { entry in
                entry.key != key
                    && entry.value.isIdle(nowNanoseconds: now, idleNanoseconds: configuration.inboundIdleNanoseconds)
            }
            for (idleKey, old) in idle {
                s.inbound[idleKey] = nil
                dropped.append(old)
            }
            s.statistics.inboundConnections += 1
            return dropped
        }
        for old in dropped { old.queuePair.close() }
        let port = fabric.portInfo
        let mine = QueuePairInfo(
            node: localNode, connectionID: theirs.connectionID, queuePairNumber: queuePair.number, packetSequenceNumber: psn,
            lid: port.lid, gid: port.gid, pathMTU: port.pathMTU, readDepth: port.readDepth,
            buffer: RemoteBuffer(address: buffer.region.address, length: UInt64(buffer.count), rkey: buffer.region.rkey),
            landingBytes: UInt64(connection.landingBytes))
        logger.debug("\(request.from) opened RDMA connection \(theirs.connectionID) to \(localNode)")
        return Message(method: RDMAControlMethod.connect.rawValue, header: mine.wireBytes())
    }

    /// Serves `RDMAServices.data`: unwraps the envelope, takes the bulk from the landing
    /// zone, runs the real service's handler and places large response bulk in the
    /// response zone.
    private func serveData(_ request: IncomingRequest) async throws -> Message {
        let envelope = try RDMARequestEnvelope(wireBytes: request.message.header)
        let now = runtime.nowNanoseconds()
        let (connection, handler): (InboundConnection?, RequestHandler?) = state.withLock { s in
            (s.inbound[InboundKey(node: request.from, id: envelope.connectionID)], s.services[envelope.service])
        }
        guard let connection else {
            return reply(.unknownConnection, method: request.message.method, detail: "no RDMA connection \(envelope.connectionID) from \(request.from)")
        }
        connection.touch(nowNanoseconds: now)
        connection.release(envelope.releasedTokens)
        let bulk: [UInt8]
        switch envelope.bulk {
        case .inline:
            bulk = request.message.bulk
        case .remote(let offset, let length, let checksum, _):
            switch connection.takeRequestBulk(offset: offset, length: length, checksum: checksum) {
            case .success(let bytes): bulk = bytes
            case .failure(let why): return reply(.bulkRejected, method: request.message.method, detail: why.text)
            }
        }
        guard let handler else {
            return reply(.noSuchService, method: request.message.method, detail: "")
        }
        let response = try await handler(
            IncomingRequest(
                from: request.from, service: envelope.service,
                message: Message(method: request.message.method, header: envelope.header, bulk: bulk)))
        if response.bulk.count >= max(configuration.bulkThresholdBytes, 1) {
            let later = runtime.nowNanoseconds()
            let until = later &+ envelope.remainingNanoseconds &+ configuration.leaseGraceNanoseconds
            if let placement = connection.placeResponse(response.bulk, untilNanoseconds: until, nowNanoseconds: later) {
                return Message(
                    method: response.method, header: RDMAResponseEnvelope(status: .ok, header: response.header, bulk: placement).wireBytes())
            }
        }
        return Message(
            method: response.method, header: RDMAResponseEnvelope(status: .ok, header: response.header).wireBytes(),
            bulk: response.bulk)
    }

    private func reply(_ status: RDMACallStatus, method: UInt16, detail: String) -> Message {
        Message(method: method, header: RDMAResponseEnvelope(status: status, detail: detail).wireBytes())
    }

    // MARK: Shutdown

    /// Stops serving, tells connected peers to drop their side (briefly, best effort),
    /// fails calls in flight with `.shutdown` and closes the device.
    public func shutdown() async {
        let (outbound, inbound, waiters): ([OutboundConnection], [InboundConnection], [CheckedContinuation<Void, Never>]) =
            state.withLock { s in
                s.isShutdown = true
                var connections: [OutboundConnection] = []
                var waiters: [CheckedContinuation<Void, Never>] = []
                for entry in s.outbound.values {
                    switch entry {
                    case .connected(let c): connections.append(c)
                    case .connecting(let w): waiters.append(contentsOf: w)
                    case .unavailable: break
                    }
                }
                let inbound = Array(s.inbound.values)
                s.outbound = [:]
                s.inbound = [:]
                s.services = [:]
                return (connections, inbound, waiters)
            }
        for waiter in waiters { waiter.resume() }
        // Tell peers to drop their side (best effort, briefly), then stop everything.
        let tcp = self.tcp
        await withTaskGroup(of: Void.self) { group in
            for connection in outbound {
                let header = RDMAConnectionRef(connectionID: connection.id).wireBytes()
                let node = connection.node
                group.addTask {
                    _ = try? await tcp.call(
                        node, service: RDMAServices.control,
                        Message(method: RDMAControlMethod.disconnect.rawValue, header: header), timeoutNanoseconds: 200_000_000)
                }
            }
        }
        for connection in outbound { connection.retire() }
        for connection in inbound { connection.queuePair.close() }
        await tcp.shutdown()
        await fabric.close()
    }
}

/// A control message that breaks the RDMA transport's protocol.
struct RDMAProtocolError: Error, CustomStringConvertible {
    var text: String
    var description: String { text }
}
