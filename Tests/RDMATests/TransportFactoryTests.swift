import CisternCore
import CisternNIO
import CisternRDMA
import Logging
import Synchronization
import Testing

/// Lines logged through a `Logger` made by `logger()`.
final class LogLines: Sendable {
    private let lines = Mutex<[String]>([])

    var all: [String] { lines.withLock { $0 } }

    func logger() -> Logger {
        Logger(label: "transport") { label in
            ClockLogHandler(
                label: label, node: "test", level: .trace, now: { 0 },
                sink: { [self] line, _ in lines.withLock { $0.append(line) } })
        }
    }
}

@Suite("RDMA discovery and the transport factory")
struct TransportFactoryTests {
    static let runtime = ProductionRuntime(nodeName: "rdma-factory-test", baseSeed: 0x5EED, logLevel: .critical)

    @Test("the factory falls back to TCP without a device, logs it once, and the transport works")
    func fallsBackAndWorks() async throws {
        let log = LogLines()
        let factory = TransportFactory(runtime: Self.runtime, logger: log.logger())
        let resolver = StaticResolver()
        let listen = NodeAddress(host: "127.0.0.1", port: 0)
        let a = factory.makeTransport(localNode: NodeID(1), listen: listen, resolver: resolver)
        let b = factory.makeTransport(localNode: NodeID(2), listen: listen, resolver: resolver)

        let probe = RDMAProbe.devices()
        switch (probe, factory.choice()) {
        case (.none(let reason), .tcp(let why)):
            // This is what runs on hosts without RDMA (ENOSYS from ibv_get_device_list).
            #expect(why == reason)
            #expect(a is TCPTransport && b is TCPTransport)
            let lines = log.all.filter { $0.contains("using TCP") }
            #expect(lines.count == 1, "the fallback was logged \(lines.count) times: \(log.all)")
            #expect(lines.first?.hasSuffix("no RDMA device (\(reason)); using TCP") == true, "\(lines)")
        case (.devices, .rdma(let device)):
            #expect(a is RDMATransport && b is RDMATransport)
            #expect(log.all.filter { $0.contains(device) }.count == 1)
        case (.devices, .tcp(let why)):
            // A device is listed but does not open (port down, no GID): the reason says so.
            #expect(!why.isEmpty)
            #expect(a is TCPTransport)
        case (.none, .rdma):
            Issue.record("the factory chose RDMA although the probe found no device: \(probe)")
        }
        // Asking again neither probes nor logs again.
        let linesBefore = log.all.count
        _ = factory.choice()
        _ = factory.makeTransport(localNode: NodeID(3), listen: listen, resolver: resolver)
        #expect(log.all.count == linesBefore)

        let boundA = try await a.start()
        let boundB = try await b.start()
        resolver.set(NodeID(1), [boundA])
        resolver.set(NodeID(2), [boundB])
        #expect(a.boundAddress?.port != 0)
        await b.serve(ServiceID(7)) { request in
            Message(
                method: request.message.method &+ 1, header: request.message.header.reversed() + KeyCoding.bigEndian(UInt64(request.from.rawValue)),
                bulk: request.message.bulk)
        }
        let bulk = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let reply = try await a.call(
            NodeID(2), service: ServiceID(7), Message(method: 41, header: [1, 2, 3], bulk: bulk), timeoutNanoseconds: 10_000_000_000)
        #expect(reply.method == 42)
        #expect(reply.header == [3, 2, 1] + KeyCoding.bigEndian(UInt64(1)))
        #expect(reply.bulk == bulk)
        await a.shutdown()
        await b.shutdown()
    }

    @Test("a probe that finds no device gives TCP with its reason")
    func probeWithoutDevices() async throws {
        let log = LogLines()
        let factory = TransportFactory(
            runtime: Self.runtime, logger: log.logger(), probe: { .none(reason: "ibv_get_device_list failed: test (errno 38)") })
        #expect(factory.choice() == .tcp(reason: "ibv_get_device_list failed: test (errno 38)"))
        #expect(factory.choice().description == "tcp (no RDMA device: ibv_get_device_list failed: test (errno 38))")
        let transport = factory.makeTransport(
            localNode: NodeID(1), listen: NodeAddress(host: "127.0.0.1", port: 0), resolver: StaticResolver())
        #expect(transport is TCPTransport)
        #expect(log.all.count == 1)
        #expect(log.all.first?.contains("no RDMA device (ibv_get_device_list failed: test (errno 38)); using TCP") == true)
    }

    @Test("a listed device that does not open gives TCP naming the failure")
    func deviceThatDoesNotOpen() async throws {
        let log = LogLines()
        let factory = TransportFactory(runtime: Self.runtime, logger: log.logger(), probe: { .devices(["bogus_rdma0"]) })
        guard case .tcp(let reason) = factory.choice() else {
            Issue.record("a device that cannot exist was chosen")
            return
        }
        // Here the device list fails outright; on an RDMA host the name is not found.
        #expect(reason.contains("ibv_get_device_list") || reason.contains("bogus_rdma0"), "\(reason)")
        #expect(log.all.count == 1)
        #expect(log.all.first?.contains("using TCP") == true)
    }

    @Test("a configured device the probe does not list gives TCP naming it")
    func configuredDeviceMissing() {
        var configuration = RDMATransport.Configuration()
        configuration.deviceName = "mlx5_9"
        let factory = TransportFactory(runtime: Self.runtime, logger: LogLines().logger(), rdma: configuration, probe: { .devices(["mlx5_0"]) })
        #expect(factory.choice() == .tcp(reason: "no RDMA device named mlx5_9; this host has mlx5_0"))
    }

    @Test("the RDMA transport's initializer fails with the device error here, leaving nothing open")
    func transportInitFailsWithoutDevice() {
        guard case .none = RDMAProbe.devices() else { return }
        do {
            _ = try RDMATransport(
                localNode: NodeID(1), listen: NodeAddress(host: "127.0.0.1", port: 0), resolver: StaticResolver(), runtime: Self.runtime)
            Issue.record("an RDMA transport opened without a device")
        } catch {
            guard case .verbs(let call, _, _) = error else {
                Issue.record("expected a verbs error, got \(error)")
                return
            }
            #expect(call == "ibv_get_device_list")
        }
    }
}
