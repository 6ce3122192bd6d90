import CisternCore
import CisternMgmtd
import CisternRouting
import CisternSim

/// One run of the cluster workload: cluster manager replicas sharing the KV store,
/// storage nodes heartbeating their targets, clients holding sessions and pulling
/// routing, and an admin that creates the chains. Faults come from the plan; the
/// recorder checks the invariants; failure detection time is measured per killed
/// storage node.
final class ClusterRun: @unchecked Sendable {
    let scenario: Scenario
    let world: SimWorld
    let seed: UInt64
    let plan: [PlannedFault]
    let recorder: ClusterRecorder
    let config: MgmtdConfig
    var mgmtdIDs: [NodeID] = []
    var clients: [NodeID: MgmtdClient] = [:]
    var bootstrapped = false
    var driver: FaultDriver!
    var storageKills: [(node: String, at: UInt64)] = []
    var storageRestarts: [(node: String, at: UInt64)] = []
    /// Nodes a fault could take away from the manager (killed, paused, cut off,
    /// clogged, failing their disk). Any other node declared failed is a false alarm.
    var faulted: Set<String> = []
    var targetCounter: UInt64 = 0

    init(scenario: Scenario, world: SimWorld, seed: UInt64) {
        self.scenario = scenario
        self.world = world
        self.seed = seed
        self.plan = FaultPlan(scenario: scenario).plan(seed: seed)
        self.recorder = ClusterRecorder(now: { [unowned world] in world.nowNanoseconds })
        var c = MgmtdConfig(scenario.workload)
        c.plantedEarlyTakeover = scenario.workload.plantedBug == "early_takeover"
        scenario.knobDraw?.apply(to: &c)
        self.config = c
    }

    var replicas: Int { scenario.workload.replicas ?? 3 }
    var detectionBound: UInt64 {
        scenario.workload.failureDetectionBound?.nanoseconds ?? (config.failureTimeoutNanoseconds + 2_000_000_000)
    }

    func execute() -> RunResult {
        for (i, spec) in scenario.topology.nodes.enumerated() {
            world.addNode(name: spec.name, host: spec.host ?? "10.0.\(i / 250).\(i % 250 + 1)", secondaryHosts: spec.secondaryHosts ?? [])
        }
        let admin = world.addNode(name: "_admin", host: "10.255.255.2")
        mgmtdIDs = scenario.topology.nodes.filter { $0.role == .mgmtd }.compactMap { try? world.node(named: $0.name).id }.sorted()
        let storageCount = scenario.topology.nodes.filter { $0.role == .storage }.count
        for spec in scenario.topology.nodes {
            guard let node = try? world.node(named: spec.name) else { continue }
            switch spec.role {
            case .mgmtd:
                node.boot = { [unowned self] ctx in
                    let m = await Mgmtd.start(id: ctx.node, runtime: ctx.runtime, transport: ctx.transport, kv: ctx.kv, config: self.config, observer: self.recorder)
                    ctx.retain(m)
                }
            case .storage:
                var targets: [TargetID] = []
                for _ in 0..<(spec.targets ?? 2) {
                    targetCounter += 1
                    targets.append(TargetID(UInt64(node.id.rawValue) * 100 + targetCounter % 100))
                }
                let fixed = targets
                node.boot = { [unowned self] ctx in
                    let client = self.makeClient(ctx, role: .storage)
                    let s = await StorageNodeStandIn.boot(
                        runtime: ctx.runtime, disk: ctx.disk, client: client, targets: fixed,
                        intervalNanoseconds: self.config.heartbeatIntervalNanoseconds, syncNanoseconds: 200_000_000)
                    ctx.retain(s)
                }
            case .client:
                node.boot = { [unowned self] ctx in await self.clientLoop(ctx) }
            case .register, .meta:
                break
            }
            world.start(node)
        }
        admin.boot = { [unowned self] ctx in await self.bootstrap(ctx, storageNodes: storageCount) }
        world.start(admin)
        let driver = FaultDriver(world: world, topology: scenario.topology.nodes.map(\.name))
        self.driver = driver
        driver.select = { [unowned self] name in
            name.hasPrefix("@mgmtd-primary") ? self.recorder.currentPrimary(at: self.world.nowNanoseconds).flatMap { self.world.node($0) } : nil
        }
        driver.onFault = { [unowned self] fault in self.noteFaulted(fault) }
        driver.onKill = { [unowned self] x in
            if self.isStorage(x) { self.storageKills.append((x.name, self.world.nowNanoseconds)) }
        }
        driver.onStart = { [unowned self] x in
            if self.isStorage(x) { self.storageRestarts.append((x.name, self.world.nowNanoseconds)) }
        }
        driver.schedule(plan)
        let limit = scenario.duration.nanoseconds + scenario.liveness.nanoseconds
        let stop = world.run(untilNanoseconds: limit)

        var violations: [String] = []
        var metrics: [String: Double] = [:]
        if case .tripwire(let reason) = stop { violations.append("determinism tripwire: \(reason)") }
        let invariants = Set(scenario.invariants ?? ScenarioValidator.clusterInvariants)
        if !bootstrapped { violations.append("liveness: the chains were never created (no primary served the admin)") }
        if invariants.contains("single_primary") { violations += recorder.overlappingPrimaries() }
        if invariants.contains("single_head") || invariants.contains("routing_monotonic") {
            violations += recorder.violations.filter { v in invariants.contains(String(v.prefix { $0 != ":" })) }
        }
        let (detectionViolations, detectionMetrics) = checkDetection()
        metrics.merge(detectionMetrics) { $1 }
        if invariants.contains("failure_detection") { violations += detectionViolations }
        if invariants.contains("liveness") { violations += checkConvergence() }
        if invariants.contains("no_false_failures") { violations += checkFalseFailures() }
        metrics["routing_versions"] = Double(recorder.lastCommitted?.version ?? 0)
        metrics["primaries"] = Double(Set(recorder.leases.map(\.epoch)).count)
        for v in violations { world.trace.note(.violation, at: world.nowNanoseconds, v) }

        var r = RunResult(scenario: scenario.name, seed: seed)
        r.digest = world.trace.digestHex
        r.simulatedSeconds = Double(world.nowNanoseconds) / 1e9
        r.events = world.trace.events
        r.messages = world.network.messagesSent
        r.operations = recorder.commits.count
        r.operationsSucceeded = recorder.commits.count
        r.faults = plan.count
        r.violations = violations
        r.metrics = metrics
        if world.trace.keepNotes {
            var rec = RunRecording.base(world: world, scenario: scenario)
            rec.add(recorder)
            r.recording = rec
        }
        return r
    }

    // MARK: Roles

    func makeClient(_ ctx: SimProcessContext, role: CisternRouting.NodeRole) -> MgmtdClient {
        let client = MgmtdClient(node: ctx.node, role: role, name: ctx.name, runtime: ctx.runtime, transport: ctx.transport, replicas: mgmtdIDs, observer: recorder)
        clients[ctx.node] = client
        return client
    }

    /// A client: holds a session (heartbeats) and pulls routing, as the file-system
    /// client will.
    func clientLoop(_ ctx: SimProcessContext) async {
        let client = makeClient(ctx, role: .client)
        await client.serveHints()
        while true {
            try? await client.heartbeat(targets: [])
            await client.refreshRouting()
            try? await ctx.runtime.sleep(nanoseconds: config.heartbeatIntervalNanoseconds)
        }
    }

    /// Waits until every storage node registered its targets, then creates the chains.
    func bootstrap(_ ctx: SimProcessContext, storageNodes: Int) async {
        let client = makeClient(ctx, role: .client)
        await client.serveHints()
        _ = await ClusterBootstrap.firstChains(client, storageNodes: storageNodes, replicas: replicas, runtime: ctx.runtime)
        bootstrapped = true
        while true {
            try? await client.heartbeat(targets: [])
            await client.refreshRouting()
            try? await ctx.runtime.sleep(nanoseconds: config.heartbeatIntervalNanoseconds)
        }
    }

    // MARK: Checks

    /// For each storage node killed and kept down past the bound: the time until
    /// routing showed it failed with its targets offline.
    func checkDetection() -> ([String], [String: Double]) {
        var out: [String] = []
        var worst: UInt64 = 0
        var count = 0
        for kill in storageKills {
            guard let node = try? world.node(named: kill.node) else { continue }
            let restart = storageRestarts.filter { $0.node == kill.node && $0.at > kill.at }.map(\.at).min() ?? UInt64.max
            guard restart >= kill.at + detectionBound else { continue }
            count += 1
            if let at = recorder.detection(of: node.id, after: kill.at) {
                // Measured from when the primary that detected it could first notice:
                // the kill, or that primary's takeover if it came later.
                let from = max(kill.at, recorder.primarySince(at: at) ?? 0)
                let took = at - from
                worst = max(worst, took)
                if took > detectionBound {
                    out.append("failure_detection: \(kill.node) killed at \(formatSeconds(kill.at)) was marked failed with its targets offline only at \(formatSeconds(at)), \(String(format: "%.2f", Double(took) / 1e9)) s after the primary could notice, over the \(SimDuration(nanoseconds: detectionBound)) bound")
                }
            } else {
                out.append("failure_detection: \(kill.node) killed at \(formatSeconds(kill.at)) was never marked failed with its targets offline")
            }
        }
        var metrics: [String: Double] = [:]
        if count > 0 { metrics["detection_max_seconds"] = Double(worst) / 1e9 }
        return (out, metrics)
    }

    /// Fault points that fail a node's calls to the manager (its heartbeats): a node
    /// they fired on was touched by a fault, as one under heavy message loss is.
    static let heartbeatFaultPoints: Set<String> = ["mgmtd.client.call.timeout"]

    /// Nodes no fault touched must never be declared failed (heartbeats must survive
    /// message loss, address changes and manager failovers).
    func checkFalseFailures() -> [String] {
        var out: [String] = []
        var reported: Set<NodeID> = []
        let pointed = Set(world.faultPoints.firedOn.filter { !$0.value.isDisjoint(with: Self.heartbeatFaultPoints) }.keys)
        for (at, r) in recorder.commits {
            for n in r.nodes where n.status == .failed && !faulted.contains(n.name) && !pointed.contains(n.name) && !n.name.hasPrefix("_") && !reported.contains(n.id) {
                reported.insert(n.id)
                out.append("no_false_failures: \(n.name) was declared failed at \(formatSeconds(at)) though no fault touched it")
            }
        }
        return out
    }

    /// At the end (after the heal and the liveness bound): every node active, every
    /// chain fully serving, and every live node on the last routing version.
    func checkConvergence() -> [String] {
        guard let last = recorder.lastCommitted else { return ["liveness: no routing was ever committed"] }
        var out: [String] = []
        for n in last.nodes where n.role != .mgmtd && n.status != .active && !n.name.hasPrefix("_") {
            out.append("liveness: \(n.name) is \(n.status) at the end, \(scenario.liveness) after the workload")
        }
        for c in last.chains where c.targets.contains(where: { $0.state != .serving }) {
            out.append("liveness: \(c) is not fully serving at the end")
            if out.count > 10 { break }
        }
        for node in world.nodes where node.process?.isRunning == true {
            guard let versions = recorder.acceptedVersions[node.id], node.name != "_admin" else { continue }
            if versions.last != last.version {
                out.append("liveness: \(node.name) is on routing version \(versions.last ?? 0), not the last committed \(last.version)")
            }
        }
        return out
    }

    // MARK: Faults

    func node(_ name: String) -> SimNode? { driver.resolve(name) }

    /// Remembers the nodes a fault could take away from the manager.
    func noteFaulted(_ fault: PlannedFault) {
        switch fault.action {
        case .kill(let n, _, _), .pause(let n), .clog(let n, _), .diskErrors(let n, _), .addressDown(let n, false), .slowDisk(let n, _):
            if let x = node(n) { faulted.insert(x.name) }
        case .partition(let a, let b, _):
            for name in a + b { if let x = node(name) { faulted.insert(x.name) } }
        case .loss(let p) where (p ?? 0) > 0.05:
            // Heavy loss everywhere: any node may legitimately miss its heartbeats.
            for x in world.nodes { faulted.insert(x.name) }
        default:
            break
        }
    }

    func isStorage(_ n: SimNode) -> Bool {
        scenario.topology.nodes.contains { $0.name == n.name && $0.role == .storage }
    }

}
