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
        case slowDisk(String, factor: Double)
        case diskErrors(String, probability: Double)
        case bitFlip(String)
        case loss(probability: Double?)
        case kvOutage(nanoseconds: UInt64)
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
    public static let randomKinds: [FaultKind] = [.kill, .crash, .pause, .partition, .clog, .ipChange, .slowDisk, .diskErrors, .loss, .kvOutage]

    public let scenario: Scenario
    public let timed: [PlannedFault]
    let replicas: [String]
    let allNodes: [String]
    /// Replicas that may be unavailable at once (a majority must stay).
    public let failuresTolerated: Int

    public init(scenario s: Scenario) {
        scenario = s
        replicas = s.topology.nodes.filter { $0.role == .register }.map(\.name)
        allNodes = s.topology.nodes.map(\.name)
        failuresTolerated = max(0, (replicas.count - 1) / 2)
        var events: [PlannedFault] = []
        for f in s.faults ?? [] { events += Self.expand(f, nodes: allNodes, replicas: replicas) }
        events.append(PlannedFault(atNanoseconds: s.healTime.nanoseconds, action: .heal))
        timed = Self.sorted(events)
    }

    static func sorted(_ events: [PlannedFault]) -> [PlannedFault] {
        events.enumerated().sorted { ($0.element.atNanoseconds, $0.offset) < ($1.element.atNanoseconds, $1.offset) }.map(\.element)
    }

    /// The concrete actions of one scenario fault (with its undo, if it has a duration).
    static func expand(_ f: FaultSpec, nodes: [String], replicas: [String]) -> [PlannedFault] {
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
        case .slowDisk:
            add(.slowDisk(f.node!, factor: f.factor ?? 1))
            if let end { add(.slowDisk(f.node!, factor: 1), at: end) }
        case .diskErrors:
            add(.diskErrors(f.node!, probability: f.probability ?? 0))
            if let end { add(.diskErrors(f.node!, probability: 0), at: end) }
        case .bitFlip: add(.bitFlip(f.node!))
        case .loss:
            add(.loss(probability: f.probability))
            if let end { add(.loss(probability: nil), at: end) }
        case .kvOutage: add(.kvOutage(nanoseconds: f.duration?.nanoseconds ?? 0))
        case .heal: add(.heal)
        }
        return out
    }

    /// The full plan for `seed`: timed faults plus random ones, each random fault
    /// kept only if the plan still stays within what the topology survives.
    public func plan(seed: UInt64) -> [PlannedFault] {
        var events = timed
        var rng = DeterministicRandom(seed: seed).fork("scenario.random-faults")
        for g in scenario.randomFaults ?? [] {
            let until = (g.until ?? scenario.healTime).nanoseconds
            var t = (g.from ?? SimDuration(nanoseconds: 0)).nanoseconds
            let maxDuration = (g.maxDuration ?? .seconds(2)).nanoseconds
            while true {
                t &+= UInt64(-Double(g.meanInterval.nanoseconds) * log(max(rng.unit(), 1e-12)))
                guard t < until else { break }
                let kind = g.kinds[Int.random(in: 0..<g.kinds.count, using: &rng)]
                let length = UInt64.random(in: min(100_000_000, maxDuration)...maxDuration, using: &rng)
                let candidate = randomFault(kind, at: t, length: min(length, until - t), rng: &rng)
                let trial = Self.sorted(events + candidate)
                if survivabilityProblem(trial) == nil { events = trial }
            }
        }
        return events
    }

    func randomFault(_ kind: FaultKind, at t: UInt64, length: UInt64, rng: inout DeterministicRandom) -> [PlannedFault] {
        let pickFrom = [.ipChange, .clog].contains(kind) ? allNodes : (replicas.isEmpty ? allNodes : replicas)
        let node = pickFrom[Int.random(in: 0..<pickFrom.count, using: &rng)]
        var f = FaultSpec(at: SimDuration(nanoseconds: t), kind: kind, node: node)
        f.duration = SimDuration(nanoseconds: max(length, 1_000_000))
        switch kind {
        case .kill, .crash: break
        case .partition:
            f.node = nil
            f.groups = [[node], allNodes.filter { $0 != node }]
        case .slowDisk: f.factor = Double(Int.random(in: 5...50, using: &rng))
        case .diskErrors: f.probability = Double(Int.random(in: 1...20, using: &rng)) / 100
        case .loss:
            f.node = nil
            f.probability = Double(Int.random(in: 1...10, using: &rng)) / 100
        case .kvOutage: f.node = nil
        case .ipChange: f.duration = nil
        default: break
        }
        return Self.expand(f, nodes: allNodes, replicas: replicas)
    }

    /// Walks `events` and reports the first moment more replicas are unavailable
    /// (killed, paused, failing their disk, cut off by a partition) than a majority
    /// quorum tolerates, or more replicas lost their data than it tolerates.
    public func survivabilityProblem(_ events: [PlannedFault]) -> String? {
        guard !replicas.isEmpty else { return nil }
        var killed: Set<String> = [], paused: Set<String> = [], failing: Set<String> = []
        var partitions: [(from: [String], to: [String], oneWay: Bool)] = []
        var amnesia: Set<String> = []
        let replicaSet = Set(replicas)
        for e in events {
            switch e.action {
            case .kill(let n, _, let wipe):
                killed.insert(n)
                if wipe && replicaSet.contains(n) { amnesia.insert(n) }
            case .restart(let n): killed.remove(n)
            case .pause(let n): paused.insert(n)
            case .resume(let n): paused.remove(n)
            case .diskErrors(let n, let p): if p > 0 { failing.insert(n) } else { failing.remove(n) }
            case .bitFlip(let n): if replicaSet.contains(n) { amnesia.insert(n) }
            case .partition(let a, let b, let oneWay): partitions.append((a, b, oneWay))
            case .unpartition(let a, let b, let oneWay):
                if let i = partitions.firstIndex(where: { $0.from == a && $0.to == b && $0.oneWay == oneWay }) { partitions.remove(at: i) }
            case .heal:
                killed.removeAll(); paused.removeAll(); failing.removeAll(); partitions.removeAll()
            default: break
            }
            var cutOff: Set<String> = []
            for p in partitions {
                let fromReplicas = p.from.filter(replicaSet.contains).count
                let toReplicas = p.to.filter(replicaSet.contains).count
                let minority = fromReplicas <= toReplicas ? p.from : p.to
                cutOff.formUnion(minority.filter(replicaSet.contains))
            }
            let down = killed.union(paused).union(failing).union(cutOff).intersection(replicaSet)
            if down.count > failuresTolerated {
                return "faults beyond what the topology survives: at \(SimDuration(nanoseconds: e.atNanoseconds)) replicas \(down.sorted().joined(separator: ", ")) are unavailable together, but \(replicas.count) register replicas tolerate \(failuresTolerated); spread the faults out, add replicas, or set expect_violations: true if the failure is intended"
            }
            if amnesia.count > failuresTolerated {
                return "faults beyond what the topology survives: by \(SimDuration(nanoseconds: e.atNanoseconds)) replicas \(amnesia.sorted().joined(separator: ", ")) lost data (wiped disk or bit flip), but \(replicas.count) register replicas tolerate \(failuresTolerated); set expect_violations: true if data loss is intended"
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
