import CisternConformance
import CisternCore
import CisternNIO
import Synchronization

/// Runs `TCPTransport`s on 127.0.0.1 with ephemeral ports, all sharing one
/// `StaticResolver` that each start and move updates.
final class TCPHarness: TransportHarness {
    let resolver = StaticResolver()
    let runtime: any Runtime
    private let transports = Mutex<[NodeID: TCPTransport]>([:])

    init(runtime: any Runtime = ProductionRuntime(nodeName: "tcp-harness", baseSeed: 0x5EED, logLevel: .critical)) {
        self.runtime = runtime
    }

    func start(_ id: NodeID) async throws -> any Transport {
        try await launch(id)
    }

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

    /// The transport now running as `id`, if any.
    func transport(_ id: NodeID) -> TCPTransport? {
        transports.withLock { $0[id] }
    }

    private func launch(_ id: NodeID) async throws -> TCPTransport {
        let transport = TCPTransport(
            localNode: id, listen: NodeAddress(host: "127.0.0.1", port: 0), resolver: resolver, runtime: runtime)
        let bound = try await transport.start()
        resolver.set(id, [bound])
        transports.withLock { $0[id] = transport }
        return transport
    }
}
