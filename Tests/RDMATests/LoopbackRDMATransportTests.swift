import CisternConformance
import CisternCore
import CisternNIO
import CisternWire
import Synchronization
import Testing

@testable import CisternRDMA

/// Runs `RDMATransport`s on 127.0.0.1 (TCP side, ephemeral ports) over one in-process
/// `LoopbackRDMANetwork`, so the whole RDMA protocol (handshake, landing and response
/// slots, RDMA WRITE and READ, checksums, fallbacks) runs without a device.
final class LoopbackRDMAHarness: TransportHarness {
    let resolver = StaticResolver()
    let runtime: any Runtime
    let network = LoopbackRDMANetwork()
    let configuration: RDMATransport.Configuration
    private let transports = Mutex<[NodeID: RDMATransport]>([:])

    static var testConfiguration: RDMATransport.Configuration {
        var configuration = RDMATransport.Configuration()
        configuration.stagingBytes = 9 << 20
        configuration.landingBytes = 9 << 20
        configuration.responseBytes = 9 << 20
        configuration.bulkThresholdBytes = 1
        configuration.handshakeOnFirstCall = true
        // Tests run in parallel on few cores: be patient with handshakes.
        configuration.handshakeTimeoutNanoseconds = 60_000_000_000
        return configuration
    }

    init(
        configuration: RDMATransport.Configuration = LoopbackRDMAHarness.testConfiguration,
        runtime: any Runtime = ProductionRuntime(nodeName: "rdma-loopback", baseSeed: 0x5EED, logLevel: .critical)
    ) {
        self.configuration = configuration
        self.runtime = runtime
    }

    func start(_ id: NodeID) async throws -> any Transport { try await launch(id) }

    func move(_ id: NodeID) async throws -> any Transport {
        let old = transports.withLock { $0.removeValue(forKey: id) }
        await old?.shutdown()
        return try await launch(id)
    }

    func stop(_ id: NodeID) async throws {
        let old = transports.withLock { $0.removeValue(forKey: id) }
        await old?.shutdown()
    }

    func finish() async {
        let all = transports.withLock { t in
            let all = Array(t.values)
            t = [:]
            return all
        }
        for transport in all { await transport.shutdown() }
    }

    func transport(_ id: NodeID) -> RDMATransport? { transports.withLock { $0[id] } }

    @discardableResult
    func launch(_ id: NodeID) async throws -> RDMATransport {
        let transport = RDMATransport(
            localNode: id, listen: NodeAddress(host: "127.0.0.1", port: 0), resolver: resolver, runtime: runtime,
            configuration: configuration, fabric: LoopbackFabric(network: network, name: "loop\(id.rawValue)"))
        let bound = try await transport.start()
        resolver.set(id, [bound])
        transports.withLock { $0[id] = transport }
        return transport
    }
}

@Suite("RDMA transport over a loopback fabric")
struct LoopbackRDMATransportTests {
    static let echo = ServiceID(1)
    static let patient: UInt64 = 60_000_000_000

    static func bytes(_ count: Int, seed: UInt64) -> [UInt8] {
        var random = DeterministicRandom(seed: seed)
        var out: [UInt8] = []
        out.reserveCapacity(count)
        while out.count < count {
            let word = random.next()
            for shift in stride(from: 0, to: 64, by: 8) where out.count < count {
                out.append(UInt8(truncatingIfNeeded: word >> UInt64(shift)))
            }
        }
        return out
    }

    /// A client and an echo server, connected over RDMA.
    static func pair(
        _ harness: LoopbackRDMAHarness, connect: Bool = true
    ) async throws -> (client: RDMATransport, server: RDMATransport) {
        let client = try await harness.launch(NodeID(1))
        let server = try await harness.launch(NodeID(2))
        server.serve(echo) { $0.message }
        if connect { try await client.connect(to: NodeID(2), timeoutNanoseconds: patient) }
        return (client, server)
    }

    @Test("passes the Transport conformance suite")
    func conformance() async throws {
        try await TransportConformance.run(LoopbackRDMAHarness())
    }

    @Test("request bulk moves by RDMA WRITE and response bulk by RDMA READ, byte for byte")
    func bulkUsesRDMA() async throws {
        let harness = LoopbackRDMAHarness()
        let (client, server) = try await Self.pair(harness)
        #expect(client.statistics.handshakes == 1)
        #expect(server.statistics.inboundConnections == 1)
        #expect(client.deviceName == "loop1")

        let bulk = Self.bytes(3 << 20, seed: 1)
        let reply = try await client.call(
            NodeID(2), service: Self.echo, Message(method: 5, header: [1, 2], bulk: bulk), timeoutNanoseconds: Self.patient)
        #expect(reply == Message(method: 5, header: [1, 2], bulk: bulk))
        let stats = client.statistics
        #expect(stats.rdmaWrites == 1 && stats.rdmaWriteBytes == bulk.count)
        #expect(stats.rdmaReads == 1 && stats.rdmaReadBytes == bulk.count)
        #expect(stats.tcpCalls == 0 && stats.fallbacks == 0)
        #expect(harness.network.completed.writes == 1 && harness.network.completed.reads == 1)

        // Header-only calls and empty bulk go through the envelope without RDMA.
        let small = try await client.call(NodeID(2), service: Self.echo, Message(method: 6, header: [7]), timeoutNanoseconds: Self.patient)
        #expect(small == Message(method: 6, header: [7]))
        #expect(client.statistics.rdmaWrites == 1)
        await harness.finish()
    }

    @Test("bulk below the threshold travels inline over TCP")
    func smallBulkInline() async throws {
        var configuration = LoopbackRDMAHarness.testConfiguration
        configuration.bulkThresholdBytes = 16 << 10
        let harness = LoopbackRDMAHarness(configuration: configuration)
        let (client, _) = try await Self.pair(harness)
        let bulk = Self.bytes((16 << 10) - 1, seed: 2)
        let reply = try await client.call(NodeID(2), service: Self.echo, Message(method: 1, header: [], bulk: bulk), timeoutNanoseconds: Self.patient)
        #expect(reply.bulk == bulk)
        #expect(client.statistics.rdmaWrites == 0 && client.statistics.rdmaReads == 0)
        let big = Self.bytes(16 << 10, seed: 3)
        let bigReply = try await client.call(NodeID(2), service: Self.echo, Message(method: 1, header: [], bulk: big), timeoutNanoseconds: Self.patient)
        #expect(bigReply.bulk == big)
        #expect(client.statistics.rdmaWrites == 1 && client.statistics.rdmaReads == 1)
        await harness.finish()
    }

    @Test("many concurrent calls share the slots; those that do not fit go inline", arguments: [UInt64(1), 2, 3])
    func concurrentSlots(seed: UInt64) async throws {
        var configuration = LoopbackRDMAHarness.testConfiguration
        configuration.landingBytes = 512 << 10
        configuration.responseBytes = 512 << 10
        configuration.stagingBytes = 256 << 10
        let harness = LoopbackRDMAHarness(configuration: configuration)
        let (client, _) = try await Self.pair(harness)
        var random = DeterministicRandom(seed: seed)
        let sizes = (0..<60).map { _ in Int(random.next() % (100 << 10)) + 1 }
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for (index, size) in sizes.enumerated() {
                group.addTask {
                    let bulk = Self.bytes(size, seed: seed &* 1000 &+ UInt64(index))
                    let header = KeyCoding.bigEndian(UInt64(index))
                    let reply = try await client.call(
                        NodeID(2), service: Self.echo, Message(method: UInt16(index), header: header, bulk: bulk),
                        timeoutNanoseconds: Self.patient)
                    return reply == Message(method: UInt16(index), header: header, bulk: bulk)
                }
            }
            for try await matched in group { #expect(matched, "a concurrent call got a response that is not its own") }
        }
        let stats = client.statistics
        #expect(stats.rdmaWrites > 0 && stats.rdmaReads > 0)
        #expect(stats.fallbacks == 0)
        await harness.finish()
    }

    @Test("response slots are released by later requests, so sequential large responses keep using RDMA")
    func responseSlotsAreReleased() async throws {
        var configuration = LoopbackRDMAHarness.testConfiguration
        configuration.responseBytes = 300 << 10
        let harness = LoopbackRDMAHarness(configuration: configuration)
        let (client, server) = try await Self.pair(harness)
        let payload = Self.bytes(200 << 10, seed: 4)
        server.serve(ServiceID(2)) { _ in Message(method: 1, header: [], bulk: payload) }
        for _ in 0..<10 {
            let reply = try await client.call(NodeID(2), service: ServiceID(2), Message(method: 1, header: []), timeoutNanoseconds: Self.patient)
            #expect(reply.bulk == payload)
        }
        // Each response fills most of the zone: only released slots make room for the next.
        #expect(client.statistics.rdmaReads == 10)
        await harness.finish()
    }

    @Test("a failed RDMA WRITE retires the connection and the call goes over TCP")
    func failedWriteFallsBack() async throws {
        let harness = LoopbackRDMAHarness()
        let (client, _) = try await Self.pair(harness)
        harness.network.failNext(.write)
        let bulk = Self.bytes(100_000, seed: 5)
        let reply = try await client.call(NodeID(2), service: Self.echo, Message(method: 1, header: [1], bulk: bulk), timeoutNanoseconds: Self.patient)
        #expect(reply.bulk == bulk)
        var stats = client.statistics
        #expect(stats.fallbacks == 1 && stats.retiredConnections == 1 && stats.tcpCalls == 1)
        #expect(client.outboundConnectionID(to: NodeID(2)) == nil)
        // The node is reached over TCP while the connection backs off.
        let again = try await client.call(NodeID(2), service: Self.echo, Message(method: 1, header: [1], bulk: bulk), timeoutNanoseconds: Self.patient)
        #expect(again.bulk == bulk)
        stats = client.statistics
        #expect(stats.tcpCalls == 2 && stats.handshakes == 1)
        await harness.finish()
    }

    @Test("a failed RDMA READ of the response fails the call as unreachable")
    func failedReadIsUnreachable() async throws {
        let harness = LoopbackRDMAHarness()
        let (client, _) = try await Self.pair(harness)
        harness.network.failNext(.read)
        let bulk = Self.bytes(100_000, seed: 6)
        do {
            _ = try await client.call(NodeID(2), service: Self.echo, Message(method: 1, header: [1], bulk: bulk), timeoutNanoseconds: Self.patient)
            Issue.record("a call whose response could not be read succeeded")
        } catch {
            guard case .unreachable(let node, let reason) = error else {
                Issue.record("expected .unreachable, got \(error)")
                return
            }
            #expect(node == NodeID(2))
            #expect(reason.contains("RDMA READ"), "\(reason)")
        }
        #expect(client.statistics.retiredConnections == 1)
        // Later calls still work (over TCP while the connection backs off).
        let reply = try await client.call(NodeID(2), service: Self.echo, Message(method: 2, header: [2], bulk: bulk), timeoutNanoseconds: Self.patient)
        #expect(reply.bulk == bulk)
        await harness.finish()
    }

    @Test("a server that dropped the connection makes the caller resend over TCP and reconnect")
    func unknownConnectionResends() async throws {
        let harness = LoopbackRDMAHarness()
        let (client, server) = try await Self.pair(harness)
        let id = try #require(client.outboundConnectionID(to: NodeID(2)))
        // Drop the server's side, as a restart would.
        _ = try await client.tcp.call(
            NodeID(2), service: RDMAServices.control,
            Message(method: RDMAControlMethod.disconnect.rawValue, header: RDMAConnectionRef(connectionID: id).wireBytes()),
            timeoutNanoseconds: Self.patient)
        #expect(server.inboundConnectionCount == 0)
        // A header-only call reaches the server's data service, which no longer knows
        // the connection: nothing runs there, and the caller resends over TCP.
        let reply = try await client.call(NodeID(2), service: Self.echo, Message(method: 1, header: [1]), timeoutNanoseconds: Self.patient)
        #expect(reply == Message(method: 1, header: [1]))
        #expect(client.statistics.fallbacks == 1)
        #expect(client.statistics.tcpCalls == 1)
        // The next call connects again and uses RDMA.
        let bulk = Self.bytes(50_000, seed: 7)
        let next = try await client.call(NodeID(2), service: Self.echo, Message(method: 1, header: [1], bulk: bulk), timeoutNanoseconds: Self.patient)
        #expect(next.bulk == bulk)
        #expect(client.statistics.handshakes == 2)
        #expect(client.statistics.rdmaWrites == 1)
        #expect(server.inboundConnectionCount == 1)
        #expect(client.outboundConnectionID(to: NodeID(2)) != id)
        await harness.finish()
    }

    @Test("request bulk that fails its checksum is refused and the handler never runs")
    func corruptLandingBulkIsRejected() async throws {
        let harness = LoopbackRDMAHarness()
        let (client, server) = try await Self.pair(harness)
        let ran = Mutex(0)
        server.serve(ServiceID(3)) { request in
            ran.withLock { $0 += 1 }
            return request.message
        }
        let id = try #require(client.outboundConnectionID(to: NodeID(2)))
        // Claims 4 KiB in the landing zone that no WRITE filled.
        let envelope = RDMARequestEnvelope(
            connectionID: id, service: ServiceID(3), header: [1], bulk: .remote(offset: 0, length: 4096, checksum: 0x1234_5678, token: 0),
            remainingNanoseconds: Self.patient, releasedTokens: [])
        let reply = try await client.tcp.call(
            NodeID(2), service: RDMAServices.data, Message(method: 1, header: envelope.wireBytes()), timeoutNanoseconds: Self.patient)
        let response = try RDMAResponseEnvelope(wireBytes: reply.header)
        #expect(response.status == .bulkRejected)
        #expect(response.detail.contains("CRC-32C"))
        // Out of the landing zone entirely.
        let outside = RDMARequestEnvelope(
            connectionID: id, service: ServiceID(3), header: [1], bulk: .remote(offset: UInt64(100 << 20), length: 1, checksum: 0, token: 0),
            remainingNanoseconds: Self.patient, releasedTokens: [])
        let outsideReply = try await client.tcp.call(
            NodeID(2), service: RDMAServices.data, Message(method: 1, header: outside.wireBytes()), timeoutNanoseconds: Self.patient)
        let outsideResponse = try RDMAResponseEnvelope(wireBytes: outsideReply.header)
        #expect(outsideResponse.status == .bulkRejected)
        #expect(outsideResponse.detail.contains("landing zone"))
        #expect(ran.withLock { $0 } == 0)
        await harness.finish()
    }

    @Test("RDMA and TCP-only nodes call each other over TCP")
    func interoperatesWithTCP() async throws {
        let harness = LoopbackRDMAHarness()
        let rdma = try await harness.launch(NodeID(1))
        let tcpOnly = TCPTransport(
            localNode: NodeID(2), listen: NodeAddress(host: "127.0.0.1", port: 0), resolver: harness.resolver, runtime: harness.runtime)
        let bound = try await tcpOnly.start()
        harness.resolver.set(NodeID(2), [bound])
        tcpOnly.serve(Self.echo) { $0.message }
        rdma.serve(Self.echo) { $0.message }
        let bulk = Self.bytes(70_000, seed: 8)

        let toTCP = try await rdma.call(NodeID(2), service: Self.echo, Message(method: 1, header: [1], bulk: bulk), timeoutNanoseconds: Self.patient)
        #expect(toTCP.bulk == bulk)
        #expect(rdma.statistics.failedHandshakes == 1 && rdma.statistics.tcpCalls == 1)
        do {
            try await rdma.connect(to: NodeID(2), timeoutNanoseconds: Self.patient)
            Issue.record("connected over RDMA to a TCP-only node")
        } catch {
            guard case .unreachable(_, let reason) = error else {
                Issue.record("expected .unreachable, got \(error)")
                return
            }
            #expect(reason.contains("serves no RDMA control service"), "\(reason)")
        }

        let toRDMA = try await tcpOnly.call(NodeID(1), service: Self.echo, Message(method: 2, header: [2], bulk: bulk), timeoutNanoseconds: Self.patient)
        #expect(toRDMA.bulk == bulk)
        await tcpOnly.shutdown()
        await harness.finish()
    }

    @Test("reserved services cannot be taken over, and unknown services are reported")
    func reservedAndUnknownServices() async throws {
        let harness = LoopbackRDMAHarness()
        let (client, server) = try await Self.pair(harness)
        server.serve(RDMAServices.data) { _ in Message(method: 0, header: []) }
        let bulk = Self.bytes(20_000, seed: 9)
        // Still the transport's own data service: the echo works over RDMA.
        let reply = try await client.call(NodeID(2), service: Self.echo, Message(method: 1, header: [1], bulk: bulk), timeoutNanoseconds: Self.patient)
        #expect(reply.bulk == bulk)
        await #expect(throws: TransportError.noSuchService(node: NodeID(2), service: ServiceID(77))) {
            try await client.call(NodeID(2), service: ServiceID(77), Message(method: 1, header: [1], bulk: bulk), timeoutNanoseconds: Self.patient)
        }
        server.stopServing(Self.echo)
        await #expect(throws: TransportError.noSuchService(node: NodeID(2), service: Self.echo)) {
            try await client.call(NodeID(2), service: Self.echo, Message(method: 1, header: [1]), timeoutNanoseconds: Self.patient)
        }
        await harness.finish()
    }

    @Test("shutdown fails calls in flight and later calls with .shutdown")
    func shutdownFailsCalls() async throws {
        let harness = LoopbackRDMAHarness()
        let (client, server) = try await Self.pair(harness)
        let runtime = harness.runtime
        server.serve(ServiceID(5)) { request in
            try await runtime.sleep(nanoseconds: 5_000_000_000)
            return request.message
        }
        let bulk = Self.bytes(30_000, seed: 10)
        let inFlight = Task {
            try await client.call(NodeID(2), service: ServiceID(5), Message(method: 1, header: [], bulk: bulk), timeoutNanoseconds: 30_000_000_000)
        }
        try await runtime.sleep(nanoseconds: 200_000_000)
        await client.shutdown()
        await #expect(throws: TransportError.shutdown) { try await inFlight.value }
        await #expect(throws: TransportError.shutdown) {
            try await client.call(NodeID(2), service: Self.echo, Message(method: 1, header: []), timeoutNanoseconds: 1_000_000_000)
        }
        await harness.finish()
    }
}

@Suite("RDMA connection slot bookkeeping")
struct RDMAConnectionSlotTests {
    @Test("response slots are freed by release or when their lease ends, never before")
    func responseLeases() throws {
        let network = LoopbackRDMANetwork()
        let fabric = LoopbackFabric(network: network)
        let buffer = try fabric.registerBuffer(bytes: 4096 + 1000)
        let queuePair = try fabric.makeQueuePair(packetSequenceNumber: 1)
        let connection = InboundConnection(
            id: 1, node: NodeID(9), queuePair: queuePair, buffer: buffer, landingBytes: 4096, nowNanoseconds: 0)
        let payload = [UInt8](repeating: 0xAB, count: 900)
        let first = try #require(connection.placeResponse(payload, untilNanoseconds: 100, nowNanoseconds: 10))
        guard case .remote(let offset, let length, let checksum, let token) = first else {
            Issue.record("expected a remote placement, got \(first)")
            return
        }
        #expect(offset == 4096 && length == 900 && checksum == CRC32C.checksum(payload))
        #expect([UInt8](UnsafeRawBufferPointer(start: buffer.base + 4096, count: 900)) == payload)
        // The zone is full until the lease ends...
        #expect(connection.placeResponse(payload, untilNanoseconds: 200, nowNanoseconds: 99) == nil)
        // ...and reusable once it has.
        let second = try #require(connection.placeResponse(payload, untilNanoseconds: 300, nowNanoseconds: 100))
        guard case .remote(_, _, _, let secondToken) = second else { return }
        #expect(secondToken != token)
        #expect(connection.placeResponse(payload, untilNanoseconds: 400, nowNanoseconds: 150) == nil)
        // A release frees it at once; releasing an unknown or stale token does nothing.
        connection.release([token, secondToken, 12345])
        #expect(connection.placeResponse(payload, untilNanoseconds: 400, nowNanoseconds: 150) != nil)
        #expect(!connection.isIdle(nowNanoseconds: 150, idleNanoseconds: 10))
        #expect(connection.isIdle(nowNanoseconds: 401, idleNanoseconds: 10))
    }

    @Test("landing slots of abandoned calls are quarantined until their time is up")
    func landingQuarantine() throws {
        let network = LoopbackRDMANetwork()
        let fabric = LoopbackFabric(network: network)
        let staging = try fabric.registerBuffer(bytes: 4096)
        let queuePair = try fabric.makeQueuePair(packetSequenceNumber: 1)
        let connection = try OutboundConnection(
            id: 1, node: NodeID(9), queuePair: queuePair, staging: staging, fabric: fabric,
            remote: RemoteBuffer(address: 0x10000, length: 8192, rkey: 7), landingBytes: 1024)
        let slot = try #require(connection.reserveLanding(1000, nowNanoseconds: 0))
        #expect(connection.reserveLanding(100, nowNanoseconds: 0) == nil)
        connection.quarantineLanding(slot, untilNanoseconds: 50)
        #expect(connection.reserveLanding(100, nowNanoseconds: 49) == nil)
        let reused = try #require(connection.reserveLanding(1000, nowNanoseconds: 50))
        #expect(reused == slot)
        connection.releaseLanding(reused)
        #expect(connection.reserveLanding(1024, nowNanoseconds: 50) != nil)
        #expect(connection.reserveLanding(1, nowNanoseconds: 50) == nil)
    }

    @Test("remote accesses outside the advertised buffer are refused before anything is posted")
    func remoteRangeChecked() async throws {
        let network = LoopbackRDMANetwork()
        let fabric = LoopbackFabric(network: network)
        let staging = try fabric.registerBuffer(bytes: 4096)
        let queuePair = try fabric.makeQueuePair(packetSequenceNumber: 1)
        let remote = RemoteBuffer(address: 0x10000, length: 8192, rkey: 7)
        let connection = try OutboundConnection(
            id: 1, node: NodeID(9), queuePair: queuePair, staging: staging, fabric: fabric, remote: remote, landingBytes: 1024)
        await #expect(throws: RDMAError.memoryRegion(.outOfRange(address: 0x10000 + 8000, length: 500, region: remote.region))) {
            try await connection.read(offset: 8000, length: 500)
        }
        await #expect(throws: RDMAError.memoryRegion(.outOfRange(address: 0x10000, length: UInt64.max, region: remote.region))) {
            try await connection.read(offset: UInt64.max, length: 1)
        }
        #expect(network.completed.reads == 0)
        // In range, but the queue pair was never connected: a precise error, no crash.
        await #expect(throws: RDMAError.notConnected("the queue pair is not connected")) {
            try await connection.read(offset: 0, length: 16)
        }
    }
}

@Suite("RDMA transport inbound connection limits")
struct RDMAInboundLimitTests {
    @Test("idle inbound connections are dropped when another is accepted, and their caller recovers")
    func idleConnectionsDropped() async throws {
        var configuration = LoopbackRDMAHarness.testConfiguration
        configuration.inboundIdleNanoseconds = 0
        let harness = LoopbackRDMAHarness(configuration: configuration)
        let first = try await harness.launch(NodeID(1))
        let server = try await harness.launch(NodeID(2))
        let second = try await harness.launch(NodeID(3))
        server.serve(ServiceID(1)) { $0.message }
        try await first.connect(to: NodeID(2), timeoutNanoseconds: 60_000_000_000)
        #expect(server.inboundConnectionCount == 1)
        try await harness.runtime.sleep(nanoseconds: 1_000_000)
        try await second.connect(to: NodeID(2), timeoutNanoseconds: 60_000_000_000)
        #expect(server.inboundConnectionCount == 1, "the idle connection of node#1 was kept")
        let reply = try await first.call(NodeID(2), service: ServiceID(1), Message(method: 1, header: [1]), timeoutNanoseconds: 60_000_000_000)
        #expect(reply == Message(method: 1, header: [1]))
        #expect(first.statistics.fallbacks == 1)
        await harness.finish()
    }
}
