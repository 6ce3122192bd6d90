import Cistern
import CisternAuth
import CisternCore
import CisternKV
import CisternMaster
import CisternMeta
import CisternMgmtd
import CisternNIO
import CisternPOSIX
import CisternPostgres
import CisternRDMA
import CisternSQLite
import CisternStorage
import CisternURing
import CoreMetrics
import Foundation
import Logging
import Metrics
import Prometheus
import ServiceLifecycle

/// One server process (`cistern server --role R --config FILE`): the same actors the
/// simulator runs, over TCP, io_uring or POSIX disks and SQLite or PostgreSQL. Runs
/// until SIGTERM or SIGINT, then stops serving and exits cleanly.
public struct ServerProcess: Service {
    public let config: ServerConfig
    /// Called once the node serves, with the bound address (tests and `cistern up`).
    let onReady: @Sendable (NodeAddress) -> Void
    /// The process's metrics as Prometheus text (the master serves them on its HTTP port too).
    let metricsText: @Sendable () -> String

    public init(config: ServerConfig, metricsText: @escaping @Sendable () -> String = { "" }, onReady: @escaping @Sendable (NodeAddress) -> Void = { _ in }) {
        self.config = config
        self.metricsText = metricsText
        self.onReady = onReady
    }

    /// Runs the process under a service group that turns SIGTERM/SIGINT into a
    /// graceful shutdown.
    public static func runUntilSignalled(_ config: ServerConfig, pidFile: String? = nil) async throws {
        LargeBuffers.tuneAllocator()
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        // Storage and index requests take tens of microseconds to seconds.
        factory.defaultDurationHistogramBuckets = [
            .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
            .microseconds(2_500), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
            .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2_500), .seconds(5), .seconds(10),
        ]
        MetricsSystem.bootstrap(factory)
        let process = ServerProcess(config: config, metricsText: { registry.emitToString() }) { address in
            let line = "cistern server: \(config.node.name) (\(config.node.role.rawValue), node \(config.node.id)) serving on \(address)\n"
            FileHandle.standardOutput.write(Data(line.utf8))
            if let pidFile { try? "\(getpid())".write(toFile: pidFile, atomically: true, encoding: .utf8) }
        }
        var logger = Logger(label: "cistern.server")
        logger.logLevel = .warning
        let group = ServiceGroup(services: [MetricsService(config: config, registry: registry), process], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        try await group.run()
        if let pidFile { try? FileManager.default.removeItem(atPath: pidFile) }
    }

    public func run() async throws {
        if config.node.role == .master { return try await runMaster() }
        let level = Logger.Level(rawValue: config.logLevel ?? "info") ?? .info
        let runtime = ProductionRuntime(nodeName: config.node.name, logLevel: level)
        let log = runtime.logger("server")
        let me = NodeID(config.node.id)
        var seeds: [NodeID: [NodeAddress]] = [:]
        for p in config.cluster.mgmtd + (config.cluster.meta ?? []) { seeds[NodeID(p.id), default: []].append(try ServerConfig.address(p.address)) }
        let resolver = ClusterResolver(seeds: seeds)
        let listen = try ServerConfig.address(config.node.listen)
        // RDMA verbs for bulk transfers when a device is usable; otherwise TCP (said
        // once in the log with the reason).
        let factory = TransportFactory(runtime: runtime, logger: log)
        let transport = factory.makeTransport(localNode: me, listen: listen, resolver: resolver)
        let bound = try await transport.start()
        let transportKind = "\(factory.choice())"
        let advertised = config.node.advertise ?? [bound.description]
        let mgmtdIDs = config.cluster.mgmtd.map { NodeID($0.id) }
        // Every role talks to the cluster manager through one client: it advertises
        // this node's addresses (in heartbeats, where the role sends them), feeds the
        // resolver and the routing gauges.
        let role: NodeRole = switch config.node.role {
        case .mgmtd: .mgmtd
        case .meta: .meta
        case .storage: .storage
        case .master: preconditionFailure("the master runs in runMaster()")
        }
        let key = try clusterKey()
        let mgmtd = MgmtdClient(node: me, role: role, name: config.node.name, runtime: runtime, transport: transport, replicas: mgmtdIDs, service: key?.service)
        await mgmtd.advertise(advertised)
        resolver.follow(mgmtd, runtime: runtime)
        runtime.spawn("metrics.routing") { await RoutingGauges().follow(mgmtd, runtime: runtime) }
        let service: any Sendable
        switch config.node.role {
        case .mgmtd:
            if key == nil { log.warning("no auth section: this cluster manager takes routing changes and server heartbeats from anyone (see docs/operations.md, Tenants and authentication)") }
            service = await Mgmtd.start(id: me, runtime: runtime, transport: transport, kv: try openKV(), capabilityKey: key)
        case .meta:
            let auth = try metadataAuth()
            if auth == nil { log.warning("no auth section: this metadata server serves every caller as the admin (see docs/operations.md, Tenants and authentication)") }
            let kv = try openKV()
            service = await MetadataServer.start(kv: kv, runtime: runtime, transport: transport, mgmtd: mgmtd,
                                                 maintenance: Self.maintenanceSettings(config.meta), auth: auth)
            runtime.spawn("metrics.tenants") { await TenantGauges().follow(kv, runtime: runtime) }
        case .storage:
            guard let s = config.storage else { throw ConfigError.invalid(path: "config", problems: ["storage: missing"]) }
            let (disk, kind) = try openDisk(s)
            log.info("storage disk: \(kind) at \(s.dataDir)")
            if key == nil { log.warning("no auth section: this storage node serves chunk requests without capabilities (see docs/operations.md, Tenants and authentication)") }
            var storageConfig = StorageConfig()
            if let m = s.memoryCacheMiB { storageConfig.memoryCacheBytes = m << 20 }
            log.info("storage memory tier: \(storageConfig.memoryCacheBytes >> 20) MiB")
            service = try await StorageService.start(node: me, runtime: runtime, transport: transport, disk: disk, mgmtd: mgmtd,
                                                     targets: s.targets.map(TargetID.init), config: storageConfig, capabilityKey: key)
        case .master:
            preconditionFailure("the master runs in runMaster()")
        }
        log.info("\(config.node.name) serving as \(config.node.role.rawValue) on \(bound) (transport: \(transportKind))")
        onReady(bound)
        try? await gracefulShutdown()
        log.info("\(config.node.name): SIGTERM, shutting down")
        await transport.shutdown()
        withExtendedLifetime((service, mgmtd)) {}
    }

    /// The master: a client of the cluster serving HTTP until SIGTERM.
    func runMaster() async throws {
        guard let m = config.master else { throw ConfigError.invalid(path: "config", problems: ["master: missing"]) }
        let token: String
        do {
            token = try String(contentsOfFile: m.adminTokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        } catch {
            throw ConfigError.unreadable(path: m.adminTokenFile, reason: "the admin token file: \((error as NSError).localizedDescription)")
        }
        guard token.count >= 16 else { throw ConfigError.invalid(path: m.adminTokenFile, problems: ["the admin token must have at least 16 characters"]) }
        var settings = MasterSettings(listen: try ServerConfig.address(config.node.listen), adminToken: token)
        if let b = m.bodyBytesMax { settings.bodyBytesMax = b }
        if let t = m.idleTimeoutSeconds { settings.idleTimeoutSeconds = Int64(t) }
        if let c = m.connectionsMax { settings.connectionsMax = c }
        let session = try await ClientSession.connect(config.cluster, name: config.node.name, token: token)
        let master = MasterServer(client: session.client, settings: settings, metricsText: metricsText)
        // The cluster may still be starting: retry the bootstrap until it answers (a minute).
        let retry = RetryPolicy.fixed(attemptsMax: 120, delayNanoseconds: 500_000_000)
        for attempt in retry.attempts {
            await retry.wait(beforeAttempt: attempt, on: session.client.runtime)
            do {
                try await master.bootstrap()
                break
            } catch where attempt + 1 < retry.attemptsMax {
                continue
            }
        }
        try await master.run(onReady: onReady)
        await session.close()
    }

    /// The cluster key named by `auth.cluster_key_file` (nil without an auth section).
    func clusterKey() throws -> CapabilityKey? {
        guard let a = config.auth else { return nil }
        let text: String
        do {
            text = try String(contentsOfFile: a.clusterKeyFile, encoding: .utf8)
        } catch {
            throw ConfigError.unreadable(path: a.clusterKeyFile, reason: "auth.cluster_key_file: \((error as NSError).localizedDescription); make one with: cistern keygen > \(a.clusterKeyFile)")
        }
        do {
            return try CapabilityKey(hex: text)
        } catch {
            throw ConfigError.invalid(path: a.clusterKeyFile, problems: ["\(error)"])
        }
    }

    /// A metadata server's authentication settings from `auth:` (nil without it).
    func metadataAuth() throws -> MetadataAuth? {
        guard let a = config.auth, let key = try clusterKey() else { return nil }
        var digest: [UInt8]?
        if let f = a.adminTokenFile {
            let token: String
            do {
                token = try String(contentsOfFile: f, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            } catch {
                throw ConfigError.unreadable(path: f, reason: "auth.admin_token_file: \((error as NSError).localizedDescription)")
            }
            guard token.count >= 16 else { throw ConfigError.invalid(path: f, problems: ["the admin token must have at least 16 characters"]) }
            digest = TokenDigest.of(token)
        }
        return MetadataAuth(key: key, adminTokenDigest: digest, tokenCacheNanoseconds: UInt64((a.tokenCacheSeconds ?? 1) * 1e9))
    }

    /// The config's `meta:` section over the defaults.
    static func maintenanceSettings(_ m: ServerConfig.Meta?) -> MaintenanceSettings {
        var out = MaintenanceSettings()
        func ns(_ seconds: Double?, _ keep: UInt64) -> UInt64 { seconds.map { UInt64($0 * 1e9) } ?? keep }
        out.intervalNanoseconds = ns(m?.maintenanceIntervalSeconds, out.intervalNanoseconds)
        out.garbageDelayNanoseconds = ns(m?.gcDelaySeconds, out.garbageDelayNanoseconds)
        out.sessionTimeoutNanoseconds = ns(m?.sessionTimeoutSeconds, out.sessionTimeoutNanoseconds)
        out.idempotencyRetentionNanoseconds = ns(m?.idempotencyRetentionSeconds, out.idempotencyRetentionNanoseconds)
        return out
    }

    func openKV() throws -> any TransactionalKV {
        guard let kv = config.kv else { throw ConfigError.invalid(path: "config", problems: ["kv: missing"]) }
        switch kv.kind {
        case "postgres":
            if let file = kv.conninfoFile {
                guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                    throw ConfigError.invalid(path: file, problems: ["kv.conninfo_file: cannot read \(file); mount the Secret holding the connection string there"])
                }
                return try PostgresKV(conninfo: text.trimmingCharacters(in: .whitespacesAndNewlines))
            }
            return try PostgresKV(conninfo: kv.conninfo ?? "")
        default: return try SQLiteKV(path: kv.path ?? "")
        }
    }

    func openDisk(_ s: ServerConfig.Storage) throws -> (any Disk, String) {
        try FileManager.default.createDirectory(atPath: s.dataDir, withIntermediateDirectories: true)
        switch s.disk ?? "auto" {
        case "posix": return (try POSIXDisk(root: s.dataDir), "posix")
        case "io_uring": return (try IOUringDisk(root: s.dataDir), "io_uring")
        default: return try DiskFactory.makeBest(root: s.dataDir)
        }
    }
}

/// Serves `/metrics` while the process runs, and samples gauges that no component
/// updates itself.
struct MetricsService: Service {
    let config: ServerConfig
    let registry: PrometheusCollectorRegistry

    func run() async throws {
        guard let m = config.metrics else {
            try? await gracefulShutdown()
            return
        }
        let endpoint = try await MetricsEndpoint.start(listen: try ServerConfig.address(m.listen), registry: registry)
        let up = Gauge(label: "cistern_up", dimensions: [("role", config.node.role.rawValue), ("node", config.node.name)])
        up.record(1)
        try? await gracefulShutdown()
        await endpoint.close()
    }
}

/// Chain and node gauges from the routing this process sees (sampled every second).
struct RoutingGauges {
    let version = Gauge(label: "cistern_routing_version")
    let chains = Gauge(label: "cistern_chains_total")
    let serving = Gauge(label: "cistern_chains_fully_serving")
    let degraded = Gauge(label: "cistern_chains_degraded")
    let nodesActive = Gauge(label: "cistern_nodes", dimensions: [("status", "active")])
    let nodesFailed = Gauge(label: "cistern_nodes", dimensions: [("status", "failed")])
    /// Chain members by public state (`cistern_chain_targets{state}`).
    let targets = Dictionary(uniqueKeysWithValues: PublicState.allCases.map {
        ($0, Gauge(label: "cistern_chain_targets", dimensions: [("state", "\($0)")]))
    })

    func follow(_ mgmtd: MgmtdClient, runtime: any Runtime) async {
        while true {
            if let r = await mgmtd.routing {
                var byState: [PublicState: Int] = [:]
                for c in r.chains { for t in c.targets { byState[t.state, default: 0] += 1 } }
                for (state, gauge) in targets { gauge.record(byState[state] ?? 0) }
                version.record(Double(r.version))
                chains.record(Double(r.chains.count))
                let full = r.chains.filter { c in c.targets.allSatisfy { $0.state == .serving } }.count
                serving.record(Double(full))
                degraded.record(Double(r.chains.count - full))
                nodesActive.record(Double(r.nodes.filter { $0.status == .active }.count))
                nodesFailed.record(Double(r.nodes.filter { $0.status == .failed }.count))
            }
            do { try await runtime.sleep(nanoseconds: 1_000_000_000) } catch { return }
        }
    }
}

/// Per-tenant use and quota (`cistern_tenant_{used,quota}_{bytes,pages}{tenant}`,
/// `cistern_tenant_namespaces{tenant}`), read every 10 s in one read-only
/// transaction by each metadata server (they agree; dashboards take the max).
/// A tenant that is deleted drops to zero. At most `tenantsMax` tenants are shown.
struct TenantGauges {
    static let intervalNanoseconds: UInt64 = 10_000_000_000
    static let tenantsMax = 1_000

    func follow(_ kv: any TransactionalKV, runtime: any Runtime) async {
        var shown: Set<String> = []
        while true {
            let now = runtime.nowNanoseconds()
            if let infos = try? await kv.transact(runtime: runtime, attemptsMax: 3, idempotent: true, { tx in
                try await TenantRegistry(tx, now: now).list()
            }) {
                var seen: Set<String> = []
                for info in infos.prefix(Self.tenantsMax) {
                    seen.insert(info.name)
                    record(info.name, used: info.used, quota: info.quota, namespaces: info.namespaces.count)
                }
                for gone in shown.subtracting(seen) { record(gone, used: .init(bytes: 0, pages: 0), quota: .init(bytes: 0, pages: 0), namespaces: 0) }
                shown = seen
            }
            do { try await runtime.sleep(nanoseconds: Self.intervalNanoseconds) } catch { return }
        }
    }

    private func record(_ tenant: String, used: TenantQuota, quota: TenantQuota, namespaces: Int) {
        let d = [("tenant", tenant)]
        Gauge(label: "cistern_tenant_used_bytes", dimensions: d).record(used.bytes)
        Gauge(label: "cistern_tenant_used_pages", dimensions: d).record(used.pages)
        Gauge(label: "cistern_tenant_quota_bytes", dimensions: d).record(quota.bytes)
        Gauge(label: "cistern_tenant_quota_pages", dimensions: d).record(quota.pages)
        Gauge(label: "cistern_tenant_namespaces", dimensions: d).record(namespaces)
    }
}
