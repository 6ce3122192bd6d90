import CisternCore
import CisternMgmtd
import CisternRouting

/// How every scenario run creates its cluster's first chains: the admin waits until
/// `storageNodes` storage nodes are active in routing, asks the manager to create the
/// chains, and takes them from routing. One copy, because its rule is easy to get
/// wrong: a createChains whose reply was lost did create the chains (and every retry
/// is refused), so the chains in routing decide, not an `.ok` reply.
enum ClusterBootstrap {
    /// Pause between looks at routing while the storage nodes register.
    static let pollNanoseconds: UInt64 = 200_000_000

    /// The first chain table's chains, once they exist (creating them when enough
    /// storage nodes are active). Runs until then.
    static func firstChains(_ client: MgmtdClient, storageNodes: Int, replicas: Int, runtime: any Runtime) async -> [ChainID] {
        while true {
            await client.refreshRouting()
            let routing = await client.routing
            if let t = routing?.tables.first, !t.chains.isEmpty { return t.chains }
            if let r = routing, r.nodes.filter({ $0.role == .storage && $0.status == .active }).count >= storageNodes,
               case .ok? = try? await client.call(.createChains(replicas: replicas)) {
                // Created: routing shows them on the next look.
                continue
            }
            try? await runtime.sleep(nanoseconds: pollNanoseconds)
        }
    }
}
