import CisternKV

/// Checks a decoded scenario for mistakes a YAML schema cannot see: unknown node
/// names, missing fields per fault kind, values out of range, and faults beyond
/// what the topology survives.
public enum ScenarioValidator {
    public static let registerInvariants = ["linearizable", "liveness", "no_lost_writes"]
    public static let clusterInvariants = ["single_primary", "single_head", "routing_monotonic", "failure_detection", "no_false_failures", "liveness"]
    public static let storageInvariants = ["linearizable", "no_lost_writes", "replicas_identical", "single_head", "routing_monotonic", "liveness"]
    public static var knownInvariants: [String] {
        var all: [String] = []
        for i in registerInvariants + clusterInvariants + storageInvariants + metaInvariants + kvcacheInvariants where !all.contains(i) { all.append(i) }
        return all
    }
    public static let metaInvariants = ["namespace_model", "namespace_integrity", "liveness"]
    public static let kvcacheInvariants = ["pages_intact", "last_put", "no_lost_pages", "index_sound", "single_head", "routing_monotonic", "liveness",
                                           "tenant_isolation", "quotas_hold"]
    public static let knownWorkloads = ["register", "cluster", "storage", "meta", "kvcache"]
    /// Node names faults may use besides the topology's: `kv` is the transactional KV
    /// store (for partitions), `@mgmtd-primary` is whichever replica holds the lease
    /// when the fault fires.
    public static let pseudoNodes = ["kv", "@mgmtd-primary", "@chain-head", "@chain-tail", "*"]

    public static func problems(in s: Scenario) -> [String] {
        var out: [String] = []
        var names: [String: NodeRole] = [:]
        var hosts: Set<String> = []
        for (i, n) in s.topology.nodes.enumerated() {
            if n.name.isEmpty || n.name.hasPrefix("_") || n.name.hasPrefix("@") || n.name == "kv" {
                out.append("topology.nodes[\(i)].name: '\(n.name)' is not allowed (empty, starting with '_' or '@', or the reserved name 'kv')")
            }
            if names[n.name] != nil { out.append("topology.nodes[\(i)].name: '\(n.name)' is used twice; node names must be unique") }
            names[n.name] = n.role
            for h in [n.host].compactMap({ $0 }) + (n.secondaryHosts ?? []) {
                if !hosts.insert(h).inserted { out.append("topology.nodes[\(i)]: address \(h) is used twice") }
            }
        }
        let replicas = s.topology.nodes.filter { $0.role == .register }.count
        let clients = s.topology.nodes.filter { $0.role == .client }.count
        if !knownWorkloads.contains(s.workload.kind) {
            out.append("workload.kind: unknown workload '\(s.workload.kind)'; expected one of: \(knownWorkloads.joined(separator: ", "))")
        }
        if s.workload.kind == "register" {
            if replicas == 0 { out.append("topology: the register workload needs at least one node with role: register") }
            if clients == 0 { out.append("topology: the workload needs at least one node with role: client") }
        }
        if s.workload.kind == "meta" {
            if !s.topology.nodes.contains(where: { $0.role == .meta }) { out.append("topology: the meta workload needs at least one node with role: meta") }
            if clients == 0 { out.append("topology: the workload needs at least one node with role: client") }
        }
        if s.workload.kind == "kvcache" {
            if !s.topology.nodes.contains(where: { $0.role == .meta }) { out.append("topology: the kvcache workload needs at least one node with role: meta (it serves the KV index)") }
            if clients == 0 { out.append("topology: the workload needs at least one node with role: client") }
            let page = s.workload.pageBytes?.bytes ?? 4_096
            if page < 512 || page > 64 << 20 { out.append("workload.page_bytes: \(page) bytes is outside 512 bytes...64 MiB") }
            let capacity = s.workload.capacityPages ?? 1_000
            let prefixes = s.workload.prefixes ?? 20
            let perPrefix = s.workload.prefixPages ?? 8
            if capacity < 1 { out.append("workload.capacity_pages: must be at least 1") }
            if let d = s.workload.durability, KVDurability(d) == nil { out.append("workload.durability: '\(d)' is not cache or durable") }
            if prefixes < 1 || perPrefix < 1 { out.append("workload.prefixes and workload.prefix_pages: must be at least 1") }
            if let t = s.workload.tenants, !(1...8).contains(t) { out.append("workload.tenants: \(t) is outside 1...8") }
            let invariants = s.invariants ?? kvcacheInvariants
            if invariants.contains("no_lost_pages") && capacity < prefixes * perPrefix {
                out.append("invariants: no_lost_pages holds only under capacity, but capacity_pages (\(capacity)) is below prefixes x prefix_pages (\(prefixes * perPrefix)); raise the capacity or drop the invariant")
            }
        }
        if s.workload.kind == "cluster" || s.workload.kind == "storage" || s.workload.kind == "kvcache" {
            let mgmtds = s.topology.nodes.filter { $0.role == .mgmtd }.count
            let storage = s.topology.nodes.filter { $0.role == .storage }.count
            let chainReplicas = s.workload.replicas ?? 3
            if mgmtds == 0 { out.append("topology: the \(s.workload.kind) workload needs at least one node with role: mgmtd") }
            if chainReplicas < 1 || chainReplicas > 8 { out.append("workload.replicas: \(chainReplicas) is out of range 1...8") }
            if storage < chainReplicas { out.append("topology: \(chainReplicas) replicas per chain need at least \(chainReplicas) storage nodes; there are \(storage)") }
            if let hb = s.workload.heartbeatInterval, let ft = s.workload.failureTimeout, ft.nanoseconds < 2 * hb.nanoseconds {
                out.append("workload.failure_timeout: \(ft) is under two heartbeat intervals (\(hb)); one lost heartbeat would fail a healthy node")
            }
        }
        for (i, n) in s.topology.nodes.enumerated() {
            if let t = n.targets {
                if n.role != .storage { out.append("topology.nodes[\(i)].targets: only storage nodes have targets") }
                if !(1...64).contains(t) { out.append("topology.nodes[\(i)].targets: \(t) is out of range 1...64") }
            }
        }
        if let bug = s.workload.plantedBug {
            let bugs = ["register": ["stale_reads"], "cluster": ["early_takeover"], "storage": ["early_ack", "hasty_upgrade"], "kvcache": ["open_storage"]]
            if bugs[s.workload.kind]?.contains(bug) != true {
                out.append("workload.planted_bug: unknown bug '\(bug)' for the \(s.workload.kind) workload; \(bugs[s.workload.kind].map { "the planted bugs there are \($0.joined(separator: ", "))" } ?? "it has no planted bug")")
            }
            if bug == "hasty_upgrade" && s.rollingUpgrade == nil { out.append("workload.planted_bug: hasty_upgrade needs a rolling_upgrade") }
            if s.expectViolations != true && s.swarm == nil {
                out.append("workload.planted_bug: a planted bug needs expect_violations: true (or a swarm: block, to hunt it with random fault mixes)")
            }
        }
        if let k = s.workload.keys, !(1...10_000).contains(k) { out.append("workload.keys: \(k) is out of range 1...10000") }
        if let k = s.workload.chunks, !(1...10_000).contains(k) { out.append("workload.chunks: \(k) is out of range 1...10000") }
        if let b = s.workload.chunkBytes, b.bytes == 0 || b.bytes > 64 << 20 { out.append("workload.chunk_bytes: \(b.bytes) is outside 1 byte...64MiB (the largest chunk)") }
        if let r = s.workload.readFraction, !(0...1).contains(r) { out.append("workload.read_fraction: \(r) is not a probability (0...1)") }
        if s.duration.nanoseconds == 0 { out.append("duration: must be positive") }
        if s.duration > .seconds(24 * 3600) { out.append("duration: \(s.duration) is over the 24h limit") }
        if s.healTime > s.duration { out.append("heal_at: \(s.healTime) is after the end of the workload (\(s.duration))") }
        for inv in s.invariants ?? [] where !knownInvariants.contains(inv) {
            out.append("invariants: unknown invariant '\(inv)'; expected one of: \(knownInvariants.joined(separator: ", "))")
        }
        func probability(_ v: Double?, _ where_: String) {
            if let v, !(0...1).contains(v) { out.append("\(where_): \(v) is not a probability (0...1)") }
        }
        probability(s.network?.loss, "network.loss")
        probability(s.network?.duplicate, "network.duplicate")
        probability(s.network?.reorder, "network.reorder")
        probability(s.disk?.errorProbability, "disk.error_probability")
        probability(s.kv?.conflictProbability, "kv.conflict_probability")
        probability(s.kv?.maybeCommittedProbability, "kv.maybe_committed_probability")

        for (i, f) in (s.faults ?? []).enumerated() {
            out += faultProblems(f, at: "faults[\(i)]", names: names, duration: s.duration)
        }
        for (i, g) in (s.randomFaults ?? []).enumerated() {
            if g.kinds.isEmpty { out.append("random_faults[\(i)].kinds: list at least one fault kind") }
            if g.meanInterval.nanoseconds < 1_000_000 { out.append("random_faults[\(i)].mean_interval: \(g.meanInterval) is under the 1ms minimum") }
            if let u = g.until, u > s.duration { out.append("random_faults[\(i)].until: \(u) is after the end of the workload") }
            for k in g.kinds where !FaultPlan.randomKinds.contains(k) {
                out.append("random_faults[\(i)].kinds: '\(k.rawValue)' cannot be generated at random; use one of: \(FaultPlan.randomKinds.map(\.rawValue).joined(separator: ", "))")
            }
        }
        if let w = s.swarm {
            for k in w.kinds ?? [] where !FaultPlan.randomKinds.contains(k) {
                out.append("swarm.kinds: '\(k.rawValue)' cannot be generated at random; use some of: \(FaultPlan.randomKinds.map(\.rawValue).joined(separator: ", "))")
            }
            if w.kinds?.isEmpty == true { out.append("swarm.kinds: list at least one fault kind, or leave it out for all of them") }
            if let u = w.until, u > s.duration { out.append("swarm.until: \(u) is after the end of the workload (\(s.duration))") }
            else if let u = w.until, u > s.healTime { out.append("swarm.until: \(u) is after heal_at (\(s.healTime)); faults after the heal would eat into the liveness phase") }
            if let a = w.minInterval, a.nanoseconds < 1_000_000 { out.append("swarm.min_interval: \(a) is under the 1ms minimum") }
            if let a = w.minInterval, let b = w.maxInterval, a > b { out.append("swarm.min_interval: \(a) is above max_interval (\(b))") }
        }
        if let u = s.rollingUpgrade {
            if s.workload.kind != "storage" { out.append("rolling_upgrade: only the storage workload runs the operator") }
            if u.at >= s.duration { out.append("rolling_upgrade.at: \(u.at) is not before the end of the workload (\(s.duration))") }
            if let i = u.interval, i.nanoseconds < 10_000_000 { out.append("rolling_upgrade.interval: \(i) is under the 10ms minimum") }
            if s.topology.nodes.contains(where: { $0.startAt != nil }) { out.append("rolling_upgrade: storage nodes that join later are not upgraded; drop start_at or the upgrade") }
        }
        for (i, n) in s.topology.nodes.enumerated() {
            guard let at = n.startAt else { continue }
            if s.workload.kind != "storage" || n.role != .storage {
                out.append("topology.nodes[\(i)].start_at: only storage nodes of the storage workload can join later (it grows the chain table onto them)")
            }
            if at >= s.duration { out.append("topology.nodes[\(i)].start_at: \(at) is not before the end of the workload (\(s.duration))") }
        }
        guard out.isEmpty else { return out }
        // Faults beyond what the topology survives (timed faults; random ones are
        // generated within the budget).
        if s.expectViolations != true && s.allowTotalOutage != true {
            let plan = FaultPlan(scenario: s)
            if let problem = plan.survivabilityProblem(plan.timed) { out.append(problem) }
        }
        return out
    }

    static func faultProblems(_ f: FaultSpec, at path: String, names: [String: NodeRole], duration: SimDuration) -> [String] {
        var out: [String] = []
        func node(_ n: String?, required: Bool = true) {
            guard let n else {
                if required { out.append("\(path): '\(f.kind.rawValue)' needs a 'node'") }
                return
            }
            if n == "@mgmtd-primary" {
                if !names.values.contains(.mgmtd) { out.append("\(path).node: '@mgmtd-primary' needs nodes with role: mgmtd") }
                return
            }
            if n == "@chain-head" || n == "@chain-tail" {
                if !names.values.contains(.storage) { out.append("\(path).node: '\(n)' needs nodes with role: storage") }
                return
            }
            if names[n] == nil { out.append("\(path).node: unknown node '\(n)'; nodes are: \(names.keys.sorted().joined(separator: ", "))") }
        }
        func list(_ ns: [String], _ field: String) {
            for n in ns where names[n] == nil && !pseudoNodes.contains(n) {
                out.append("\(path).\(field): unknown node '\(n)'; nodes are: \(names.keys.sorted().joined(separator: ", "))")
            }
        }
        if f.at > duration { out.append("\(path).at: \(f.at) is after the end of the workload (\(duration))") }
        switch f.kind {
        case .kill, .crash, .restart, .resume, .bitFlip:
            node(f.node)
        case .pause:
            node(f.node)
        case .clog:
            node(f.node)
            if f.duration == nil { out.append("\(path): 'clog' needs a 'duration'") }
        case .ipChange:
            node(f.node)
        case .addressDown:
            node(f.node)
        case .slowDisk:
            node(f.node)
            if (f.factor ?? 0) < 1 { out.append("\(path): 'slow_disk' needs a 'factor' of at least 1 (for example 50)") }
        case .diskErrors:
            node(f.node)
            if f.probability == nil { out.append("\(path): 'disk_errors' needs a 'probability'") }
        case .loss:
            if f.probability == nil { out.append("\(path): 'loss' needs a 'probability'") }
        case .kvOutage:
            if f.duration == nil { out.append("\(path): 'kv_outage' needs a 'duration'") }
        case .clockSkew:
            node(f.node)
            if f.offset == nil && f.driftPPM == nil { out.append("\(path): 'clock_skew' needs an 'offset' (how far the clock jumps ahead, for example 300ms) or a 'drift_ppm' (for example 500)") }
            if let d = f.driftPPM, abs(d) > 100_000 { out.append("\(path).drift_ppm: \(d) is outside -100000...100000 (10%)") }
        case .partition:
            if let groups = f.groups {
                if groups.count < 2 { out.append("\(path).groups: a partition needs at least two groups") }
                let all = groups.flatMap { $0 }
                list(all, "groups")
                if Set(all).count != all.count { out.append("\(path).groups: a node appears in more than one group") }
            } else if let from = f.from, let to = f.to {
                list(from, "from")
                list(to, "to")
                if !Set(from).isDisjoint(with: to) { out.append("\(path): 'from' and 'to' share a node") }
            } else {
                out.append("\(path): 'partition' needs 'groups' (symmetric) or 'from' and 'to' (one way)")
            }
        case .heal:
            break
        }
        if let p = f.probability, !(0...1).contains(p) { out.append("\(path).probability: \(p) is not a probability (0...1)") }
        return out
    }
}
