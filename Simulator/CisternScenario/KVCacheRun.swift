import CisternAuth
import Cistern
import CisternCore
import CisternKV
import CisternMgmtd
import CisternRouting
import CisternSim
import CisternStorage

/// One run of the KV cache workload: cluster managers, real storage nodes, metadata
/// servers serving the KV index, and clients behaving like inference engines: each
/// request draws a prompt prefix (popular ones more often), asks which of its pages
/// exist (consecutive hits from the first), reads those, and puts the missing ones.
/// Keys chain like content hashes of token prefixes.
///
/// Checks: every page read is a page some put of that key wrote, byte for byte
/// (`pages_intact`); it is not older than a put of the key installed after it and
/// before the read began (`last_put`); under capacity, no key whose put was
/// confirmed is ever reported missing (`no_lost_pages`); the index's slab passes its
/// audit at the end (`index_sound`); plus the routing invariants and liveness.
final class KVCacheRun: @unchecked Sendable {
    let scenario: Scenario
    let world: SimWorld
    let seed: UInt64
    /// The cluster underneath (managers, storage nodes, chains, routing checks).
    let cluster: StorageRun
    let namespace = "kvcache"
    var metaIDs: [NodeID] = []
    var namespaceReady = false
    var verifierDone = false
    var violations: [String] = []
    var keyTable: [[String]] = []

    struct PutRecord {
        var id: UInt64
        var invoke: UInt64
        var complete: UInt64?
        var installed: Bool
    }
    enum Observed { case page(UInt64), missing, present }
    struct ReadRecord {
        var key: String
        var invoke: UInt64
        var complete: UInt64
        var observed: Observed
    }
    var puts: [String: [PutRecord]] = [:]
    var reads: [ReadRecord] = []
    var nextPutID: UInt64 = 0
    var counters: [String: Double] = [:]

    // Tenants (workload `tenants: N`): the cluster runs with authentication; tenant k
    // has the namespace `tk.kvcache`, a token and a quota of exactly that namespace.
    let tenantCount: Int?
    let authKey: CapabilityKey?
    var adminToken: String { "sim-admin-token-\(seed)" }
    func tenantToken(_ k: Int) -> String { "sim-token-t\(k)-\(seed)" }
    func namespaceName(_ tenant: Int?) -> String { tenant.map { "t\($0).kvcache" } ?? namespace }
    /// Each tenant's namespace as created (for the probes of the other tenants).
    var tenantConfigs: [Int: KVNamespaceConfig] = [:]
    var clientNames: [String] = []
    /// A key as recorded: qualified by its tenant (tenants' keys coincide on purpose).
    func recorded(_ key: String, _ tenant: Int?) -> String { tenant.map { "t\($0)/\(key)" } ?? key }

    init(scenario: Scenario, world: SimWorld, seed: UInt64) {
        self.scenario = scenario
        self.world = world
        self.seed = seed
        self.cluster = StorageRun(scenario: scenario, world: world, seed: seed)
        self.tenantCount = scenario.workload.tenants
        if scenario.workload.tenants != nil {
            var rng = DeterministicRandom(seed: seed ^ 0x7E4A_47C0_FFEE)
            let secret = (0..<32).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            self.authKey = try? CapabilityKey(secret: secret)
        } else {
            self.authKey = nil
        }
        cluster.capabilityKey = authKey
        for p in 0..<prefixes {
            var h = StableHash.fnv1a64("prompt/\(p)")
            keyTable.append((0..<prefixPages).map { i in
                h = StableHash.fnv1a64("\(h)/tokens/\(p).\(i)")
                let hex = String(h, radix: 16)
                return String(repeating: "0", count: 16 - hex.count) + hex
            })
        }
    }

    var pageBytes: Int { Int(scenario.workload.pageBytes?.bytes ?? 4_096) }
    var capacity: Int { scenario.workload.capacityPages ?? 1_000 }
    var durability: KVDurability { scenario.workload.durability.flatMap { KVDurability($0) } ?? .cache }
    var prefixes: Int { scenario.workload.prefixes ?? 20 }
    var prefixPages: Int { scenario.workload.prefixPages ?? 8 }

    // MARK: Page contents

    /// A page of `key` written by put `id`: the key's hash and the put id, then bytes
    /// drawn from a generator seeded by both, so any mix of two pages is detected.
    func page(key: String, id: UInt64) -> [UInt8] {
        let kh = StableHash.fnv1a64(key)
        var out = KeyCoding.bigEndian(kh) + KeyCoding.bigEndian(id)
        out.reserveCapacity(pageBytes)
        var rng = DeterministicRandom(seed: kh ^ (id &* 0x9E37_79B9_7F4A_7C15))
        while out.count < pageBytes {
            let v = rng.next()
            for b in 0..<8 where out.count < pageBytes { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(b)))) }
        }
        return out
    }

    /// The put id a page read for `key` names, or nil (with a violation) when the
    /// bytes are not exactly some page of that key.
    func inspect(_ data: [UInt8], key: String, raw: String? = nil, tenant: Int? = nil) -> UInt64? {
        guard data.count == pageBytes, let kh = KeyCoding.bigEndianValue(data[0..<8]), let id = KeyCoding.bigEndianValue(data[8..<16]) else {
            violations.append("pages_intact: a read of \(key) returned \(data.count) bytes that no put wrote")
            return nil
        }
        if let raw, let tenant, let n = tenantCount, kh != StableHash.fnv1a64(key),
           let other = (0..<n).first(where: { $0 != tenant && kh == StableHash.fnv1a64(recorded(raw, $0)) }) {
            violations.append("tenant_isolation: tenant t\(tenant) read \(raw) and got tenant t\(other)'s page (put \(id))")
            return nil
        }
        guard kh == StableHash.fnv1a64(key) else {
            violations.append("pages_intact: a read of \(key) returned a page of another key")
            return nil
        }
        guard data == page(key: key, id: id) else {
            violations.append("pages_intact: a read of \(key) returned mixed bytes (header of put \(id))")
            return nil
        }
        return id
    }

    // MARK: Run

    func execute() -> RunResult {
        for (i, spec) in scenario.topology.nodes.enumerated() {
            world.addNode(name: spec.name, host: spec.host ?? "10.0.\(i / 250).\(i % 250 + 1)", secondaryHosts: spec.secondaryHosts ?? [])
        }
        let admin = world.addNode(name: "_admin", host: "10.255.255.2")
        let verifier = world.addNode(name: "_verifier", host: "10.255.255.3")
        cluster.mgmtdIDs = scenario.topology.nodes.filter { $0.role == .mgmtd }.compactMap { try? world.node(named: $0.name).id }.sorted()
        metaIDs = scenario.topology.nodes.filter { $0.role == .meta }.compactMap { try? world.node(named: $0.name).id }.sorted()
        let storageCount = scenario.topology.nodes.filter { $0.role == .storage }.count
        clientNames = scenario.topology.nodes.filter { $0.role == .client }.map(\.name)
        for spec in scenario.topology.nodes {
            guard let node = try? world.node(named: spec.name) else { continue }
            if cluster.assignClusterRole(spec, node) {
                world.start(node)
                continue
            }
            switch spec.role {
            case .mgmtd, .storage:
                break
            case .meta:
                node.boot = { [unowned self] ctx in
                    let mgmtd = self.cluster.mgmtdClient(ctx, role: .meta)
                    ctx.retain(await MetadataServer.start(kv: ctx.kv, runtime: ctx.runtime, transport: ctx.transport, mgmtd: mgmtd,
                                                          chunkBytes: 64 << 10, heartbeatNanoseconds: self.cluster.config.heartbeatIntervalNanoseconds,
                                                          auth: self.authKey.map { MetadataAuth(key: $0, adminTokenDigest: TokenDigest.of(self.adminToken)) }))
                }
            case .client:
                node.boot = { [unowned self] ctx in await self.clientLoop(ctx) }
            case .register:
                break
            }
            world.start(node)
        }
        admin.boot = { [unowned self] ctx in await self.bootstrap(ctx, storageNodes: storageCount) }
        world.start(admin)
        verifier.boot = { [unowned self] ctx in await self.verify(ctx) }
        let driver = FaultDriver(world: world, topology: scenario.topology.nodes.map(\.name))
        driver.select = { [unowned self] name in self.cluster.select(name) }
        driver.schedule(cluster.plan)
        world.executor.schedule(at: scenario.duration.nanoseconds) { [unowned self] in self.world.start(verifier) }
        let limit = scenario.duration.nanoseconds + scenario.liveness.nanoseconds
        let stop = world.run(untilNanoseconds: limit) { [unowned self] in self.verifierDone }

        if case .tripwire(let reason) = stop { violations.append("determinism tripwire: \(reason)") }
        let invariants = Set(scenario.invariants ?? ScenarioValidator.kvcacheInvariants)
        if cluster.chains.isEmpty { violations.append("liveness: the chains were never created") }
        var found = violations.filter { v in invariants.contains(String(v.prefix { $0 != ":" })) || v.hasPrefix("determinism") || v.hasPrefix("liveness") }
        found += historyViolations(invariants)
        if invariants.contains("single_head") || invariants.contains("routing_monotonic") {
            found += cluster.recorder.violations.filter { v in invariants.contains(String(v.prefix { $0 != ":" })) }
        }
        if invariants.contains("liveness") && !verifierDone {
            found.append("liveness: the final reads of every stored key did not all finish within \(scenario.liveness) after the workload")
        }
        for v in found { world.trace.note(.violation, at: world.nowNanoseconds, v) }

        var r = RunResult(scenario: scenario.name, seed: seed)
        r.digest = world.trace.digestHex
        r.simulatedSeconds = Double(world.nowNanoseconds) / 1e9
        r.events = world.trace.events
        r.messages = world.network.messagesSent
        r.operations = Int(counters["requests", default: 0])
        r.operationsSucceeded = Int(counters["requests_ok", default: 0])
        r.faults = cluster.plan.count
        r.violations = Array(found.prefix(50))
        let gets = counters["pages_read", default: 0]
        let looked = counters["pages_looked_up", default: 0]
        r.metrics = counters.filter { $0.key != "requests" && $0.key != "requests_ok" }
        r.metrics["hit_ratio"] = looked > 0 ? (gets / looked * 1000).rounded() / 1000 : 0
        if world.trace.keepNotes {
            var rec = RunRecording.base(world: world, scenario: scenario)
            rec.add(cluster.recorder)
            rec.operations = recordedOperations()
            r.recording = rec
        }
        return r
    }

    func bootstrap(_ ctx: SimProcessContext, storageNodes: Int) async {
        await cluster.bootstrap(ctx, storageNodes: storageNodes)
        let client = CisternClient(runtime: ctx.runtime, transport: ctx.transport, node: ctx.node, name: ctx.name, mgmtd: cluster.mgmtdIDs, meta: metaIDs, options: cluster.clientOptions,
                                   token: authKey == nil ? nil : adminToken)
        await client.start()
        if let n = tenantCount {
            await bootstrapTenants(ctx, admin: client, count: n)
            return
        }
        while !namespaceReady {
            if (try? await client.kvNamespace(namespace, pageBytes: pageBytes, capacityPages: UInt64(capacity), files: 2, durability: durability)) != nil {
                namespaceReady = true
            } else {
                try? await ctx.runtime.sleep(nanoseconds: 300_000_000)
            }
        }
    }

    /// Tenant mode: the admin creates the tenants (quota: one namespace of the
    /// workload's shape) and their tokens; each tenant creates its namespace. Every
    /// step is retried through faults (a repeat that finds its work done is fine).
    func bootstrapTenants(_ ctx: SimProcessContext, admin: CisternClient, count: Int) async {
        let quota = TenantQuota(bytes: UInt64(capacity) * UInt64(pageBytes), pages: UInt64(capacity))
        for k in 0..<count {
            func settled(_ r: KVRequest) async {
                while true {
                    do {
                        _ = try await admin.kvIndex.call(r)
                        return
                    } catch .tenant(.tenantExists), .tenant(.limit) {
                        return  // an earlier try that seemed lost went through
                    } catch {
                        try? await ctx.runtime.sleep(nanoseconds: 300_000_000)
                    }
                }
            }
            await settled(.tenant(.create(name: "t\(k)", quota: quota, capacityBytes: 1 << 50)))
            await settled(.tenant(.addToken(tenant: "t\(k)", id: "sim", hash: TokenDigest.of(tenantToken(k)))))
            let client = CisternClient(runtime: ctx.runtime, transport: ctx.transport, node: ctx.node, name: ctx.name, mgmtd: cluster.mgmtdIDs, meta: metaIDs, options: cluster.clientOptions,
                                       incarnation: UInt32(0xE0 + k), token: tenantToken(k))
            await client.start()
            while tenantConfigs[k] == nil {
                if let ns = try? await client.kvNamespace(namespaceName(k), pageBytes: pageBytes, capacityPages: UInt64(capacity), files: 2, durability: durability) {
                    tenantConfigs[k] = ns.config
                } else {
                    try? await ctx.runtime.sleep(nanoseconds: 300_000_000)
                }
            }
        }
        namespaceReady = true
    }

    /// The tenant a client node works for (tenant mode), spread round-robin.
    func tenant(of name: String) -> Int? {
        guard let n = tenantCount, let i = clientNames.firstIndex(of: name) else { return nil }
        return i % n
    }

    /// A client of `tenant`'s namespace (the admin's with nil in tenant mode: it may
    /// use every namespace).
    func openNamespace(_ ctx: SimProcessContext, clientTag: UInt32, tenant: Int? = nil, name: String? = nil) async -> KVNamespace {
        let token: String? = authKey == nil ? nil : tenant.map(tenantToken) ?? adminToken
        let client = CisternClient(runtime: ctx.runtime, transport: ctx.transport, node: ctx.node, name: ctx.name, mgmtd: cluster.mgmtdIDs, meta: metaIDs, options: cluster.clientOptions,
                                   incarnation: clientTag, token: token)
        await client.start()
        while true {
            if namespaceReady, let ns = try? await client.kvNamespace(name ?? namespaceName(tenant)) { return ns }
            try? await ctx.runtime.sleep(nanoseconds: 200_000_000)
        }
    }

    /// Tenant mode: one attempt by `tenant`'s client to reach another tenant's
    /// namespace, files or chunks. Any answer other than a refusal for permission
    /// (or a failure to get an answer at all, under faults) is a violation.
    func probe(_ client: CisternClient, tenant: Int, rng: inout DeterministicRandom) async {
        guard let n = tenantCount, n >= 2 else { return }
        var other = Int.random(in: 0..<(n - 1), using: &rng)
        if other >= tenant { other += 1 }
        guard let victim = tenantConfigs[other], let file = victim.files.first else { return }
        let kind = Int.random(in: 0..<4, using: &rng)
        let what: String
        var outcome: Result<Void, any Error>
        switch kind {
        case 0:
            what = "describe namespace \(victim.name)"
            do { _ = try await client.kvIndex.call(.describe(name: victim.name)); outcome = .success(()) } catch { outcome = .failure(error) }
        case 1:
            what = "look up \(keyTable[0][0]) in \(victim.name)"
            do { _ = try await client.kvIndex.call(.lookup(name: victim.name, keys: [keyTable[0][0]], leaseNanoseconds: 1_000_000_000)); outcome = .success(()) } catch { outcome = .failure(error) }
        case 2:
            let index = UInt64.random(in: 0..<max(1, victim.slotsPerFile), using: &rng)
            let chunk = ChunkID(inode: file.inode.rawValue, index: index)
            what = "read chunk \(chunk) of \(victim.name)'s data file"
            guard let chain = file.layout.chain(ofChunk: index) else { return }
            do { _ = try await client.storage.read(chunk, chain: chain); outcome = .success(()) } catch { outcome = .failure(error) }
        default:
            what = "stat /tenants/t\(other)"
            do { _ = try await client.stat("/tenants/t\(other)"); outcome = .success(()) } catch { outcome = .failure(error) }
        }
        switch outcome {
        case .success:
            violations.append("tenant_isolation: tenant t\(tenant) could \(what)")
        case .failure(let e):
            if CisternError.isPermissionDenied(e) {
                counters["probes_refused", default: 0] += 1
            } else {
                counters["probes_unanswered", default: 0] += 1
            }
        }
    }

    func clientLoop(_ ctx: SimProcessContext) async {
        let tenant = tenant(of: ctx.name)
        let ns = await openNamespace(ctx, clientTag: UInt32(ctx.process.incarnation), tenant: tenant)
        var rng = ctx.runtime.random("workload")
        let think = Double((scenario.workload.thinkTime ?? SimDuration(nanoseconds: 50_000_000)).nanoseconds)
        while self.world.nowNanoseconds < scenario.duration.nanoseconds {
            // Popular prefixes come up more often (a squared uniform draw).
            let u = rng.unit()
            let p = min(prefixes - 1, Int(Double(prefixes) * u * u))
            let n = Int.random(in: 1...prefixPages, using: &rng)
            let keys = Array(keyTable[p][0..<n])
            counters["requests", default: 0] += 1
            await serve(ns, keys: keys, ctx: ctx, tenant: tenant)
            if let tenant, rng.unit() < 0.15 { await probe(ns.client, tenant: tenant, rng: &rng) }
            try? await ctx.runtime.sleep(nanoseconds: UInt64(-think * log(max(rng.unit(), 1e-12))))
        }
    }

    /// Reads and puts as report operations (a put that never completed is a failure).
    func recordedOperations() -> [RunRecording.Operation] {
        var out = reads.map { r -> RunRecording.Operation in
            if case .page = r.observed { return RunRecording.Operation(invokedNanoseconds: r.invoke, completedNanoseconds: r.complete, succeeded: true, kind: "get") }
            return RunRecording.Operation(invokedNanoseconds: r.invoke, completedNanoseconds: r.complete, succeeded: true, kind: "exists")
        }
        for (_, list) in puts.sorted(by: { $0.key < $1.key }) {
            for p in list { out.append(RunRecording.Operation(invokedNanoseconds: p.invoke, completedNanoseconds: p.complete, succeeded: p.complete != nil, kind: "put")) }
        }
        return out
    }

    /// One inference request: exists, get the hits, put the rest.
    func serve(_ ns: KVNamespace, keys: [String], ctx: SimProcessContext, tenant: Int? = nil) async {
        let q = { (k: String) in self.recorded(k, tenant) }
        let now = { self.world.nowNanoseconds }
        let t0 = now()
        guard let e = try? await ns.exists(keys) else { return }
        let t1 = now()
        for (k, present) in zip(keys, e.present) { reads.append(ReadRecord(key: q(k), invoke: t0, complete: t1, observed: present ? .present : .missing)) }
        counters["pages_looked_up", default: 0] += Double(keys.count)
        var ok = true
        let hits = e.consecutiveHits
        if hits > 0 {
            let t2 = now()
            if let got = try? await ns.get(Array(keys[0..<hits])) {
                let t3 = now()
                for (k, g) in zip(keys[0..<hits], got) {
                    switch g {
                    case .found(let bytes):
                        counters["pages_read", default: 0] += 1
                        if let id = inspect(bytes, key: q(k), raw: k, tenant: tenant) { reads.append(ReadRecord(key: q(k), invoke: t2, complete: t3, observed: .page(id))) }
                    case .missing:
                        counters["pages_missing_on_get", default: 0] += 1
                        reads.append(ReadRecord(key: q(k), invoke: t2, complete: t3, observed: .missing))
                    case .failed:
                        counters["page_reads_failed", default: 0] += 1
                        ok = false
                    }
                }
            } else {
                ok = false
            }
        }
        if hits < keys.count {
            var pages: [(key: String, bytes: [UInt8])] = []
            var ids: [UInt64] = []
            let t4 = now()
            for k in keys[hits...] {
                nextPutID += 1
                ids.append(nextPutID)
                puts[q(k), default: []].append(PutRecord(id: nextPutID, invoke: t4, complete: nil, installed: false))
                pages.append((k, page(key: q(k), id: nextPutID)))
            }
            if let outcomes = try? await ns.put(pages) {
                let t5 = now()
                for ((k, _), (id, o)) in zip(pages, zip(ids, outcomes)) {
                    let rk = q(k)
                    guard let i = puts[rk]?.lastIndex(where: { $0.id == id }) else { continue }
                    switch o {
                    case .stored:
                        puts[rk]![i].complete = t5
                        puts[rk]![i].installed = true
                        counters["pages_stored", default: 0] += 1
                    case .existed:
                        puts[rk]![i].complete = t5
                        counters["pages_existed", default: 0] += 1
                    case .full:
                        puts[rk]![i].complete = t5
                        counters["pages_full", default: 0] += 1
                    case .failed, .noSpace:
                        counters["page_puts_failed", default: 0] += 1
                        ok = false
                    }
                }
            } else {
                ok = false
            }
        }
        if ok { counters["requests_ok", default: 0] += 1 }
    }

    /// After the workload: read every key a put may have stored until each read
    /// finishes (found or missing), then audit the index.
    func verify(_ ctx: SimProcessContext) async {
        let tenants: [Int?] = tenantCount.map { n in (0..<n).map { Optional($0) } } ?? [nil]
        for (i, tenant) in tenants.enumerated() {
            await verify(ctx, tenant: tenant, clientTag: UInt32(0xF0 + i))
        }
        if let n = tenantCount { await verifyQuotas(ctx, count: n) }
        verifierDone = true
    }

    /// Tenant mode: no tenant can create more than its quota (one namespace), and
    /// the registry's accounting stays within every quota.
    func verifyQuotas(_ ctx: SimProcessContext, count: Int) async {
        let admin = CisternClient(runtime: ctx.runtime, transport: ctx.transport, node: ctx.node, name: ctx.name, mgmtd: cluster.mgmtdIDs, meta: metaIDs, options: cluster.clientOptions,
                                  incarnation: 0xD0, token: adminToken)
        await admin.start()
        for k in 0..<count {
            let client = CisternClient(runtime: ctx.runtime, transport: ctx.transport, node: ctx.node, name: ctx.name, mgmtd: cluster.mgmtdIDs, meta: metaIDs, options: cluster.clientOptions,
                                       incarnation: UInt32(0xD1 + k), token: tenantToken(k))
            await client.start()
            var answered = false
            for _ in 0..<20 where !answered {
                do {
                    _ = try await client.kvNamespace("t\(k).extra", pageBytes: pageBytes, capacityPages: 1, files: 1)
                    violations.append("quotas_hold: tenant t\(k) created a second namespace beyond its quota of one")
                    answered = true
                } catch .kv(.tenant(.quotaExceeded)) {
                    answered = true
                } catch {
                    try? await ctx.runtime.sleep(nanoseconds: 300_000_000)
                }
            }
            while true {
                if case .tenants(let infos)? = try? await admin.kvIndex.call(.tenant(.info(name: "t\(k)"))), let info = infos.first {
                    if info.used.bytes > info.quota.bytes || info.used.pages > info.quota.pages {
                        violations.append("quotas_hold: tenant t\(k) uses \(info.used.bytes) bytes / \(info.used.pages) pages beyond its quota of \(info.quota.bytes) / \(info.quota.pages)")
                    }
                    if info.namespaces != ["t\(k).kvcache"] { violations.append("quotas_hold: tenant t\(k) owns \(info.namespaces)") }
                    break
                }
                try? await ctx.runtime.sleep(nanoseconds: 300_000_000)
            }
        }
    }

    /// Reads back every key of one namespace (all of them without tenants).
    func verify(_ ctx: SimProcessContext, tenant: Int?, clientTag: UInt32) async {
        let ns = await openNamespace(ctx, clientTag: clientTag, name: namespaceName(tenant))
        let prefix = tenant.map { "t\($0)/" } ?? ""
        let keys = puts.keys.sorted().filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }
        let q = { (k: String) in self.recorded(k, tenant) }
        for batch in stride(from: 0, to: keys.count, by: 64).map({ Array(keys[$0..<min($0 + 64, keys.count)]) }) {
            var pending = batch
            while !pending.isEmpty {
                let t0 = self.world.nowNanoseconds
                guard let got = try? await ns.get(pending) else {
                    try? await ctx.runtime.sleep(nanoseconds: 200_000_000)
                    continue
                }
                let t1 = self.world.nowNanoseconds
                var again: [String] = []
                for (k, g) in zip(pending, got) {
                    switch g {
                    case .found(let bytes):
                        if let id = inspect(bytes, key: q(k), raw: k, tenant: tenant) { reads.append(ReadRecord(key: q(k), invoke: t0, complete: t1, observed: .page(id))) }
                    case .missing:
                        reads.append(ReadRecord(key: q(k), invoke: t0, complete: t1, observed: .missing))
                    case .failed:
                        again.append(k)
                    }
                }
                pending = again
                if !again.isEmpty { try? await ctx.runtime.sleep(nanoseconds: 200_000_000) }
            }
        }
        while true {
            if case .problems(let p)? = try? await ns.client.kvIndex.call(.audit(name: ns.name)) {
                violations += p.map { "index_sound: \($0)" }
                break
            }
            try? await ctx.runtime.sleep(nanoseconds: 200_000_000)
        }
        if let u = try? await ns.usage() {
            counters["slots_confirmed_at_end", default: 0] += Double(u.confirmed)
            counters["slots_high_water", default: 0] += Double(u.highWater)
        }
    }

    // MARK: Checks

    func historyViolations(_ invariants: Set<String>) -> [String] {
        var out: [String] = []
        for r in reads {
            let history = puts[r.key] ?? []
            switch r.observed {
            case .page(let id):
                guard invariants.contains("last_put") else { continue }
                guard let p = history.first(where: { $0.id == id }) else {
                    out.append("last_put: a read of \(r.key) returned put \(id), which never wrote that key")
                    continue
                }
                if p.invoke > r.complete { out.append("last_put: a read of \(r.key) returned put \(id) before it began") }
                // A newer put installed the key after this one finished and before the
                // read began: the read must not see the older page.
                if let pc = p.complete, let newer = history.first(where: { $0.installed && $0.id != id && $0.invoke > pc && ($0.complete ?? .max) < r.invoke }) {
                    out.append("last_put: a read of \(r.key) at \(Double(r.invoke) / 1e9)s returned put \(id), replaced by put \(newer.id) at \(Double(newer.complete ?? 0) / 1e9)s")
                }
            case .missing:
                guard invariants.contains("no_lost_pages") else { continue }
                if let p = history.first(where: { $0.installed && ($0.complete ?? .max) < r.invoke }) {
                    out.append("no_lost_pages: \(r.key) read as missing at \(Double(r.invoke) / 1e9)s although put \(p.id) stored it at \(Double(p.complete ?? 0) / 1e9)s, with the namespace under capacity")
                }
            case .present:
                continue
            }
            if out.count > 40 { break }
        }
        return out
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
