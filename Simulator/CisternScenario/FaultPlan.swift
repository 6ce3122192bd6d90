import CisternCore

/// One concrete fault action at a virtual time.
public struct PlannedFault: Sendable, Equatable {
    public enum Action: Sendable, Equatable {
        case kill(String, loseUnsynced: Bool, wipeDisk: Bool)
        case restart(String)
        case pause(String)
        case resume(String)
        case partition(from: [String], to: [String], oneWay: Bool)
        case unpartition(from: [String], to: [String], oneWay: Bool)
        case clog(String, nanoseconds: UInt64)
        case ipChange(String, host: String?)
        /// The node's primary address goes off the network (`up`: comes back).
        case addressDown(String, up: Bool)
        case slowDisk(String, factor: Double)
        case diskErrors(String, probability: Double)
        case bitFlip(String, prefix: String?)
        case loss(probability: Double?)
        case kvOutage(nanoseconds: UInt64)
        case clockSkew(String, jumpNanoseconds: UInt64, driftPPM: Int)
        case heal
    }

    public var atNanoseconds: UInt64
    public var action: Action
}

/// The faults of one run: the scenario's timed faults plus those its random
/// generators draw for the seed, in time order. Also answers whether a plan stays
/// within what the topology survives.
public struct FaultPlan: Sendable {
    /// Kinds the random generators may draw.
    public static let randomKinds: [FaultKind] = [.kill, .crash, .pause, .partition, .clog, .ipChange, .slowDisk, .diskErrors, .loss, .kvOutage, .clockSkew]
    /// The most a node's clock may be moved ahead over a run: clocks must agree within
    /// the lease margins (the cluster manager's 500 ms, the KV index's 1 s).
    public static let clockJumpBudgetNanoseconds: UInt64 = 400_000_000
    /// The largest drift a random clock fault draws (parts per million).
    public static let clockDriftMaxPPM = 2_000

    /// Nodes that share a failure budget: at most `tolerated` of them may be
    /// unavailable at once, and (where `dataLossMatters`) at most `tolerated` may
    /// lose their data over the whole run.
    struct Group {
        let label: String
        let members: Set<String>
        /// How many may be unavailable at once.
        let tolerated: Int
        /// How many may lose their data over the run (nil: data loss is not checked).
        let toleratedDataLoss: Int?
        /// Selector tokens (`@mgmtd-primary`, `@chain-head`, ...) that name a member.
        let selectors: [String]

        func contains(_ name: String) -> Bool {
            members.contains(name) || selectors.contains { name.hasPrefix($0) }
        }
    }

    public let scenario: Scenario
    public let timed: [PlannedFault]
    let groups: [Group]
    let allNodes: [String]
    /// Nodes random faults may take down (not clients).
    let faultable: [String]
    /// Nodes with one address: losing it takes them off the network.
    let singleHomed: Set<String>

    public init(scenario s: Scenario) {
        scenario = s
        func names(_ role: NodeRole) -> [String] { s.topology.nodes.filter { $0.role == role }.map(\.name) }
        let register = names(.register), mgmtd = names(.mgmtd), storage = names(.storage), meta = names(.meta)
        var groups: [Group] = []
        if !register.isEmpty {
            let f = (register.count - 1) / 2
            groups.append(Group(label: "register replicas", members: Set(register), tolerated: f, toleratedDataLoss: f, selectors: []))
        }
        if !mgmtd.isEmpty {
            groups.append(Group(label: "mgmtd replicas", members: Set(mgmtd), tolerated: mgmtd.count - 1, toleratedDataLoss: nil, selectors: ["@mgmtd-primary"]))
        }
        if !meta.isEmpty {
            groups.append(Group(label: "metadata servers", members: Set(meta), tolerated: meta.count - 1, toleratedDataLoss: nil, selectors: []))
        }
        if !storage.isEmpty {
            let replicas = s.workload.replicas ?? 3
            if s.workload.kind == "storage" {
                // Every replica of a chain may be down at once (the LASTSRV keeps the
                // data; only availability suffers), but a chain survives losing the
                // disks of at most replicas - 1 of them.
                groups.append(Group(label: "storage nodes (chains of \(replicas))", members: Set(storage), tolerated: storage.count, toleratedDataLoss: replicas - 1, selectors: ["@chain-"]))
            } else {
                groups.append(Group(label: "storage nodes (chains of \(replicas))", members: Set(storage), tolerated: max(0, replicas - 1), toleratedDataLoss: nil, selectors: ["@chain-"]))
            }
        }
        self.groups = groups
        allNodes = s.topology.nodes.map(\.name)
        faultable = register + mgmtd + storage + meta
        singleHomed = Set(s.topology.nodes.filter { ($0.secondaryHosts ?? []).isEmpty }.map(\.name))
            .union(mgmtd.allSatisfy { n in !(s.topology.nodes.first { $0.name == n }?.secondaryHosts ?? []).isEmpty } ? [] : ["@mgmtd-primary"])
        var events: [PlannedFault] = []
        for (i, f) in (s.faults ?? []).enumerated() { events += Self.expand(f, token: i, allNodes: allNodes) }
        events.append(PlannedFault(atNanoseconds: s.healTime.nanoseconds, action: .heal))
        timed = Self.sorted(events)
    }

    static func sorted(_ events: [PlannedFault]) -> [PlannedFault] {
        events.enumerated().sorted { ($0.element.atNanoseconds, $0.offset) < ($1.element.atNanoseconds, $1.offset) }.map(\.element)
    }

    /// The concrete actions of one scenario fault (with its undo, if it has a duration).
    /// `@mgmtd-primary` becomes `@mgmtd-primary#token`, so the undo reaches the node
    /// the fault hit even after another replica became primary.
    /// In partitions, `*` stands for every node not named in the other groups, and the KV.
    static func expand(_ spec: FaultSpec, token: Int, allNodes: [String]) -> [PlannedFault] {
        var f = spec
        func tokenized(_ name: String) -> String { name.hasPrefix("@") && !name.contains("#") ? "\(name)#\(token)" : name }
        func swap(_ names: [String]) -> [String] { names.map(tokenized) }
        f.node = f.node.map(tokenized)
        if let groups = f.groups {
            var swapped = groups.map(swap)
            for i in swapped.indices where swapped[i].contains("*") {
                let others = Set(swapped.enumerated().filter { $0.offset != i }.flatMap(\.element))
                swapped[i] = swapped[i].filter { $0 != "*" } + allNodes.filter { !others.contains($0) } + ["kv"]
            }
            f.groups = swapped
        }
        f.from = f.from.map(swap)
        f.to = f.to.map(swap)
        let t = f.at.nanoseconds
        let end = f.duration.map { t &+ $0.nanoseconds }
        var out: [PlannedFault] = []
        func add(_ a: PlannedFault.Action, at time: UInt64? = nil) { out.append(PlannedFault(atNanoseconds: time ?? t, action: a)) }
        switch f.kind {
        case .kill, .crash:
            add(.kill(f.node!, loseUnsynced: f.kind == .crash, wipeDisk: f.wipeDisk ?? false))
            if let end { add(.restart(f.node!), at: end) }
        case .restart: add(.restart(f.node!))
        case .pause:
            add(.pause(f.node!))
            if let end { add(.resume(f.node!), at: end) }
        case .resume: add(.resume(f.node!))
        case .partition:
            var pairs: [([String], [String], Bool)] = []
            if let groups = f.groups {
                for i in 0..<groups.count {
                    for j in (i + 1)..<groups.count { pairs.append((groups[i], groups[j], false)) }
                }
            } else {
                pairs.append((f.from ?? [], f.to ?? [], true))
            }
            for (a, b, oneWay) in pairs {
                add(.partition(from: a, to: b, oneWay: oneWay))
                if let end { add(.unpartition(from: a, to: b, oneWay: oneWay), at: end) }
            }
        case .clog: add(.clog(f.node!, nanoseconds: f.duration?.nanoseconds ?? 0))
        case .ipChange: add(.ipChange(f.node!, host: f.host))
        case .addressDown:
            add(.addressDown(f.node!, up: false))
            if let end { add(.addressDown(f.node!, up: true), at: end) }
        case .slowDisk:
            add(.slowDisk(f.node!, factor: f.factor ?? 1))
            if let end { add(.slowDisk(f.node!, factor: 1), at: end) }
        case .diskErrors:
            add(.diskErrors(f.node!, probability: f.probability ?? 0))
            if let end { add(.diskErrors(f.node!, probability: 0), at: end) }
        case .bitFlip: add(.bitFlip(f.node!, prefix: f.path))
        case .loss:
            add(.loss(probability: f.probability))
            if let end { add(.loss(probability: nil), at: end) }
        case .kvOutage: add(.kvOutage(nanoseconds: f.duration?.nanoseconds ?? 0))
        case .clockSkew:
            add(.clockSkew(f.node!, jumpNanoseconds: f.offset?.nanoseconds ?? 0, driftPPM: f.driftPPM ?? 0))
            if let end, f.driftPPM ?? 0 != 0 { add(.clockSkew(f.node!, jumpNanoseconds: 0, driftPPM: 0), at: end) }
        case .heal: add(.heal)
        }
        return out
    }

    /// The full plan for `seed`: timed faults plus random ones, each random fault
    /// kept only if the plan still stays within what the topology survives.
    public func plan(seed: UInt64) -> [PlannedFault] { draw(seed: seed).events }

    /// What a seed draws: the fault specs (the scenario's timed ones, then the random
    /// ones kept, in order), their actions in time order, and for swarm scenarios the
    /// mix the seed chose. Writing `specs` as the timed faults of a scenario without
    /// generators replays the same faults (that is how shrinking works).
    public struct Draw: Sendable {
        public var specs: [FaultSpec]
        public var events: [PlannedFault]
        public var mix: String?
    }

    public func draw(seed: UInt64) -> Draw {
        var events = timed
        var specs = scenario.faults ?? []
        var rng = DeterministicRandom(seed: seed).fork("scenario.random-faults")
        var token = 10_000
        var generators = scenario.randomFaults ?? []
        var mix: String?
        if let swarm = scenario.swarm {
            let g = swarmGenerator(swarm, seed: seed)
            generators.append(g)
            mix = "\(g.kinds.map(\.rawValue).joined(separator: "+")) every ~\(g.meanInterval) for up to \(g.maxDuration ?? .seconds(2)), severity \(String(format: "%.2f", g.severity ?? 1))"
        }
        for g in generators {
            let until = (g.until ?? scenario.healTime).nanoseconds
            var t = (g.from ?? SimDuration(nanoseconds: 0)).nanoseconds
            let maxDuration = (g.maxDuration ?? .seconds(2)).nanoseconds
            while true {
                t &+= UInt64(-Double(g.meanInterval.nanoseconds) * log(max(rng.unit(), 1e-12)))
                guard t < until else { break }
                let kind = g.kinds[Int.random(in: 0..<g.kinds.count, using: &rng)]
                let length = UInt64.random(in: min(100_000_000, maxDuration)...maxDuration, using: &rng)
                token += 1
                let spec = randomFault(kind, at: t, length: min(length, until - t), severity: g.severity ?? 1, rng: &rng)
                let trial = Self.sorted(events + Self.expand(spec, token: token, allNodes: allNodes))
                if survivabilityProblem(trial) == nil {
                    events = trial
                    specs.append(spec)
                }
            }
        }
        return Draw(specs: specs, events: events, mix: mix)
    }

    /// The generator a swarm seed draws: a random non-empty subset of the pool, a
    /// log-uniform mean interval, a maximum fault length and a severity.
    func swarmGenerator(_ swarm: Swarm, seed: UInt64) -> RandomFaults {
        var rng = DeterministicRandom(seed: seed).fork("scenario.swarm")
        let pool = (swarm.kinds ?? Self.randomKinds).filter { Self.randomKinds.contains($0) }
        var kinds = pool.filter { _ in rng.unit() < 0.5 }
        if kinds.isEmpty && !pool.isEmpty { kinds = [pool[Int.random(in: 0..<pool.count, using: &rng)]] }
        let lo = Double((swarm.minInterval ?? .seconds(0.3)).nanoseconds), hi = Double((swarm.maxInterval ?? .seconds(3)).nanoseconds)
        let interval = exp(log(lo) + rng.unit() * (log(max(hi, lo)) - log(lo)))
        let longest = Double((swarm.maxDuration ?? .seconds(4)).nanoseconds)
        let maxDuration = max(200_000_000, longest * (0.25 + 0.75 * rng.unit()))
        let severity = 0.2 + 0.8 * rng.unit()
        return RandomFaults(kinds: kinds, meanInterval: SimDuration(nanoseconds: max(1_000_000, UInt64(interval) / 1_000_000 * 1_000_000)), from: swarm.from, until: swarm.until,
                            maxDuration: SimDuration(nanoseconds: UInt64(maxDuration) / 1_000_000 * 1_000_000), severity: (severity * 100).rounded() / 100)
    }

    func randomFault(_ kind: FaultKind, at t: UInt64, length: UInt64, severity: Double, rng: inout DeterministicRandom) -> FaultSpec {
        let pickFrom = [.ipChange, .clog, .clockSkew].contains(kind) || faultable.isEmpty ? allNodes : faultable
        let node = pickFrom[Int.random(in: 0..<pickFrom.count, using: &rng)]
        // Whole milliseconds, so a spec written out as YAML reads back the same.
        var f = FaultSpec(at: SimDuration(nanoseconds: t / 1_000_000 * 1_000_000), kind: kind, node: node)
        f.duration = SimDuration(nanoseconds: max(length / 1_000_000, 1) * 1_000_000)
        let sev = max(0.05, min(1, severity))
        switch kind {
        case .kill, .crash: break
        case .partition:
            f.node = nil
            f.groups = [[node], allNodes.filter { $0 != node }]
        case .slowDisk: f.factor = Double(Int.random(in: 2...max(2, Int(50 * sev)), using: &rng))
        case .diskErrors: f.probability = Double(Int.random(in: 1...max(1, Int(20 * sev)), using: &rng)) / 100
        case .loss:
            f.node = nil
            f.probability = Double(Int.random(in: 1...max(1, Int(10 * sev)), using: &rng)) / 100
        case .kvOutage: f.node = nil
        case .ipChange: f.duration = nil
        case .clockSkew:
            f.offset = SimDuration(nanoseconds: UInt64(Int.random(in: 0...max(1, Int(200 * sev)), using: &rng)) * 1_000_000)
            let drift = Int(Double(Self.clockDriftMaxPPM) * sev)
            f.driftPPM = Int.random(in: -drift...drift, using: &rng)
        default: break
        }
        return f
    }

    /// Walks `events` and reports the first moment a group has more members
    /// unavailable (killed, paused, failing their disk, or cut off by a partition)
    /// than it tolerates, or more members that lost their data than it tolerates.
    public func survivabilityProblem(_ events: [PlannedFault]) -> String? {
        guard !groups.isEmpty else { return nil }
        var killed: Set<String> = [], paused: Set<String> = [], failing: Set<String> = []
        var partitions: [(from: [String], to: [String], oneWay: Bool)] = []
        var amnesia: Set<String> = []
        var clockJumps: [String: UInt64] = [:]
        for e in events {
            switch e.action {
            case .clockSkew(let n, let jump, let drift):
                clockJumps[n, default: 0] += jump
                if clockJumps[n]! > Self.clockJumpBudgetNanoseconds || abs(drift) > 100_000 {
                    return "faults beyond what the protocol survives: by \(SimDuration(nanoseconds: e.atNanoseconds)) \(n)'s clock ran \(SimDuration(nanoseconds: clockJumps[n]!)) ahead (or drifts \(drift) ppm), but leases assume clocks within \(SimDuration(nanoseconds: Self.clockJumpBudgetNanoseconds)) and drift within 10%; use smaller offsets, or set expect_violations: true if the failure is intended"
                }
            case .kill(let n, _, let wipe):
                killed.insert(n)
                if wipe { amnesia.insert(n) }
            case .restart(let n): killed.remove(n)
            case .pause(let n): paused.insert(n)
            case .resume(let n): paused.remove(n)
            case .addressDown(let n, let up):
                if singleHomed.contains(n) || (n.hasPrefix("@mgmtd-primary") && singleHomed.contains("@mgmtd-primary")) {
                    if up { paused.remove(n) } else { paused.insert(n) }
                }
            case .diskErrors(let n, let p): if p > 0 { failing.insert(n) } else { failing.remove(n) }
            case .bitFlip(let n, _): amnesia.insert(n)
            case .partition(let a, let b, let oneWay): partitions.append((a, b, oneWay))
            case .unpartition(let a, let b, let oneWay):
                if let i = partitions.firstIndex(where: { $0.from == a && $0.to == b && $0.oneWay == oneWay }) { partitions.remove(at: i) }
            case .heal:
                killed.removeAll(); paused.removeAll(); failing.removeAll(); partitions.removeAll()
            default: break
            }
            for g in groups {
                var cutOff: Set<String> = []
                for p in partitions {
                    let from = p.from.filter(g.contains), to = p.to.filter(g.contains)
                    if g.label.hasPrefix("mgmtd") && (p.from.contains("kv") || p.to.contains("kv")) {
                        // A replica cut off from the KV store cannot hold the lease.
                        cutOff.formUnion(p.from.contains("kv") ? to : from)
                    } else {
                        cutOff.formUnion(from.count <= to.count ? from : to)
                    }
                }
                let down = killed.union(paused).union(failing).union(cutOff).filter(g.contains)
                if down.count > g.tolerated {
                    return "faults beyond what the topology survives: at \(SimDuration(nanoseconds: e.atNanoseconds)) \(g.label) \(down.sorted().joined(separator: ", ")) are unavailable together, but the \(g.members.count) \(g.label) tolerate \(g.tolerated); spread the faults out, add nodes, or set expect_violations: true if the failure is intended"
                }
                let lost = amnesia.filter(g.contains)
                if let limit = g.toleratedDataLoss, lost.count > limit {
                    return "faults beyond what the topology survives: by \(SimDuration(nanoseconds: e.atNanoseconds)) \(g.label) \(lost.sorted().joined(separator: ", ")) lost data (wiped disk or bit flip), but the \(g.members.count) \(g.label) tolerate \(limit); set expect_violations: true if data loss is intended"
                }
            }
        }
        return nil
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
