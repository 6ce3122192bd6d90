import CisternCore

/// The `Transport` of a simulated process. Requests and responses cross the
/// simulated network as messages; a response travels back to the address the
/// caller had when it sent (a caller whose address changed, or that restarted,
/// never sees it). After a failed call the cached address is dropped, so the next
/// call asks the name service again: this is how an IP change is followed.
public final class SimTransport: Transport, @unchecked Sendable {
    typealias Pending = UnsafeContinuation<Result<Message, TransportError>, Never>

    unowned let process: SimProcess
    public let localNode: NodeID
    let resolver: SimResolver
    private var handlers: [ServiceID: RequestHandler] = [:]
    private var pending: [UInt64: Pending] = [:]
    private var nextRequestID: UInt64 = 0
    private var addressCache: [NodeID: NodeAddress] = [:]
    private var isShutdown = false
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
        let address: NodeAddress
        if let cached = addressCache[node] {
            address = cached
        } else {
            let found = try await resolver.resolve(node)
            address = found[0]
            addressCache[node] = address
        }
        nextRequestID &+= 1
        let id = nextRequestID
        let timeout = min(timeoutNanoseconds, TransportLimits.timeoutNanosecondsMax)
        let tag = (UInt64(service.rawValue) << 16) | UInt64(message.method)
        let replyAddress = process.node.address
        let result = await withUnsafeContinuation { (c: Pending) in
            pending[id] = c
            world.network.transmit(
                from: process, to: address, tag: tag, bytes: message.byteCount,
                deliver: { [unowned self] dest in
                    dest.transport.receive(from: self, replyTo: replyAddress, id: id, service: service, message: message)
                },
                refused: { [unowned self] in
                    self.complete(id, .failure(.unreachable(node: node, reason: "connection refused at \(address)")))
                })
            process.schedule(after: timeout) { [unowned self] in
                if self.pending[id] != nil {
                    world.trace.record(.timeout, at: world.executor.nowNanoseconds, UInt64(node.rawValue), tag)
                    self.complete(id, .failure(.timeout(node: node, nanoseconds: timeout)))
                }
            }
        }
        if case .failure(let error) = result {
            switch error {
            case .timeout, .unreachable: addressCache[node] = nil
            default: break
            }
        }
        return try result.get()
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

    func receive(from caller: SimTransport, replyTo callerAddress: NodeAddress, id: UInt64, service: ServiceID, message: Message) {
        guard let handler = handlers[service] else {
            reply(to: caller, at: callerAddress, id: id, .failure(.noSuchService(node: localNode, service: service)))
            return
        }
        let request = IncomingRequest(from: caller.localNode, service: service, message: message)
        let local = localNode
        process.spawn { [unowned self] in
            let result: Result<Message, TransportError>
            do {
                result = .success(try await handler(request))
            } catch {
                result = .failure(.remote(node: local, message: "\(error)"))
            }
            self.reply(to: caller, at: callerAddress, id: id, result)
        }
    }

    private func reply(to caller: SimTransport, at address: NodeAddress, id: UInt64, _ result: Result<Message, TransportError>) {
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
