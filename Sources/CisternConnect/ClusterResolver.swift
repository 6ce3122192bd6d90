import CisternCore
import CisternMgmtd
import CisternNIO
import CisternRouting
import Synchronization

/// Finds nodes in a production cluster: the cluster managers and metadata servers
/// from the configuration, every other node from the addresses it advertises in its
/// heartbeats (carried in routing). Host names are resolved on every lookup (DNS), so
/// a node whose IP changes is found again under its name.
public final class ClusterResolver: CisternCore.Resolver {
    let dns: DNSResolver
    /// False once `stopFollowing()` ran: the `follow` loop ends at its next turn.
    private let following = Mutex(true)

    public init(seeds: [NodeID: [NodeAddress]]) {
        var table: [NodeID: [DNSResolver.Name]] = [:]
        for (id, addresses) in seeds { table[id] = addresses.map { DNSResolver.Name(host: $0.host, port: $0.port) } }
        dns = DNSResolver(table)
    }

    public func resolve(_ node: NodeID) async throws(TransportError) -> [NodeAddress] {
        try await dns.resolve(node)
    }

    /// Learns every node's advertised addresses from `routing`.
    public func update(from routing: RoutingInfo) {
        for n in routing.nodes where !n.addresses.isEmpty {
            let names = n.addresses.compactMap { try? ServerConfig.address($0) }.map { DNSResolver.Name(host: $0.host, port: $0.port) }
            if !names.isEmpty { dns.set(n.id, names) }
        }
    }

    /// Keeps the table fresh from `mgmtd`'s routing (pulled every `interval`).
    public func follow(_ mgmtd: MgmtdClient, runtime: any Runtime, everyNanoseconds interval: UInt64 = 500_000_000) {
        runtime.spawn("resolver.follow") { [self] in
            while self.following.withLock({ $0 }) {
                await mgmtd.refreshRouting()
                if let r = await mgmtd.routing { self.update(from: r) }
                do { try await runtime.sleep(nanoseconds: interval) } catch { return }
            }
        }
    }

    /// Ends the `follow` loop (a closed client session must not keep polling).
    public func stopFollowing() {
        following.withLock { $0 = false }
    }
}
