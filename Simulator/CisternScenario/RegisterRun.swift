import CisternCore
import CisternDemo
import CisternSim

/// One run of the register workload: builds the world from the topology, boots
/// replicas and clients, applies the fault plan, reads every key after the
/// workload ends, and checks the history.
final class RegisterRun: @unchecked Sendable {
    let scenario: Scenario
    let world: SimWorld
    let seed: UInt64
    let history = History()
    let plan: [PlannedFault]
    var replicaIDs: [NodeID] = []
    var verifierDone = false
    var verifierFailures: [String] = []
    var bootFailures: [String] = []

    init(scenario: Scenario, world: SimWorld, seed: UInt64) {
        self.scenario = scenario
        self.world = world
        self.seed = seed
        self.plan = FaultPlan(scenario: scenario).plan(seed: seed)
    }

    var keys: Int { scenario.workload.keys ?? 4 }
    var durationNanoseconds: UInt64 { scenario.duration.nanoseconds }

    func execute() -> RunResult {
        for (i, spec) in scenario.topology.nodes.enumerated() {
            world.addNode(name: spec.name, host: spec.host ?? "10.0.\(i / 250).\(i % 250 + 1)", secondaryHosts: spec.secondaryHosts ?? [])
        }
        let verifier = world.addNode(name: "_verifier", host: "10.255.255.1")
        replicaIDs = scenario.topology.nodes.filter { $0.role == .register }.compactMap { try? world.node(named: $0.name).id }.sorted()
        for spec in scenario.topology.nodes {
            guard let node = try? world.node(named: spec.name) else { continue }
            switch spec.role {
            case .register: node.boot = { [unowned self] ctx in await self.bootReplica(ctx) }
            case .client: node.boot = { [unowned self] ctx in await self.clientLoop(ctx) }
            case .mgmtd, .storage, .meta: break
            }
            world.start(node)
        }
        verifier.boot = { [unowned self] ctx in await self.verify(ctx) }
        FaultDriver(world: world, topology: scenario.topology.nodes.map(\.name)).schedule(plan)
        world.executor.schedule(at: durationNanoseconds) { [unowned self] in self.world.start(verifier) }
        let limit = durationNanoseconds + scenario.liveness.nanoseconds + 1_000_000_000
        let stop = world.run(untilNanoseconds: limit) { [unowned self] in self.verifierDone }

        var violations: [String] = []
        if case .tripwire(let reason) = stop { violations.append("determinism tripwire: \(reason)") }
        let invariants = Set(scenario.invariants ?? ScenarioValidator.registerInvariants)
        if invariants.contains("linearizable") || invariants.contains("no_lost_writes") {
            violations += LinearizabilityChecker.check(history)
        }
        if invariants.contains("liveness") || invariants.contains("no_lost_writes") {
            violations += livenessViolations()
        }
        if invariants.contains("liveness") {
            violations += history.pendingAfterHeal(scenario, world: world)
        }
        violations += bootFailures
        for v in violations { world.trace.note(.violation, at: world.nowNanoseconds, v) }

        var r = RunResult(scenario: scenario.name, seed: seed)
        r.digest = world.trace.digestHex
        r.simulatedSeconds = Double(world.nowNanoseconds) / 1e9
        r.events = world.trace.events
        r.messages = world.network.messagesSent
        r.operations = history.operations.count
        r.operationsSucceeded = history.operations.filter { $0.succeeded == true }.count
        r.faults = plan.count
        r.violations = violations
        if world.trace.keepNotes {
            var rec = RunRecording.base(world: world, scenario: scenario)
            rec.add(history)
            r.recording = rec
        }
        return r
    }

    // MARK: Roles

    func bootReplica(_ ctx: SimProcessContext) async {
        let log = ctx.runtime.logger("register")
        for attempt in 1...50 {
            do {
                let replica = try await RegisterReplica.boot(runtime: ctx.runtime, disk: ctx.disk, transport: ctx.transport)
                ctx.retain(replica)
                return
            } catch {
                log.warning("replica boot attempt \(attempt) failed: \(error)")
                try? await ctx.runtime.sleep(nanoseconds: 100_000_000)
            }
        }
        bootFailures.append("\(ctx.name) could not recover its register log after 50 attempts")
    }

    func clientLoop(_ ctx: SimProcessContext) async {
        let incarnation = ctx.process.incarnation
        let writer = (ctx.node.rawValue << 16) | UInt32(truncatingIfNeeded: incarnation & 0xFFFF)
        let timeout = (scenario.workload.opTimeout ?? SimDuration(nanoseconds: 500_000_000)).nanoseconds
        let client = RegisterClient(runtime: ctx.runtime, transport: ctx.transport, replicas: replicaIDs, writerID: writer, timeoutNanoseconds: timeout, plantedStaleReads: scenario.workload.plantedBug == "stale_reads")
        var rng = ctx.runtime.random("workload")
        let readFraction = scenario.workload.readFraction ?? 0.5
        let think = Double((scenario.workload.thinkTime ?? SimDuration(nanoseconds: 5_000_000)).nanoseconds)
        var n = 0
        while self.world.nowNanoseconds < durationNanoseconds {
            let key = "k\(Int.random(in: 0..<keys, using: &rng))"
            let now = self.world.nowNanoseconds
            if rng.unit() < readFraction {
                let i = history.invoke(client: ctx.name, incarnation: incarnation, key: key, kind: .read, value: nil, at: now)
                do {
                    let v = try await client.read(key)
                    history.complete(i, at: self.world.nowNanoseconds, succeeded: true, readValue: .some(v))
                } catch {
                    history.complete(i, at: self.world.nowNanoseconds, succeeded: false)
                }
            } else {
                n += 1
                let value = "\(ctx.name).\(incarnation).\(n)"
                let i = history.invoke(client: ctx.name, incarnation: incarnation, key: key, kind: .write, value: value, at: now)
                do {
                    try await client.write(key, value)
                    history.complete(i, at: self.world.nowNanoseconds, succeeded: true)
                } catch {
                    history.complete(i, at: self.world.nowNanoseconds, succeeded: false)
                }
            }
            let pause = UInt64(-think * log(max(rng.unit(), 1e-12)))
            try? await ctx.runtime.sleep(nanoseconds: pause)
        }
    }

    /// After the workload: read every key until it succeeds (these reads are checked
    /// like any other, so a lost acknowledged write shows up as a stale read).
    func verify(_ ctx: SimProcessContext) async {
        let client = RegisterClient(runtime: ctx.runtime, transport: ctx.transport, replicas: replicaIDs, writerID: ctx.node.rawValue << 16, timeoutNanoseconds: 500_000_000)
        for k in 0..<keys {
            let key = "k\(k)"
            while true {
                let i = history.invoke(client: ctx.name, incarnation: ctx.process.incarnation, key: key, kind: .read, value: nil, at: self.world.nowNanoseconds)
                do {
                    let v = try await client.read(key)
                    history.complete(i, at: self.world.nowNanoseconds, succeeded: true, readValue: .some(v))
                    break
                } catch {
                    history.complete(i, at: self.world.nowNanoseconds, succeeded: false)
                    try? await ctx.runtime.sleep(nanoseconds: 100_000_000)
                }
            }
        }
        verifierDone = true
    }

    // MARK: Checks

    func livenessViolations() -> [String] {
        var out: [String] = []
        let heal = scenario.healTime.nanoseconds
        let bound = scenario.liveness.nanoseconds
        let end = world.nowNanoseconds
        if !verifierDone {
            out.append("liveness: the final reads of every key did not all succeed within \(scenario.liveness) after the workload ended (\(keys) keys)")
        }
        for op in history.operations {
            let from = max(op.invokedNanoseconds, heal)
            if let done = op.completedNanoseconds {
                if done > from, done - from > bound {
                    out.append("liveness: \(op.client) \(op.kind) of \(op.key) invoked at \(formatSeconds(op.invokedNanoseconds)) took until \(formatSeconds(done)), over the \(scenario.liveness) bound after heal")
                }
            } else if let node = try? world.node(named: op.client), let p = node.process, p.incarnation == op.incarnation, p.isRunning, end > from, end - from > bound {
                out.append("liveness: \(op.client) \(op.kind) of \(op.key) invoked at \(formatSeconds(op.invokedNanoseconds)) never completed (bound \(scenario.liveness) after heal)")
            }
            if out.count >= 20 { break }
        }
        return out
    }

}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
