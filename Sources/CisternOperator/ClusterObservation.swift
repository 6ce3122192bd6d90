import CisternConnect
import CisternRouting

/// The cluster manager's routing, as the planner sees it.
public enum ClusterObservation {
    public static func from(_ r: RoutingInfo) -> Observation.Cluster {
        let active = Set(r.nodes.filter { $0.role == .storage && $0.status == .active }.map(\.id))
        let names = Dictionary(r.nodes.map { ($0.id, $0.name) }, uniquingKeysWith: { a, _ in a })
        let chains = r.chains.map { c in
            Observation.Chain(id: UInt64(c.id.rawValue), replicas: c.targets.count, serving: c.targets.filter { $0.state == .serving }.count, version: c.version,
                              members: c.targets.compactMap { t in r.target(t.target).flatMap { names[$0.node] } })
        }
        let unassigned = r.targets.filter { $0.chain == nil && active.contains($0.node) }.count
        return Observation.Cluster(chains: chains, storageNodesActive: active.count, unassignedTargets: unassigned)
    }
}

extension ClusterRenderer {
    /// What clients need to reach this cluster (also the `N-client` ConfigMap).
    public var clusterConfig: ServerConfig.Cluster { cluster }
}
