import CisternCore

/// The behavior every `Transport` must show, run against an implementation through
/// its `TransportHarness`. The suite also runs inside the deterministic simulator, so
/// it takes time, sleeps and spawns only through `harness.runtime`, never iterates a
/// dictionary or set, draws its data from `DeterministicRandom`, and keeps payloads
/// at 8 MiB or less (apart from the one deliberately oversized message).
///
/// Each case starts its own nodes (distinct ids) and stops them when it passes.
public enum TransportConformance {
    static let echo = ServiceID(1)
    static let failing = ServiceID(2)
    static let slow = ServiceID(3)
    static let whoAmI = ServiceID(4)
    static let unknown = ServiceID(999)
    /// The timeout of calls that are expected to succeed.
    static let generousNanoseconds: UInt64 = 30_000_000_000

    /// Runs every case, then `harness.finish()`.
    public static func run(_ harness: some TransportHarness) async throws {
        do {
            try await echoRoundTrip(harness)
            try await bulkRoundTrip(harness)
            try await concurrentCalls(harness)
            try await handlerErrorIsRemote(harness)
            try await unknownServiceIsNoSuchService(harness)
            try await slowHandlerTimesOut(harness)
            try await oversizedMessageIsRefused(harness)
            try await stoppedNodeIsUnreachable(harness)
            try await movedNodeIsFollowed(harness)
        } catch {
            await harness.finish()
            throw error
        }
        await harness.finish()
    }

    // MARK: Cases

    /// A request's method, header and bulk come back unchanged from an echo handler,
    /// and the handler sees the caller's node id and the service.
    public static func echoRoundTrip(_ harness: some TransportHarness) async throws {
        let (clientID, serverID) = (NodeID(101), NodeID(102))
        let client = try await harness.start(clientID)
        let server = try await harness.start(serverID)
        await server.serve(echo, handler: echoHandler)
        await server.serve(whoAmI) { request in
            Message(method: request.service.rawValue, header: KeyCoding.bigEndian(UInt64(request.from.rawValue)))
        }

        let request = Message(method: 4242, header: [1, 2, 3, 0, 255, 7], bulk: [9, 8, 7])
        let response = try await client.call(serverID, service: echo, request, timeoutNanoseconds: generousNanoseconds)
        try check(response.method == 4242, "echo: method \(response.method), expected 4242")
        try check(response.header == request.header, "echo: header \(response.header), expected \(request.header)")
        try check(response.bulk == request.bulk, "echo: bulk \(response.bulk), expected \(request.bulk)")

        let empty = try await client.call(serverID, service: echo, Message(method: 0, header: []), timeoutNanoseconds: generousNanoseconds)
        try check(empty == Message(method: 0, header: []), "echo of an empty message returned \(empty)")

        let who = try await client.call(serverID, service: whoAmI, Message(method: 1, header: []), timeoutNanoseconds: generousNanoseconds)
        try check(
            who.header == KeyCoding.bigEndian(UInt64(clientID.rawValue)),
            "the handler saw the caller as \(who.header), expected \(clientID)")
        try check(who.method == whoAmI.rawValue, "the handler saw service \(who.method), expected \(whoAmI)")

        try await harness.stop(clientID)
        try await harness.stop(serverID)
    }

    /// An 8 MiB bulk payload arrives byte for byte, both ways.
    public static func bulkRoundTrip(_ harness: some TransportHarness) async throws {
        let (clientID, serverID) = (NodeID(201), NodeID(202))
        let client = try await harness.start(clientID)
        let server = try await harness.start(serverID)
        await server.serve(echo, handler: echoHandler)

        var random = harness.runtime.random("transport.conformance.bulk")
        let bulk = randomBytes(8 << 20, &random)
        let header = randomBytes(1000, &random)
        let response = try await client.call(
            serverID, service: echo, Message(method: 7, header: header, bulk: bulk), timeoutNanoseconds: generousNanoseconds)
        try check(response.header == header, "bulk: header of \(response.header.count) bytes came back changed")
        try check(response.bulk.count == bulk.count, "bulk: \(response.bulk.count) bytes came back, sent \(bulk.count)")
        try check(response.bulk == bulk, "bulk: the payload came back with different bytes")

        try await harness.stop(clientID)
        try await harness.stop(serverID)
    }

    /// 200 calls in flight at once, small and large, each get their own response.
    public static func concurrentCalls(_ harness: some TransportHarness) async throws {
        let (clientID, serverID) = (NodeID(301), NodeID(302))
        let client = try await harness.start(clientID)
        let server = try await harness.start(serverID)
        await server.serve(echo, handler: echoHandler)

        let count = 200
        let results = Collector(expected: count, runtime: harness.runtime)
        for i in 0..<count {
            let request = numbered(i)
            harness.runtime.spawn("transport.conformance.concurrent.\(i)") {
                let result: Result<Message, TransportError>
                do throws(TransportError) {
                    result = .success(
                        try await client.call(serverID, service: echo, request, timeoutNanoseconds: generousNanoseconds))
                } catch {
                    result = .failure(error)
                }
                await results.record(i, result)
            }
        }
        let all = await results.waitForAll()
        for i in 0..<count {
            switch all[i] {
            case .success(let response)?:
                try check(response == numbered(i), "concurrent call \(i) got a response that is not its own")
            case .failure(let error)?:
                throw ConformanceFailure(message: "concurrent call \(i) failed: \(error)", file: #fileID, line: #line)
            case nil:
                throw ConformanceFailure(message: "concurrent call \(i) never finished", file: #fileID, line: #line)
            }
        }

        try await harness.stop(clientID)
        try await harness.stop(serverID)
    }

    /// An error thrown by a handler reaches the caller as `.remote` with its description.
    public static func handlerErrorIsRemote(_ harness: some TransportHarness) async throws {
        let (clientID, serverID) = (NodeID(401), NodeID(402))
        let client = try await harness.start(clientID)
        let server = try await harness.start(serverID)
        await server.serve(failing) { _ in throw HandlerFailure() }

        try await checkThrows("a failing handler") {
            try await client.call(serverID, service: failing, Message(method: 1, header: [1]), timeoutNanoseconds: generousNanoseconds)
        } matches: { error in
            guard case .remote(let node, let message)? = error as? TransportError else { return false }
            return node == serverID && message.contains(HandlerFailure.text)
        }

        try await harness.stop(clientID)
        try await harness.stop(serverID)
    }

    /// A call to a service the node does not serve fails with `.noSuchService`.
    public static func unknownServiceIsNoSuchService(_ harness: some TransportHarness) async throws {
        let (clientID, serverID) = (NodeID(501), NodeID(502))
        let client = try await harness.start(clientID)
        let server = try await harness.start(serverID)
        await server.serve(echo, handler: echoHandler)

        try await checkThrows("a call to an unknown service") {
            try await client.call(serverID, service: unknown, Message(method: 1, header: [1]), timeoutNanoseconds: generousNanoseconds)
        } matches: { error in
            error as? TransportError == .noSuchService(node: serverID, service: unknown)
        }
        // The connection is still good.
        let response = try await client.call(serverID, service: echo, numbered(1), timeoutNanoseconds: generousNanoseconds)
        try check(response == numbered(1), "echo after .noSuchService returned \(response)")

        try await harness.stop(clientID)
        try await harness.stop(serverID)
    }

    /// A handler slower than the call's timeout fails the call with `.timeout`; the
    /// transport keeps working, and the late response is not mistaken for another's.
    public static func slowHandlerTimesOut(_ harness: some TransportHarness) async throws {
        let (clientID, serverID) = (NodeID(601), NodeID(602))
        let client = try await harness.start(clientID)
        let server = try await harness.start(serverID)
        let runtime = harness.runtime
        await server.serve(echo, handler: echoHandler)
        await server.serve(slow) { request in
            try await runtime.sleep(nanoseconds: 500_000_000)
            return request.message
        }

        let timeout: UInt64 = 100_000_000
        let started = runtime.nowNanoseconds()
        try await checkThrows("a call to a handler slower than the timeout") {
            try await client.call(serverID, service: slow, numbered(1), timeoutNanoseconds: timeout)
        } matches: { error in
            guard case .timeout(let node, _)? = error as? TransportError else { return false }
            return node == serverID
        }
        let waited = runtime.nowNanoseconds() - started
        try check(waited >= timeout, "the call timed out after \(waited) ns, before its \(timeout) ns timeout")

        let soon = try await client.call(serverID, service: echo, numbered(2), timeoutNanoseconds: generousNanoseconds)
        try check(soon == numbered(2), "echo right after a timeout returned \(soon)")

        // Let the slow handler's late response arrive; it must be dropped.
        try await runtime.sleep(nanoseconds: 700_000_000)
        let later = try await client.call(serverID, service: echo, numbered(3), timeoutNanoseconds: generousNanoseconds)
        try check(later == numbered(3), "echo after the late response returned \(later)")

        try await harness.stop(clientID)
        try await harness.stop(serverID)
    }

    /// A message over `TransportLimits.messageBytesMax` is refused on the sending side.
    public static func oversizedMessageIsRefused(_ harness: some TransportHarness) async throws {
        let (clientID, serverID) = (NodeID(701), NodeID(702))
        let client = try await harness.start(clientID)
        let server = try await harness.start(serverID)
        await server.serve(echo, handler: echoHandler)

        let limit = TransportLimits.messageBytesMax
        let header: [UInt8] = [1, 2, 3, 4]
        let message = Message(method: 1, header: header, bulk: [UInt8](repeating: 0xA5, count: limit + 1 - header.count))
        try await checkThrows("a message one byte over the limit") {
            try await client.call(serverID, service: echo, message, timeoutNanoseconds: generousNanoseconds)
        } matches: { error in
            error as? TransportError == .messageTooLarge(bytes: limit + 1, limitBytes: limit)
        }
        let response = try await client.call(serverID, service: echo, numbered(4), timeoutNanoseconds: generousNanoseconds)
        try check(response == numbered(4), "echo after .messageTooLarge returned \(response)")

        try await harness.stop(clientID)
        try await harness.stop(serverID)
    }

    /// Calls to a stopped node fail with `.unreachable` or `.timeout`.
    public static func stoppedNodeIsUnreachable(_ harness: some TransportHarness) async throws {
        let (clientID, serverID) = (NodeID(801), NodeID(802))
        let client = try await harness.start(clientID)
        let server = try await harness.start(serverID)
        await server.serve(echo, handler: echoHandler)
        let response = try await client.call(serverID, service: echo, numbered(5), timeoutNanoseconds: generousNanoseconds)
        try check(response == numbered(5), "echo before the stop returned \(response)")

        try await harness.stop(serverID)
        for attempt in 0..<3 {
            try await checkThrows("call \(attempt) to a stopped node") {
                try await client.call(serverID, service: echo, numbered(6), timeoutNanoseconds: 2_000_000_000)
            } matches: { error in
                switch error as? TransportError {
                case .unreachable(let node, _)?, .timeout(let node, _)?: return node == serverID
                default: return false
                }
            }
        }

        try await harness.stop(clientID)
    }

    /// After a node moves to a new address (same id, resolver updated), calls to it
    /// succeed again within a few retries and reach the moved node.
    public static func movedNodeIsFollowed(_ harness: some TransportHarness) async throws {
        let (clientID, serverID) = (NodeID(901), NodeID(902))
        let client = try await harness.start(clientID)
        let server = try await harness.start(serverID)
        await server.serve(whoAmI) { _ in Message(method: 1, header: Array("before".utf8)) }
        let before = try await client.call(serverID, service: whoAmI, numbered(7), timeoutNanoseconds: generousNanoseconds)
        try check(before.header == Array("before".utf8), "the call before the move returned \(before)")

        let moved = try await harness.move(serverID)
        await moved.serve(whoAmI) { _ in Message(method: 2, header: Array("after".utf8)) }
        var outcome: Result<Message, TransportError> = .failure(.shutdown)
        var attempts = 0
        while attempts < 20 {
            attempts += 1
            do throws(TransportError) {
                outcome = .success(
                    try await client.call(serverID, service: whoAmI, numbered(8), timeoutNanoseconds: 2_000_000_000))
                break
            } catch {
                outcome = .failure(error)
                try await harness.runtime.sleep(nanoseconds: 100_000_000)
            }
        }
        switch outcome {
        case .success(let after):
            try check(after.header == Array("after".utf8), "the call after the move reached the old node: \(after)")
        case .failure(let error):
            throw ConformanceFailure(
                message: "calls after the move still fail after \(attempts) attempts: \(error)", file: #fileID, line: #line)
        }

        try await harness.stop(clientID)
        try await harness.stop(serverID)
    }

    // MARK: Helpers

    static let echoHandler: RequestHandler = { request in request.message }

    struct HandlerFailure: Error, CustomStringConvertible {
        static let text = "conformance handler failure: disk on fire"
        var description: String { Self.text }
    }

    /// A small message that encodes `i` in its method, header and bulk.
    /// Call `i`'s own message: every fourth carries a bulk of 16-80 KiB (sent apart
    /// from its frame's head by TCP, so frames written by several threads at once
    /// must still go out whole), the others under 1000 bytes.
    static func numbered(_ i: Int) -> Message {
        let count = i % 4 == 3 ? (16 << 10) + (i * 331) % (64 << 10) : (i * 13) % 1000
        let bulk = (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i) }
        return Message(method: UInt16(truncatingIfNeeded: i), header: KeyCoding.bigEndian(UInt64(i)), bulk: bulk)
    }

    static func randomBytes(_ count: Int, _ random: inout DeterministicRandom) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count)
        while bytes.count < count {
            let word = random.next()
            for shift in stride(from: 0, to: 64, by: 8) where bytes.count < count {
                bytes.append(UInt8(truncatingIfNeeded: word >> UInt64(shift)))
            }
        }
        return bytes
    }

    /// Gathers the results of spawned calls, on the runtime's executor.
    actor Collector {
        nonisolated let unownedExecutor: UnownedSerialExecutor
        private let expected: Int
        private var results: [Int: Result<Message, TransportError>] = [:]
        private var waiter: CheckedContinuation<Void, Never>?

        init(expected: Int, runtime: any Runtime) {
            self.expected = expected
            self.unownedExecutor = runtime.makeActorExecutor()
        }

        func record(_ index: Int, _ result: Result<Message, TransportError>) {
            results[index] = result
            if results.count >= expected, let waiter {
                self.waiter = nil
                waiter.resume()
            }
        }

        func waitForAll() async -> [Int: Result<Message, TransportError>] {
            if results.count < expected {
                await withCheckedContinuation { waiter = $0 }
            }
            return results
        }
    }
}
