import CisternConformance
import CisternCore
import CisternNIO
import NIOCore
import NIOPosix
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@Suite("TCP transport")
struct TCPTransportConformanceTests {
    @Test("passes the Transport conformance suite")
    func conformance() async throws {
        try await TransportConformance.run(TCPHarness())
    }

    @Test("garbage on a connection closes it and the node keeps serving")
    func garbageClosesConnection() async throws {
        let harness = TCPHarness()
        let client = try await harness.start(NodeID(1))
        let server = try await harness.start(NodeID(2))
        await server.serve(ServiceID(1)) { $0.message }
        let port = try #require(harness.transport(NodeID(2))?.boundAddress?.port)

        var random = DeterministicRandom(seed: 42)
        var valid = TCPFrame(
            kind: .request, requestID: 1, source: NodeID(1), destination: NodeID(2), service: ServiceID(1),
            method: 1, header: [1, 2, 3], bulk: [4, 5]
        ).encoded()
        valid[valid.count - 1] ^= 0xFF  // bad checksum
        var oversized = TCPFrame(
            kind: .request, requestID: 1, source: NodeID(1), destination: NodeID(2), service: ServiceID(1), method: 1,
            header: []
        ).encoded()
        oversized.replaceSubrange(30..<34, with: [0xFF, 0xFF, 0xFF, 0xFF])  // bulk length 4 GiB
        var payloads: [[UInt8]] = [valid, oversized, Array("GET / HTTP/1.1\r\n\r\n".utf8)]
        for _ in 0..<20 {
            payloads.append((0..<Int(random.next() % 300 + 4)).map { _ in UInt8(truncatingIfNeeded: random.next()) })
        }
        for payload in payloads {
            #expect(try await sendAndWaitForClose(port: port, payload), "the server kept a connection open after garbage")
        }
        let reply = try await client.call(NodeID(2), service: ServiceID(1), Message(method: 9, header: [9]), timeoutNanoseconds: 10_000_000_000)
        #expect(reply == Message(method: 9, header: [9]))
        await harness.finish()
    }

    @Test("a response from a different node at the address fails the call as unreachable")
    func wrongNodeAtAddress() async throws {
        let harness = TCPHarness()
        let client = try await harness.start(NodeID(1))
        let other = try await harness.start(NodeID(3))
        await other.serve(ServiceID(1)) { $0.message }
        // Point node#2 at node#3's address (as if node#3 took over node#2's old IP).
        harness.resolver.set(NodeID(2), harness.resolver.addresses(of: NodeID(3)))
        // The deadline covers connecting too; on a loaded 2-core CI machine that has
        // taken over 5 s. A correct transport answers .unreachable at once, so the
        // generous timeout only matters when the machine is starved.
        let timeout: UInt64 = 60_000_000_000
        await #expect(throws: TransportError.self) {
            try await client.call(NodeID(2), service: ServiceID(1), Message(method: 1, header: []), timeoutNanoseconds: timeout)
        }
        do {
            _ = try await client.call(NodeID(2), service: ServiceID(1), Message(method: 1, header: []), timeoutNanoseconds: timeout)
            Issue.record("the call reached the wrong node")
        } catch {
            guard case .unreachable(let node, _) = error else {
                Issue.record("expected .unreachable, got \(error)")
                return
            }
            #expect(node == NodeID(2))
        }
        await harness.finish()
    }

    @Test("every resolved address is tried in order")
    func triesEveryAddress() async throws {
        let harness = TCPHarness()
        let client = try await harness.start(NodeID(1))
        let server = try await harness.start(NodeID(2))
        await server.serve(ServiceID(1)) { $0.message }
        let live = harness.resolver.addresses(of: NodeID(2))
        // Port 1 on the loopback refuses connections.
        harness.resolver.set(NodeID(2), [NodeAddress(host: "127.0.0.1", port: 1)] + live)
        let reply = try await client.call(NodeID(2), service: ServiceID(1), Message(method: 3, header: [3]), timeoutNanoseconds: 10_000_000_000)
        #expect(reply == Message(method: 3, header: [3]))
        harness.resolver.set(NodeID(2), [NodeAddress(host: "127.0.0.1", port: 1)])
        try await harness.stop(NodeID(2))
        // The first call may still find the closing connection; once it is gone the
        // transport re-resolves and reports the refused address.
        var reasons: [String] = []
        for _ in 0..<5 {
            do {
                _ = try await client.call(NodeID(2), service: ServiceID(1), Message(method: 3, header: [3]), timeoutNanoseconds: 10_000_000_000)
                Issue.record("a call to a refused address succeeded")
            } catch {
                guard case .unreachable(let node, let reason) = error else {
                    Issue.record("expected .unreachable, got \(error)")
                    break
                }
                #expect(node == NodeID(2))
                reasons.append(reason)
                if reason.contains("127.0.0.1:1") { break }
            }
        }
        #expect(reasons.last?.contains("127.0.0.1:1") == true, "the reason names the refused address: \(reasons)")
        await harness.finish()
    }

    @Test("a connection whose peer went silent is abandoned after an unanswered probe, so the next call follows the node's new address")
    func silentConnectionIsAbandoned() async throws {
        let harness = TCPHarness()
        let client = try await harness.start(NodeID(1))
        let node = try await harness.start(NodeID(2))
        await node.serve(ServiceID(1)) { _ in Message(method: 1, header: [2]) }
        let live = harness.resolver.addresses(of: NodeID(2))
        // A black hole: accepts the connection and reads, never answers (like an
        // address whose host vanished behind a switch that still takes the bytes).
        let blackHole = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { _ in MultiThreadedEventLoopGroup.singleton.any().makeSucceededVoidFuture() }
            .bind(host: "127.0.0.1", port: 0).get()
        let hole = NodeAddress(host: "127.0.0.1", port: UInt16(try #require(blackHole.localAddress?.port)))
        harness.resolver.set(NodeID(2), [hole])
        // Long enough to connect even on a loaded machine: the call then times out on
        // the established, silent connection.
        await #expect(throws: TransportError.self) {
            try await client.call(NodeID(2), service: ServiceID(1), Message(method: 1, header: []), timeoutNanoseconds: 2_000_000_000)
        }
        // The node is found at its real address from now on; the silent connection
        // goes once a probe (1 s) is unanswered, and a later call connects again.
        // Calls before that still reach the black hole and time out (each one's
        // timeout probes again); without abandonment every call would.
        harness.resolver.set(NodeID(2), live)
        var reached = false
        var attempts = 0
        while !reached && attempts < 10 {
            attempts += 1
            if let reply = try? await client.call(NodeID(2), service: ServiceID(1), Message(method: 1, header: []), timeoutNanoseconds: 2_000_000_000) {
                reached = reply.header == [2]
            }
        }
        #expect(reached, "a call after the unanswered probe connected again and reached the node's address (\(attempts) attempts)")
        try await blackHole.close()
        await harness.finish()
    }

    @Test("a timed-out call on a live but busy peer keeps the connection and the other calls on it")
    func busyPeerKeepsConnection() async throws {
        let harness = TCPHarness()
        let client = try await harness.start(NodeID(1))
        let server = try await harness.start(NodeID(2))
        let runtime = harness.runtime
        await server.serve(ServiceID(1)) { request in
            switch request.message.method {
            case 2: try await runtime.sleep(nanoseconds: 1_500_000_000)
            case 3: try await runtime.sleep(nanoseconds: 3_600_000_000_000)
            default: break
            }
            return Message(method: 1, header: [UInt8(request.message.method)])
        }
        _ = try await client.call(NodeID(2), service: ServiceID(1), Message(method: 1, header: []), timeoutNanoseconds: 10_000_000_000)
        async let slow = client.call(NodeID(2), service: ServiceID(1), Message(method: 2, header: []), timeoutNanoseconds: 10_000_000_000)
        await #expect(throws: TransportError.self) {
            try await client.call(NodeID(2), service: ServiceID(1), Message(method: 3, header: []), timeoutNanoseconds: 200_000_000)
        }
        // The probe after that silent timeout is answered: the slow call is not cut.
        #expect(try await slow.header == [2])
        await harness.finish()
    }

    @Test("calls after shutdown fail with .shutdown")
    func callsAfterShutdown() async throws {
        let harness = TCPHarness()
        let client = try await harness.start(NodeID(1))
        let server = try await harness.start(NodeID(2))
        let runtime = harness.runtime
        await server.serve(ServiceID(1)) { request in
            try await runtime.sleep(nanoseconds: 5_000_000_000)
            return request.message
        }
        let inFlight = Task {
            try await client.call(NodeID(2), service: ServiceID(1), Message(method: 1, header: []), timeoutNanoseconds: 30_000_000_000)
        }
        try await runtime.sleep(nanoseconds: 200_000_000)
        await client.shutdown()
        await #expect(throws: TransportError.shutdown) { try await inFlight.value }
        await #expect(throws: TransportError.shutdown) {
            try await client.call(NodeID(2), service: ServiceID(1), Message(method: 1, header: []), timeoutNanoseconds: 1_000_000_000)
        }
        await harness.finish()
    }

    @Test("the resolvers report unknown nodes as unreachable")
    func resolvers() async throws {
        let staticResolver = StaticResolver()
        await #expect(throws: TransportError.unreachable(node: NodeID(5), reason: "no address known for node#5; add it to the config")) {
            try await staticResolver.resolve(NodeID(5))
        }
        staticResolver.set(NodeID(5), [NodeAddress(host: "10.0.0.1", port: 7), NodeAddress(host: "10.0.0.2", port: 7)])
        #expect(try await staticResolver.resolve(NodeID(5)).map(\.host) == ["10.0.0.1", "10.0.0.2"])

        let dns = DNSResolver([NodeID(1): [DNSResolver.Name(host: "localhost", port: 9000)]])
        let resolved = try await dns.resolve(NodeID(1))
        #expect(!resolved.isEmpty)
        #expect(resolved.allSatisfy { $0.port == 9000 && ($0.host == "127.0.0.1" || $0.host == "::1") })
        dns.set(NodeID(2), [DNSResolver.Name(host: "no-such-host.invalid", port: 1)])
        await #expect(throws: TransportError.self) { try await dns.resolve(NodeID(2)) }
        await #expect(throws: TransportError.self) { try await dns.resolve(NodeID(3)) }
    }

    @Test("the production runtime's fault points never fire")
    func productionFaultPointsNeverFire() {
        let runtime = ProductionRuntime(nodeName: "fault-points", logLevel: .critical)
        for _ in 0..<1_000 {
            #expect(!runtime.faultPoint("kv.index.unavailable") && !runtime.faultPoint("storage.request.delay"))
        }
    }

    @Test("the production runtime's actor executor is a long-lived event loop")
    func actorExecutor() async throws {
        let runtime = ProductionRuntime(nodeName: "n1", baseSeed: 7)
        let counter = LoopCounter(runtime: runtime)
        for _ in 0..<100 { await counter.increment() }
        #expect(await counter.value == 100)
        var a = runtime.random("x")
        var b = ProductionRuntime(nodeName: "n1", baseSeed: 7).random("x")
        #expect(a.next() == b.next())
        let t0 = runtime.nowNanoseconds()
        try await runtime.sleep(nanoseconds: 10_000_000)
        #expect(runtime.nowNanoseconds() - t0 >= 10_000_000)
    }

    /// Connects to 127.0.0.1:`port`, sends `payload`, and reports whether the server
    /// closes the connection within 30 s (reading nothing back).
    private func sendAndWaitForClose(port: UInt16, _ payload: [UInt8]) async throws -> Bool {
        #if os(Linux)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { return false }
        _ = payload.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        // Poll without blocking: a blocking recv would hold one of the few
        // cooperative threads (two on a two-core machine) that the server under test
        // may need to close the connection. Generous: a loaded CI machine may take
        // seconds to get to it.
        var buffer = [UInt8](repeating: 0, count: 64)
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n == 0 { return true }
            if n < 0 {
                let e = errno
                if e == ECONNRESET { return true }
                guard e == EAGAIN || e == EWOULDBLOCK || e == EINTR else { return false }
                try await Task.sleep(for: .milliseconds(5))
            }
        }
        return false
    }
}

/// An actor on `ProductionRuntime.makeActorExecutor()`.
private actor LoopCounter {
    nonisolated let unownedExecutor: UnownedSerialExecutor
    private(set) var value = 0
    init(runtime: ProductionRuntime) { unownedExecutor = runtime.makeActorExecutor() }
    func increment() { value += 1 }
}
