import CisternCore
import DequeModule

/// The `Transport` of a simulated process. Requests and responses cross the
/// simulated network as messages; a response travels back to the address the
/// caller had when it sent (a caller whose address changed, or that restarted,
/// never sees it). After a failed call the cached address is dropped, so the next
/// call asks the name service again: this is how an IP change is followed.
public final class SimTransport: Transport, @unchecked Sendable {
    typealias Pending = UnsafeContinuation<Result<Message, TransportError>, Never>

    unowned(unsafe) let process: SimProcess
    public let localNode: NodeID
    let resolver: SimResolver
    private var handlers: [ServiceID: RequestHandler] = [:]
    private var pending: [UInt64: Pending] = [:]
    private var nextRequestID: UInt64 = 0
    private var addressCache: [NodeID: SimNetwork.Endpoint] = [:]
    /// Failed calls per node: after a failure the next address in the resolved list is
    /// tried (multi-network failover).
    private var failures: [NodeID: Int] = [:]
    private var isShutdown = false
    /// Call deadlines, one FIFO per distinct timeout value (deadlines in a FIFO only
    /// grow), each swept by a single timer. This keeps the executor's timer heap as
    /// small as the number of messages in flight, instead of one stale entry per call.
    private var timeoutQueues: [UInt64: TimeoutQueue] = [:]

    struct TimeoutQueue {
        struct Entry {
            let deadline: UInt64
            let id: UInt64
            let node: NodeID
            let tag: UInt64
        }
        var entries = Deque<Entry>()
        var armed = false
    }
    /// Calls answered, for reports.
    public private(set) var callsCompleted: UInt64 = 0

    init(process: SimProcess) {
        self.process = process
        self.localNode = process.node.id
        self.resolver = SimResolver(process: process)
    }

    private var world: SimWorld { process.world }

    public func call(
        _ node: NodeID, service: ServiceID, _ message: Message, timeoutNanoseconds: UInt64
    ) async throws(TransportError) -> Message {
        guard message.byteCount <= TransportLimits.messageBytesMax else {
            throw .messageTooLarge(bytes: message.byteCount, limitBytes: TransportLimits.messageBytesMax)
        }
        if isShutdown { throw .shutdown }
        if process.status == .dead { await strand() }
        let endpoint: SimNetwork.Endpoint
        if let cached = addressCache[node] {
            endpoint = cached
        } else {
            let found = try await resolver.resolve(node)
            endpoint = world.network.endpoint(found[(failures[node] ?? 0) % found.count])
            addressCache[node] = endpoint
        }
        nextRequestID &+= 1
        let id = nextRequestID
        let timeout = min(timeoutNanoseconds, TransportLimits.timeoutNanosecondsMax)
        let tag = (UInt64(service.rawValue) << 16) | UInt64(message.method)
        let replyTo = process.node.endpoint!
        let result = await withUnsafeContinuation { (c: Pending) in
            pending[id] = c
            world.network.transmit(
                from: process, to: endpoint, tag: tag, bytes: message.byteCount,
                deliver: { [unowned(unsafe) self] dest in
                    dest.transport.receive(from: self, replyTo: replyTo, id: id, service: service, message: message)
                },
                refused: { [unowned(unsafe) self] in
                    self.complete(id, .failure(.unreachable(node: node, reason: "connection refused at \(endpoint.address)")))
                })
            armTimeout(id: id, node: node, tag: tag, timeout: timeout)
        }
        if case .failure(let error) = result {
            switch error {
            case .timeout, .unreachable:
                addressCache[node] = nil
                failures[node, default: 0] += 1
            default: break
            }
        }
        return try result.get()
    }

    private func armTimeout(id: UInt64, node: NodeID, tag: UInt64, timeout: UInt64) {
        let deadline = world.executor.nowNanoseconds &+ timeout
        var queue = timeoutQueues.removeValue(forKey: timeout) ?? TimeoutQueue()
        queue.entries.append(.init(deadline: deadline, id: id, node: node, tag: tag))
        if !queue.armed {
            queue.armed = true
            process.schedule(at: deadline) { [unowned self] in self.sweep(timeout) }
        }
        timeoutQueues[timeout] = queue
    }

    /// Fails the calls whose deadline passed, forgets answered ones, and re-arms at
    /// the next pending deadline.
    private func sweep(_ timeout: UInt64) {
        guard var queue = timeoutQueues.removeValue(forKey: timeout) else { return }
        queue.armed = false
        let now = world.executor.nowNanoseconds
        while let first = queue.entries.first {
            if pending[first.id] == nil {
                queue.entries.removeFirst()
            } else if first.deadline <= now {
                queue.entries.removeFirst()
                world.trace.record(.timeout, at: now, UInt64(first.node.rawValue), first.tag)
                complete(first.id, .failure(.timeout(node: first.node, nanoseconds: timeout)))
            } else {
                queue.armed = true
                process.schedule(at: first.deadline) { [unowned self] in self.sweep(timeout) }
                break
            }
        }
        timeoutQueues[timeout] = queue
    }

    public func serve(_ service: ServiceID, handler: @escaping RequestHandler) async {
        handlers[service] = handler
    }

    public func shutdown() async {
        isShutdown = true
        handlers.removeAll()
        for id in pending.keys.sorted() { complete(id, .failure(.shutdown)) }
    }

    /// Never returns: the process died, and its tasks stay suspended forever.
    private func strand() async -> Never {
        await withUnsafeContinuation { (_: UnsafeContinuation<Void, Never>) in }
        fatalError("a stranded task was resumed")
    }

    func complete(_ id: UInt64, _ result: Result<Message, TransportError>) {
        guard let c = pending.removeValue(forKey: id) else { return }
        callsCompleted &+= 1
        c.resume(returning: result)
    }

    /// A dead process's calls never complete: their tasks stay suspended.
    func dropPending() {
        pending.removeAll()
        handlers.removeAll()
    }

    func receive(from caller: SimTransport, replyTo callerAddress: SimNetwork.Endpoint, id: UInt64, service: ServiceID, message: Message) {
        guard let handler = handlers[service] else {
            reply(to: caller, at: callerAddress, id: id, .failure(.noSuchService(node: localNode, service: service)))
            return
        }
        let request = IncomingRequest(from: caller.localNode, service: service, message: message)
        let local = localNode
        process.spawn { [unowned(unsafe) self] in
            let result: Result<Message, TransportError>
            do {
                result = .success(try await handler(request))
            } catch {
                result = .failure(.remote(node: local, message: "\(error)"))
            }
            self.reply(to: caller, at: callerAddress, id: id, result)
        }
    }

    private func reply(to caller: SimTransport, at address: SimNetwork.Endpoint, id: UInt64, _ result: Result<Message, TransportError>) {
        guard process.status != .dead else { return }
        var bytes = 0
        if case .success(let m) = result { bytes = m.byteCount }
        world.network.transmit(
            from: process, to: address, tag: id, bytes: bytes,
            deliver: { dest in
                // The reply belongs to the connection the request came on: a restarted
                // caller (a new process at the same address) does not get it.
                guard dest === caller.process else { return }
                caller.complete(id, result)
            })
    }
}
