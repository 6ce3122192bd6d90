import CisternCore
import CisternMgmtd
import CisternRouting
import CisternSim

/// Records what cluster managers and routing clients do in a simulated run, and
/// checks the cluster invariants: at most one primary may accept writes at any
/// instant, routing versions only grow and one version has one content, and each
/// chain version has one head.
final class ClusterRecorder: MgmtdObserver, RoutingObserver, @unchecked Sendable {
    struct Lease {
        let node: NodeID
        let epoch: UInt64
        var from: UInt64
        var until: UInt64
        var ended = false
    }

    struct ChainVersion: Hashable {
        let chain: ChainID
        let version: UInt64
    }

    private(set) var leases: [Lease] = []
    private(set) var commits: [(at: UInt64, routing: RoutingInfo)] = []
    private var digestByVersion: [UInt64: UInt64] = [:]
    private var headByChainVersion: [ChainVersion: TargetID?] = [:]
    /// Versions each node accepted, in order (across its processes).
    private(set) var acceptedVersions: [NodeID: [UInt64]] = [:]
    private var lastAcceptedBySession: [UInt64: UInt64] = [:]
    private(set) var violations: [String] = []
    let now: () -> UInt64

    init(now: @escaping () -> UInt64) { self.now = now }

    private func violation(_ text: String) {
        if violations.count < 50 { violations.append(text) }
    }

    // MARK: MgmtdObserver

    func primaryLease(node: NodeID, epoch: UInt64, from: UInt64, until: UInt64) {
        // A renewal extends the tenure; a lease that lapsed first (its holder was
        // killed and came back to renew its own record after it expired) starts a
        // new one: the holder could not act in between.
        if let i = leases.firstIndex(where: { $0.node == node && $0.epoch == epoch && !$0.ended }), from <= leases[i].until {
            leases[i].until = max(leases[i].until, until)
        } else {
            for i in leases.indices where leases[i].node == node && leases[i].epoch == epoch { leases[i].ended = true }
            leases.append(Lease(node: node, epoch: epoch, from: from, until: until))
        }
    }

    func primaryEnded(node: NodeID, epoch: UInt64, at: UInt64) {
        for i in leases.indices where leases[i].node == node && leases[i].epoch == epoch && !leases[i].ended {
            leases[i].until = min(leases[i].until, at)
            leases[i].ended = true
        }
    }

    func routingCommitted(_ routing: RoutingInfo, node: NodeID, at: UInt64) {
        if let last = commits.last, routing.version <= last.routing.version {
            violation("routing_monotonic: \(node) committed version \(routing.version) after version \(last.routing.version) was committed")
        }
        commits.append((at, routing))
        observe(routing, by: "\(node) (commit)")
    }

    /// A new primary's routing from the KV: a version newer than every commit seen
    /// was committed by a transaction whose outcome its writer never learned (it
    /// applied), so it counts as committed from here.
    func routingLoaded(_ routing: RoutingInfo, node: NodeID, at: UInt64) {
        if let last = commits.last, routing.version < last.routing.version {
            violation("routing_monotonic: \(node) took over with version \(routing.version) after version \(last.routing.version) was committed")
        }
        if routing.version > (commits.last?.routing.version ?? 0) { commits.append((at, routing)) }
        observe(routing, by: "\(node) (takeover)")
    }

    // MARK: RoutingObserver

    func accepted(_ routing: RoutingInfo, node: NodeID, session: UInt64, at: UInt64) {
        if let last = lastAcceptedBySession[session], routing.version <= last {
            violation("routing_monotonic: \(node) accepted version \(routing.version) after \(last)")
        }
        lastAcceptedBySession[session] = routing.version
        acceptedVersions[node, default: []].append(routing.version)
        observe(routing, by: "\(node)")
    }

    private func observe(_ routing: RoutingInfo, by who: String) {
        let digest = StableHash.fnv1a64(bytes: routing.wireBytes())
        if let known = digestByVersion[routing.version], known != digest {
            violation("routing_monotonic: two different routings carry version \(routing.version) (seen by \(who)): two primaries wrote at once")
        }
        digestByVersion[routing.version] = digest
        for chain in routing.chains {
            let key = ChainVersion(chain: chain.id, version: chain.version)
            if let known = headByChainVersion[key], known != chain.head {
                violation("single_head: \(chain.id) version \(chain.version) has head \(known.map(\.description) ?? "none") and \(chain.head.map(\.description) ?? "none") (seen by \(who))")
            }
            headByChainVersion[key] = chain.head
        }
    }

    // MARK: Queries

    /// The replica whose lease is live now (the latest epoch among them).
    func currentPrimary(at time: UInt64) -> NodeID? {
        leases.filter { $0.from <= time && time < $0.until }.max { $0.epoch < $1.epoch }?.node
    }

    var lastCommitted: RoutingInfo? { commits.last?.routing }

    /// Pairs of primaries whose write windows overlap.
    func overlappingPrimaries() -> [String] {
        var out: [String] = []
        let sorted = leases.sorted { ($0.from, $0.epoch) < ($1.from, $1.epoch) }
        for i in sorted.indices {
            for j in (i + 1)..<sorted.count {
                let a = sorted[i], b = sorted[j]
                if b.from >= a.until { continue }
                if a.node != b.node {
                    out.append("single_primary: \(a.node) (epoch \(a.epoch), \(formatSeconds(a.from))–\(formatSeconds(a.until))) and \(b.node) (epoch \(b.epoch), \(formatSeconds(b.from))–\(formatSeconds(b.until))) could both accept writes")
                }
            }
        }
        return out
    }

    /// When the primary in charge at `time` took over (a new primary waits a full
    /// failure timeout before judging any node).
    func primarySince(at time: UInt64) -> UInt64? {
        leases.filter { $0.from <= time }.max { ($0.epoch, $0.from) < ($1.epoch, $1.from) }?.from
    }

    /// The first commit at or after `time` in which `node` is not active and each of
    /// its chain members is offline or LASTSRV.
    func detection(of node: NodeID, after time: UInt64) -> UInt64? {
        for (at, r) in commits where at >= time {
            guard let info = r.node(node), info.status != .active else { continue }
            let mine = Set(r.targets.filter { $0.node == node }.map(\.id))
            let ok = r.chains.allSatisfy { c in
                c.targets.allSatisfy { !mine.contains($0.target) || $0.state == .offline || $0.state == .lastsrv }
            }
            if ok { return at }
        }
        return nil
    }
}

extension MgmtdConfig {
    /// The defaults, with the workload's heartbeat interval and failure timeout.
    init(_ workload: Workload) {
        self.init()
        if let v = workload.heartbeatInterval { heartbeatIntervalNanoseconds = v.nanoseconds }
        if let v = workload.failureTimeout { failureTimeoutNanoseconds = v.nanoseconds }
    }
}
