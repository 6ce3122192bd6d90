import Cistern
import CisternAuth
import CisternCore
import CisternNIO
import Foundation

/// Why a client session could not be used.
public enum ClientSessionError: Error, CustomStringConvertible {
    case notServing(String)

    public var description: String {
        switch self {
        case .notServing(let why): return "the cluster is not serving: \(why)"
        }
    }
}

/// A client connected to a running cluster over TCP (for the CLI and end-to-end tests).
public final class ClientSession: Sendable {
    public let client: CisternClient
    public let transport: TCPTransport
    public let resolver: ClusterResolver

    init(client: CisternClient, transport: TCPTransport, resolver: ClusterResolver) {
        self.client = client
        self.transport = transport
        self.resolver = resolver
    }

    /// - Parameter options: the client's settings; by default those of the CLI (60
    ///   attempts of at most 5 s per chunk request, for slow loopback disks).
    /// - Parameter token: the tenant token requests carry (see `ClientToken.locate`).
    /// - Parameter clusterKey: the cluster key, for administrators (routing changes such
    ///   as creating chains need it on a cluster with authentication).
    public static func connect(_ config: ServerConfig.Cluster, name: String = "cli", options: ClientOptions? = nil, token: String? = nil,
                               clusterKey: CapabilityKey? = nil) async throws -> ClientSession {
        var seeds: [NodeID: [NodeAddress]] = [:]
        for p in config.mgmtd + (config.meta ?? []) { seeds[NodeID(p.id), default: []].append(try ServerConfig.address(p.address)) }
        let resolver = ClusterResolver(seeds: seeds)
        let runtime = ProductionRuntime(nodeName: name, logLevel: .error)
        var rng = SystemRandomNumberGenerator()
        let me = NodeID(UInt32.random(in: 100_000..<16_000_000, using: &rng))
        let transport = TCPTransport(localNode: me, listen: NodeAddress(host: "127.0.0.1", port: 0), resolver: resolver, runtime: runtime)
        try await transport.start()
        let options = options ?? {
            var o = ClientOptions()
            o.chunkAttemptsMax = 60
            o.chunkTimeoutNanoseconds = 5_000_000_000
            return o
        }()
        let client = CisternClient(runtime: runtime, transport: transport, node: me, name: name, mgmtd: config.mgmtd.map { NodeID($0.id) },
                                   meta: (config.meta ?? []).map { NodeID($0.id) }, options: options, incarnation: UInt32.random(in: 0...255, using: &rng), token: token,
                                   mgmtdService: clusterKey?.service)
        await client.start()
        if let r = await client.mgmtd.routing { resolver.update(from: r) }
        resolver.follow(client.mgmtd, runtime: runtime)
        return ClientSession(client: client, transport: transport, resolver: resolver)
    }

    /// Waits until `storageNodes` storage nodes are registered, creates the chain
    /// table if there is none, and waits until files can be created.
    public func waitUntilServing(storageNodes: Int, replicas: Int, timeoutSeconds: Double = 60, progress: @Sendable (String) -> Void = { _ in }) async throws {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        var said = ""
        func say(_ s: String) {
            if s != said { progress(s); said = s }
        }
        while true {
            guard Date() < deadline else { throw ClientSessionError.notServing("not serving after \(Int(timeoutSeconds)) s (last: \(said))") }
            await client.mgmtd.refreshRouting()
            guard let r = await client.mgmtd.routing else {
                say("waiting for the cluster manager")
                try await Task.sleep(nanoseconds: 200_000_000)
                continue
            }
            resolver.update(from: r)
            let active = r.nodes.filter { $0.role == .storage && $0.status == .active }.count
            if active < storageNodes {
                say("waiting for storage nodes: \(active)/\(storageNodes) registered")
                try await Task.sleep(nanoseconds: 200_000_000)
                continue
            }
            if r.tables.isEmpty {
                say("creating chains (\(replicas) replicas)")
                _ = try? await client.mgmtd.call(.createChains(replicas: replicas))
                continue
            }
            break
        }
        say("waiting for the metadata server to place files")
        try await client.writeFile("/.cistern-up-probe", [1])
        try await client.remove("/.cistern-up-probe")
        say("serving")
    }

    public func close() async {
        await client.stop()
        resolver.stopFollowing()
        await transport.shutdown()
    }
}
