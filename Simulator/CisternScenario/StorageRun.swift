import Cistern
import CisternAuth
import CisternCore
import CisternMgmtd
import CisternRouting
import CisternSim
import CisternStorage
import CisternWire

/// One run of the storage workload: cluster managers, real storage nodes (chunk
/// engines and CRAQ chains), and clients writing and reading chunks whose contents
/// name the write that produced them. Checks per-chunk linearizability of the client
/// history (a lost acknowledged write shows up as a stale read; mixed bytes as an
/// unknown value), that every replica of every chain is byte-identical after the
/// heal, and the routing invariants.
final class StorageRun: @unchecked Sendable {
    let scenario: Scenario
    let world: SimWorld
    let seed: UInt64
    let plan: [PlannedFault]
    let recorder: ClusterRecorder
    let history = History()
    let config: MgmtdConfig
    var mgmtdIDs: [NodeID] = []
    /// The cluster key storage nodes check capabilities with (nil: no authentication).
    var capabilityKey: CapabilityKey?
    var services: [NodeID: StorageService] = [:]
    /// Chunks live in generations: generation g holds chunks g*chunkCount ..<
    /// (g+1)*chunkCount on the chains the g-th chain-table version added (a table
    /// grows when storage nodes join).
    var generations: [[ChainID]] = []
    var chains: [ChainID] { generations.flatMap { $0 } }
    var activeChunks: Int { generations.count * chunkCount }
    /// Storage nodes that join after boot (`start_at`).
    var lateNodes: [NodeSpec] { scenario.topology.nodes.filter { $0.role == .storage && $0.startAt != nil } }
    var verifierDone = false
    var mixed: [String] = []
    /// The Kubernetes operator, when the scenario has a `rolling_upgrade`.
    var kubeOperator: SimulatedOperator?

    init(scenario: Scenario, world: SimWorld, seed: UInt64) {
        self.scenario = scenario
        self.world = world
        self.seed = seed
        self.plan = FaultPlan(scenario: scenario).plan(seed: seed)
        self.recorder = ClusterRecorder(now: { [unowned world] in world.nowNanoseconds })
        var config = MgmtdConfig(scenario.workload)
        scenario.knobDraw?.apply(to: &config)
        self.config = config
    }

    var replicas: Int { scenario.workload.replicas ?? 3 }
    /// The clients' settings: the defaults, or the seed's draw (`Knobs`).
    var clientOptions: ClientOptions {
        var o = ClientOptions()
        scenario.knobDraw?.apply(to: &o)
        return o
    }
    var chunkCount: Int { scenario.workload.chunks ?? 8 }
    var chunkBytes: Int { Int(scenario.workload.chunkBytes?.bytes ?? 4_096) }

    /// The content a write of `value` stores: the value and a separator, repeated.
    func content(_ value: String) -> [UInt8] {
        let unit = Array((value + "|").utf8)
        var out: [UInt8] = []
        out.reserveCapacity(chunkBytes + unit.count)
        while out.count < chunkBytes { out.append(contentsOf: unit) }
        out.removeLast(out.count - chunkBytes)
        return out
    }

    /// The value a content names, or nil with a note if the bytes are mixed.
    func value(of data: [UInt8], key: String) -> String? {
        guard let bar = data.firstIndex(of: UInt8(ascii: "|")) else {
            mixed.append("\(key): a read returned \(data.count) bytes that no write produced")
            return nil
        }
        let v = String(decoding: data[..<bar], as: UTF8.self)
        if data != content(v) { mixed.append("\(key): a read returned mixed bytes (starts like '\(v)')") }
        return v
    }

    func chunk(_ k: Int) -> (ChunkID, ChainID?) {
        let g = k / chunkCount
        guard g < generations.count, !generations[g].isEmpty else { return (ChunkID(inode: 1, index: UInt64(k)), nil) }
        return (ChunkID(inode: 1, index: UInt64(k)), generations[g][k % generations[g].count])
    }

    func execute() -> RunResult {
        for (i, spec) in scenario.topology.nodes.enumerated() {
            world.addNode(name: spec.name, host: spec.host ?? "10.0.\(i / 250).\(i % 250 + 1)", secondaryHosts: spec.secondaryHosts ?? [])
        }
        let admin = world.addNode(name: "_admin", host: "10.255.255.2")
        let verifier = world.addNode(name: "_verifier", host: "10.255.255.3")
        mgmtdIDs = scenario.topology.nodes.filter { $0.role == .mgmtd }.compactMap { try? world.node(named: $0.name).id }.sorted()
        let storageCount = scenario.topology.nodes.filter { $0.role == .storage && $0.startAt == nil }.count
        let driver = FaultDriver(world: world, topology: scenario.topology.nodes.map(\.name))
        for spec in scenario.topology.nodes {
            guard let node = try? world.node(named: spec.name) else { continue }
            if !assignClusterRole(spec, node), spec.role == .client {
                node.boot = { [unowned self] ctx in await self.clientLoop(ctx) }
            }
            if let at = spec.startAt {
                driver.joinsLater.insert(spec.name)
                joinLater(node, at: at.nanoseconds, driver: driver)
            } else {
                world.start(node)
            }
        }
        admin.boot = { [unowned self] ctx in
            let client = await self.bootstrap(ctx, storageNodes: storageCount)
            await self.growChainTable(ctx, client)
        }
        world.start(admin)
        if let upgrade = scenario.rollingUpgrade {
            let op = SimulatedOperator(run: self, upgrade: upgrade)
            kubeOperator = op
            let node = world.addNode(name: "_operator", host: "10.255.255.4")
            node.boot = { ctx in await op.loop(ctx) }
            world.start(node)
            driver.onKill = { op.noteDown($0.name) }
        }
        verifier.boot = { [unowned self] ctx in await self.verify(ctx) }
        driver.select = { [unowned self] name in self.select(name) }
        driver.flipBit = { [unowned self] node, filter in self.flipChunkBit(node, filter) }
        driver.schedule(plan)
        world.executor.schedule(at: scenario.duration.nanoseconds) { [unowned self] in self.world.start(verifier) }
        let limit = scenario.duration.nanoseconds + scenario.liveness.nanoseconds
        let stop = world.run(untilNanoseconds: limit) { [unowned self] in self.verifierDone && self.replicasSettled() }

        var violations: [String] = []
        if case .tripwire(let reason) = stop { violations.append("determinism tripwire: \(reason)") }
        let invariants = Set(scenario.invariants ?? ScenarioValidator.storageInvariants)
        if chains.isEmpty { violations.append("liveness: the chains were never created") }
        if !lateNodes.isEmpty && generations.count < 2 && invariants.contains("liveness") {
            violations.append("liveness: \(lateNodes.count) storage node(s) joined but the chain table never grew onto them")
        }
        if invariants.contains("liveness") { violations += history.pendingAfterHeal(scenario, world: world) }
        if invariants.contains("linearizable") || invariants.contains("no_lost_writes") {
            violations += LinearizabilityChecker.check(history) + mixed
        }
        if invariants.contains("single_head") || invariants.contains("routing_monotonic") {
            violations += recorder.violations.filter { v in invariants.contains(String(v.prefix { $0 != ":" })) }
        }
        if invariants.contains("liveness") && !verifierDone {
            violations.append("liveness: the final reads of every chunk did not all succeed within \(scenario.liveness) after the workload")
        }
        if invariants.contains("replicas_identical") { violations += replicaDifferences() }
        if let op = kubeOperator { violations += op.check() }
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
        r.metrics = settledMetrics()
        if world.trace.keepNotes {
            var rec = RunRecording.base(world: world, scenario: scenario)
            rec.add(history)
            rec.add(recorder)
            r.recording = rec
        }
        return r
    }

    /// For `/chunks/` flips: a bit inside the committed block of a random chunk on one
    /// of the node's targets (found by replaying its metadata log), so the flip hits
    /// live data rather than a free block. Other filters flip anywhere they match.
    func flipChunkBit(_ node: SimNode, _ filter: String?) {
        guard filter?.contains("/chunks/") == true, let spec = scenario.topology.nodes.first(where: { $0.name == node.name }) else {
            node.diskStore.flipBit(matching: filter)
            return
        }
        var candidates: [(file: String, range: Range<Int>)] = []
        for i in 1...(spec.targets ?? 1) {
            let folder = "targets/t\(UInt64(node.id.rawValue) * 100 + UInt64(i))"
            let slots = ChunkEngine.metadataLogPaths.map { node.diskStore.contents("\(folder)/\($0)") }
            guard slots.contains(where: { $0 != nil }) else { continue }
            for (_, meta) in ChunkEngine.recoveredMetadata(slots: slots).sorted(by: { $0.key < $1.key }) {
                guard let c = meta.committed, c.length > 0 else { continue }
                candidates.append(("\(folder)/\(c.block.path)", Int(c.block.offset)..<Int(c.block.offset) + c.length))
            }
        }
        guard !candidates.isEmpty else {
            node.diskStore.flipBit(matching: filter)
            return
        }
        let pick = candidates[Int.random(in: 0..<candidates.count, using: &world.rng)]
        node.diskStore.flipBit(in: pick.file, within: pick.range)
    }

    // MARK: Roles

    /// The node a selector names now: `@mgmtd-primary`, or `@chain-head` /
    /// `@chain-tail` of the first chain.
    func select(_ name: String) -> SimNode? {
        if name.hasPrefix("@mgmtd-primary") {
            return recorder.currentPrimary(at: world.nowNanoseconds).flatMap { world.node($0) }
        }
        guard let r = recorder.lastCommitted, let c = chains.first, let chain = r.chain(c) else { return nil }
        let writers = chain.writeTargets
        let t = name.hasPrefix("@chain-head") ? writers.first?.target : writers.last?.target
        return t.flatMap { r.target($0)?.node }.flatMap { world.node($0) }
    }

    func mgmtdClient(_ ctx: SimProcessContext, role: CisternRouting.NodeRole) -> MgmtdClient {
        MgmtdClient(node: ctx.node, role: role, name: ctx.name, runtime: ctx.runtime, transport: ctx.transport, replicas: mgmtdIDs, observer: recorder,
                    service: capabilityKey?.service)
    }

    /// Sets the boot of a cluster-manager or storage node (shared by the workloads
    /// that run this cluster); false for other roles.
    func assignClusterRole(_ spec: NodeSpec, _ node: SimNode) -> Bool {
        switch spec.role {
        case .mgmtd:
            node.boot = { [unowned self] ctx in
                ctx.retain(await Mgmtd.start(id: ctx.node, runtime: ctx.runtime, transport: ctx.transport, kv: ctx.kv, config: self.config, observer: self.recorder,
                                             capabilityKey: self.capabilityKey))
            }
            return true
        case .storage:
            let targets = (1...(spec.targets ?? 1)).map { TargetID(UInt64(node.id.rawValue) * 100 + UInt64($0)) }
            node.boot = { [unowned self] ctx in await self.bootStorage(ctx, targets: targets) }
            return true
        case .client, .register, .meta:
            return false
        }
    }

    func bootStorage(_ ctx: SimProcessContext, targets: [TargetID]) async {
        let client = mgmtdClient(ctx, role: .storage)
        var storageConfig = StorageConfig()
        storageConfig.heartbeatIntervalNanoseconds = config.heartbeatIntervalNanoseconds
        storageConfig.isolationNanoseconds = config.failureTimeoutNanoseconds / 2
        scenario.knobDraw?.apply(to: &storageConfig)
        storageConfig.plantedEarlyAck = scenario.workload.plantedBug == "early_ack"
        storageConfig.plantedOpenStorage = scenario.workload.plantedBug == "open_storage"
        for _ in 0..<50 {
            if let s = try? await StorageService.start(node: ctx.node, runtime: ctx.runtime, transport: ctx.transport, disk: ctx.disk, mgmtd: client, targets: targets, config: storageConfig, capabilityKey: capabilityKey) {
                ctx.retain(s)
                services[ctx.node] = s
                return
            }
            try? await ctx.runtime.sleep(nanoseconds: 100_000_000)
        }
    }

    /// Creates the chains once every storage node registered; returns the admin's
    /// manager client (one per process: the recorder tracks routing per process).
    @discardableResult
    func bootstrap(_ ctx: SimProcessContext, storageNodes: Int) async -> MgmtdClient {
        let client = mgmtdClient(ctx, role: .client)
        if chains.isEmpty {
            let first = await ClusterBootstrap.firstChains(client, storageNodes: storageNodes, replicas: replicas, runtime: ctx.runtime)
            // Another process of the run may have taken them (and grown the table) meanwhile.
            if chains.isEmpty { generations = [first] }
        }
        return client
    }

    /// Starts a late-joining storage node at `at`, or once the first chains exist if
    /// that comes later: a node up before them would get first-table chains and the
    /// table would have nothing to grow onto.
    func joinLater(_ node: SimNode, at: UInt64, driver: FaultDriver) {
        world.executor.schedule(at: at) { [unowned self] in
            guard !self.chains.isEmpty else {
                self.joinLater(node, at: self.world.nowNanoseconds + 100_000_000, driver: driver)
                return
            }
            driver.joinsLater.remove(node.name)
            if node.process == nil { self.world.start(node) }
        }
    }

    /// Once the late storage nodes registered, asks the manager for chains on their
    /// targets (a new version of the chain table) and opens a new generation of
    /// chunks on them, while the clients keep writing.
    func growChainTable(_ ctx: SimProcessContext, _ client: MgmtdClient) async {
        let late = Set(lateNodes.map(\.name))
        guard !late.isEmpty else { return }
        let known = Set(chains)
        while self.world.nowNanoseconds < scenario.duration.nanoseconds {
            try? await ctx.runtime.sleep(nanoseconds: 200_000_000)
            await client.refreshRouting()
            guard let r = await client.routing, let table = r.tables.first else { continue }
            let added = table.chains.filter { !known.contains($0) }
            if !added.isEmpty {
                generations.append(added)
                world.trace.note(.custom, at: world.nowNanoseconds, "chain table \(table.id) version \(table.version) adds \(added.map(\.description).joined(separator: ","))")
                return
            }
            let joined = r.nodes.filter { $0.role == .storage && $0.status == .active && late.contains($0.name) }.count
            let idle = r.targets.filter { $0.chain == nil && r.node($0.node)?.status == .active }.count
            if joined == late.count && idle >= replicas {
                _ = try? await client.call(.createChains(replicas: replicas))
            }
        }
    }

    func clientLoop(_ ctx: SimProcessContext) async {
        let mgmtd = mgmtdClient(ctx, role: .client)
        await mgmtd.serveHints()
        let storage = StorageClient(runtime: ctx.runtime, transport: ctx.transport, mgmtd: mgmtd, clientID: ctx.node.rawValue << 8 | UInt32(ctx.process.incarnation & 0xFF))
        var rng = ctx.runtime.random("workload")
        let readFraction = scenario.workload.readFraction ?? 0.7
        let think = Double((scenario.workload.thinkTime ?? SimDuration(nanoseconds: 20_000_000)).nanoseconds)
        var n = 0
        while chains.isEmpty { try? await ctx.runtime.sleep(nanoseconds: 100_000_000) }
        while self.world.nowNanoseconds < scenario.duration.nanoseconds {
            let k = Int.random(in: 0..<activeChunks, using: &rng)
            let (id, chain) = chunk(k)
            guard let chain else { break }
            let key = "c\(k)"
            let now = self.world.nowNanoseconds
            if rng.unit() < readFraction {
                let i = history.invoke(client: ctx.name, incarnation: ctx.process.incarnation, key: key, kind: .read, value: nil, at: now)
                do {
                    let got = try await storage.read(id, chain: chain)
                    let v = got.flatMap { value(of: $0.data, key: key) }
                    history.complete(i, at: self.world.nowNanoseconds, succeeded: got == nil || v != nil, readValue: .some(v))
                } catch {
                    history.complete(i, at: self.world.nowNanoseconds, succeeded: false)
                }
            } else {
                n += 1
                let v = "\(ctx.name).\(ctx.process.incarnation).\(n)"
                let i = history.invoke(client: ctx.name, incarnation: ctx.process.incarnation, key: key, kind: .write, value: v, at: now)
                do {
                    _ = try await storage.write(id, chain: chain, content(v))
                    history.complete(i, at: self.world.nowNanoseconds, succeeded: true)
                } catch {
                    history.complete(i, at: self.world.nowNanoseconds, succeeded: false)
                }
            }
            try? await ctx.runtime.sleep(nanoseconds: UInt64(-think * log(max(rng.unit(), 1e-12))))
        }
    }

    /// After the workload: read every chunk until it succeeds (checked like any read).
    func verify(_ ctx: SimProcessContext) async {
        let mgmtd = mgmtdClient(ctx, role: .client)
        let storage = StorageClient(runtime: ctx.runtime, transport: ctx.transport, mgmtd: mgmtd, clientID: 0xFFFF_FF00)
        for k in 0..<activeChunks {
            let (id, chain) = chunk(k)
            guard let chain else { break }
            let key = "c\(k)"
            while true {
                let i = history.invoke(client: ctx.name, incarnation: ctx.process.incarnation, key: key, kind: .read, value: nil, at: self.world.nowNanoseconds)
                do {
                    let got = try await storage.read(id, chain: chain)
                    let v = got.flatMap { value(of: $0.data, key: key) }
                    history.complete(i, at: self.world.nowNanoseconds, succeeded: got == nil || v != nil, readValue: .some(v))
                    break
                } catch {
                    history.complete(i, at: self.world.nowNanoseconds, succeeded: false)
                    try? await ctx.runtime.sleep(nanoseconds: 200_000_000)
                }
            }
        }
        // Once every chain is fully serving again, record each live replica's
        // committed bytes of every chunk (checked by replicas_identical).
        while !replicasSettled() { try? await ctx.runtime.sleep(nanoseconds: 200_000_000) }
        // A write a client started before the end may still be settling down its
        // chain (a lost reply costs a call timeout per hop, and the head retries):
        // until it finishes, its replicas may rightly differ by that version.
        while history.operations.contains(where: { op in
            op.completedNanoseconds == nil && ((try? world.node(named: op.client))?.process.map { $0.incarnation == op.incarnation && !$0.isDead } ?? false)
        }) {
            try? await ctx.runtime.sleep(nanoseconds: 200_000_000)
        }
        try? await ctx.runtime.sleep(nanoseconds: 2_000_000_000)
        await collectReplicaDigests()
        verifierDone = true
    }

    /// target -> chunk -> "version/checksum", read through the live engines (a copy
    /// failing its checksum reads as "corrupt").
    var replicaDigests: [TargetID: [ChunkID: String]] = [:]

    var corruptions = 0
    var repairs = 0

    func collectReplicaDigests() async {
        for (_, service) in services.sorted(by: { $0.key < $1.key }) {
            corruptions += await service.corruptionsDetected
            repairs += await service.repairs
            for t in service.targetIDs {
                guard let engine = await service.engine(t) else { continue }
                var digests: [ChunkID: String] = [:]
                for k in 0..<activeChunks {
                    let id = chunk(k).0
                    do {
                        let (data, v) = try await engine.read(id)
                        digests[id] = "v\(v.version)/\(String(CRC32C.checksum(data), radix: 16))"
                    } catch ChunkError.notFound {
                        digests[id] = "absent"
                    } catch {
                        digests[id] = "unreadable (\(error))"
                    }
                }
                replicaDigests[t] = digests
            }
        }
    }

    // MARK: Checks

    /// Whether every chain is fully SERVING in the last committed routing.
    func replicasSettled() -> Bool {
        guard let r = recorder.lastCommitted, !chains.isEmpty else { return false }
        return chains.allSatisfy { c in r.chain(c)?.targets.allSatisfy { $0.state == .serving } ?? false }
    }

    /// Every replica of every chain must be SERVING with the same committed bytes for
    /// every chunk, as its live engine reads them when the run settles.
    func replicaDifferences() -> [String] {
        guard let r = recorder.lastCommitted else { return ["replicas_identical: no routing was committed"] }
        var out: [String] = []
        for c in chains {
            guard let chain = r.chain(c) else { continue }
            if chain.targets.contains(where: { $0.state != .serving }) {
                out.append("replicas_identical: \(chain) is not fully SERVING at the end, \(scenario.liveness) after the workload")
                continue
            }
            for k in 0..<activeChunks where chunk(k).1 == c {
                let id = chunk(k).0
                var seen: [String: [TargetID]] = [:]
                for t in chain.targets {
                    seen[replicaDigests[t.target]?[id] ?? "not collected", default: []].append(t.target)
                }
                if seen.count > 1 {
                    let detail = seen.keys.sorted().map { "\($0): \(seen[$0]!.map(\.description).joined(separator: ","))" }.joined(separator: "; ")
                    out.append("replicas_identical: \(id) differs across \(chain.id)'s replicas (\(detail))")
                }
            }
            if out.count > 10 { break }
        }
        return out
    }

    func settledMetrics() -> [String: Double] {
        var m = ["chains": Double(chains.count), "chain_table_versions": Double(generations.count), "corruptions_detected": Double(corruptions), "repairs": Double(repairs)]
        if let op = kubeOperator { m["operator_pod_deletions"] = Double(op.deletions) }
        return m
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
