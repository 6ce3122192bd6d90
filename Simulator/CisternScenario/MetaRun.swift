import CisternCore
import CisternMeta
import CisternRouting
import CisternSim

/// One run of the metadata workload: stateless metadata servers over the shared
/// transactional KV, and clients each working sequentially in their own directory
/// through any server (retrying the same request after a failure). Each client's
/// directory must end exactly as a sequential model of its acknowledged operations
/// says (every accepted operation legal in the model, every refusal refused by it),
/// and the whole namespace must pass the audit: no dangling entry, no orphaned inode,
/// no cycle.
final class MetaRun: @unchecked Sendable {
    let scenario: Scenario
    let world: SimWorld
    let seed: UInt64
    let plan: [PlannedFault]
    var servers: [NodeID] = []
    var models: [String: NamespaceModel] = [:]
    var violations: [String] = []
    var finishedClients = 0
    var clientCount = 0
    var operations = 0
    var succeeded = 0
    var opLog: [RunRecording.Operation] = []
    var verifierDone = false

    init(scenario: Scenario, world: SimWorld, seed: UInt64) {
        self.scenario = scenario
        self.world = world
        self.seed = seed
        self.plan = FaultPlan(scenario: scenario).plan(seed: seed)
    }

    static let policy = LayoutPolicy(table: 1, tableVersion: 1, chains: (1...8).map { ChainID($0) }, chunkBytes: 1 << 20, stripe: 3)

    func execute() -> RunResult {
        for (i, spec) in scenario.topology.nodes.enumerated() {
            world.addNode(name: spec.name, host: spec.host ?? "10.0.\(i / 250).\(i % 250 + 1)", secondaryHosts: spec.secondaryHosts ?? [])
        }
        let verifier = world.addNode(name: "_verifier", host: "10.255.255.3")
        servers = scenario.topology.nodes.filter { $0.role == .meta }.compactMap { try? world.node(named: $0.name).id }.sorted()
        for spec in scenario.topology.nodes {
            guard let node = try? world.node(named: spec.name) else { continue }
            switch spec.role {
            case .meta:
                node.boot = { ctx in
                    let m = MetaService(kv: ctx.kv, runtime: ctx.runtime, policy: Self.policy)
                    await m.serve(on: ctx.transport)
                    ctx.retain(m)
                }
            case .client:
                clientCount += 1
                node.boot = { [unowned self] ctx in await self.clientLoop(ctx) }
            default:
                break
            }
            world.start(node)
        }
        verifier.boot = { [unowned self] ctx in await self.verify(ctx) }
        FaultDriver(world: world, topology: scenario.topology.nodes.map(\.name)).schedule(plan)
        world.executor.schedule(at: scenario.duration.nanoseconds) { [unowned self] in self.world.start(verifier) }
        let stop = world.run(untilNanoseconds: scenario.duration.nanoseconds + scenario.liveness.nanoseconds) { [unowned self] in self.verifierDone }
        if case .tripwire(let reason) = stop { violations.append("determinism tripwire: \(reason)") }
        let invariants = Set(scenario.invariants ?? ScenarioValidator.metaInvariants)
        if invariants.contains("liveness") && !verifierDone {
            violations.append("liveness: the namespace could not be read back within \(scenario.liveness) after the workload (clients finished: \(finishedClients) of \(clientCount))")
        }
        let kept = violations.filter { v in
            let kind = String(v.prefix { $0 != ":" })
            return !ScenarioValidator.metaInvariants.contains(kind) || invariants.contains(kind)
        }
        for v in kept { world.trace.note(.violation, at: world.nowNanoseconds, v) }
        var r = RunResult(scenario: scenario.name, seed: seed)
        r.digest = world.trace.digestHex
        r.simulatedSeconds = Double(world.nowNanoseconds) / 1e9
        r.events = world.trace.events
        r.messages = world.network.messagesSent
        r.operations = operations
        r.operationsSucceeded = succeeded
        r.faults = plan.count
        r.violations = kept
        if world.trace.keepNotes {
            var rec = RunRecording.base(world: world, scenario: scenario)
            rec.operations = opLog
            r.recording = rec
        }
        return r
    }

    func clientLoop(_ ctx: SimProcessContext) async {
        let home = "/\(ctx.name)"
        let client = MetaClient(runtime: ctx.runtime, transport: ctx.transport, servers: servers, clientID: UInt64(ctx.node.rawValue) << 16 | ctx.process.incarnation)
        var model = NamespaceModel()
        var rng = ctx.runtime.random("meta.workload")
        let names = ["a", "b", "c"]
        let renameShare = scenario.workload.readFraction ?? 0.3
        func path() -> String {
            let roll = rng.unit()
            let depth = roll < 0.4 ? 1 : (roll < 0.8 ? 2 : 3)
            return home + "/" + (0..<depth).map { _ in names[Int.random(in: 0..<names.count, using: &rng)] }.joined(separator: "/")
        }
        guard await perform(.mkdir(home, parents: false), client: client, model: &model, home: home) else { return }
        while self.world.nowNanoseconds < scenario.duration.nanoseconds {
            let op: NamespaceOp
            let roll = rng.unit()
            if roll < renameShare {
                op = .rename(path(), path())
            } else {
                switch Int.random(in: 0..<4, using: &rng) {
                case 0: op = .create(path())
                case 1: op = .mkdir(path())
                case 2: op = .remove(path(), recursive: rng.chance(0.5))
                default: op = .create(path())
                }
            }
            let metaOp: MetaOp
            switch op {
            case .create(let p): metaOp = .create(p, mode: 0o644, exclusive: true)
            case .mkdir(let p): metaOp = .mkdir(p, parents: false)
            case .remove(let p, let r): metaOp = .remove(p, recursive: r)
            case .rename(let a, let b): metaOp = .rename(a, b)
            }
            guard await perform(metaOp, client: client, model: &model, home: home, op: op) else { return }
            try? await ctx.runtime.sleep(nanoseconds: 5_000_000)
        }
        models[home] = model
        finishedClients += 1
    }

    /// Runs one operation and checks it against the model; false ends the client.
    func perform(_ metaOp: MetaOp, client: MetaClient, model: inout NamespaceModel, home: String, op: NamespaceOp? = nil) async -> Bool {
        operations += 1
        let started = world.nowNanoseconds
        var ok = false
        defer { opLog.append(RunRecording.Operation(invokedNanoseconds: started, completedNanoseconds: world.nowNanoseconds, succeeded: ok, kind: "meta")) }
        // The model is rooted at "/", the client's home is its first directory.
        let modelOp = op ?? .mkdir(home)
        do {
            _ = try await client.call(metaOp)
            succeeded += 1
            ok = true
            if !model.apply(modelOp) {
                violations.append("namespace_model: the servers accepted '\(modelOp)' for \(home), which a sequential run would refuse")
            }
        } catch .refused(_, let text) {
            var copy = model
            if copy.apply(modelOp) {
                violations.append("namespace_model: the servers refused '\(modelOp)' for \(home) (\(text)), which a sequential run would accept")
                model = copy
            }
        } catch {
            violations.append("liveness: \(home) gave up on '\(modelOp)': \(error)")
            return false
        }
        return true
    }

    func verify(_ ctx: SimProcessContext) async {
        let service = MetaService(kv: ctx.kv, runtime: ctx.runtime, policy: Self.policy)
        while finishedClients < clientCount { try? await ctx.runtime.sleep(nanoseconds: 100_000_000) }
        var report: NamespaceAudit.Report?
        for _ in 0..<100 {
            if let r = try? await service.read({ ns in try await NamespaceAudit.audit(ns) }) {
                report = r
                break
            }
            try? await ctx.runtime.sleep(nanoseconds: 200_000_000)
        }
        guard let report else { return }
        for p in report.problems { violations.append("namespace_integrity: \(p)") }
        for (home, model) in models.sorted(by: { $0.key < $1.key }) {
            let real = report.tree.filter { $0.key == home || $0.key.hasPrefix(home + "/") }
            let expected = model.entries.filter { $0.key != "/" }
            if real != expected {
                let missing = expected.keys.filter { real[$0] == nil }.sorted().prefix(3)
                let extra = real.keys.filter { expected[$0] == nil }.sorted().prefix(3)
                violations.append("namespace_model: \(home) differs from its sequential model (missing: \(missing.joined(separator: ", ")); unexpected: \(extra.joined(separator: ", ")))")
            }
        }
        verifierDone = true
    }
}

