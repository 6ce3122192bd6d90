import CisternAuth
import CisternCore
import CisternMeta
import CisternMgmtd
import CisternRouting

extension LayoutPolicy {
    /// The policy for new files from routing: the newest chain table (the one with the
    /// highest id), `chunkBytes` per chunk, striped over up to `stripe` chains. Nil
    /// while no chain table exists.
    public init?(routing: RoutingInfo, chunkBytes: UInt32 = 1 << 20, stripe: Int = 4) {
        guard let table = routing.tables.max(by: { $0.id < $1.id }), !table.chains.isEmpty else { return nil }
        self.init(table: table.id, tableVersion: table.version, chains: table.chains, chunkBytes: chunkBytes, stripe: min(stripe, table.chains.count))
    }
}

/// A metadata server process's services: the file-system namespace and the KV cache
/// index, both over the shared transactional KV, with the layout policy for new files
/// following the cluster manager's chain tables. It heartbeats as a `meta` node so
/// the cluster manager lists it and pushes routing hints, and runs its share of the
/// background work (`MetaMaintenance`: garbage collection, length reconciliation of
/// abandoned write sessions, expiry of idempotency records) under a lease that one
/// metadata server holds at a time.
public actor MetadataServer {
    public nonisolated let unownedExecutor: UnownedSerialExecutor
    public nonisolated let meta: MetaService
    public nonisolated let kvIndex: KVIndexService
    public nonisolated let mgmtd: MgmtdClient
    public nonisolated let maintenance: MetaMaintenance
    let runtime: any Runtime
    let chunkBytes: UInt32
    let stripe: Int
    private var policyVersion: UInt64 = 0

    /// Starts serving on `transport` and follows routing from `mgmtd`. The metadata
    /// server reaches storage only through `remover` (garbage collection) and
    /// `lengthProbe` (length reconciliation); `Cistern` supplies the storage-backed
    /// ones (`MetadataServer.start` without them).
    public static func start(kv: any TransactionalKV, runtime: any Runtime, transport: any Transport, mgmtd: MgmtdClient,
                             remover: any ChunkRemover, lengthProbe: any ChunkLengthProbe,
                             chunkBytes: UInt32 = 1 << 20, stripe: Int = 4, heartbeatNanoseconds: UInt64 = 1_000_000_000,
                             maintenance settings: MaintenanceSettings = MaintenanceSettings(), auth: MetadataAuth? = nil) async -> MetadataServer {
        let s = MetadataServer(kv: kv, runtime: runtime, mgmtd: mgmtd, remover: remover, lengthProbe: lengthProbe, chunkBytes: chunkBytes, stripe: stripe, maintenance: settings,
                               auth: auth.map { AuthSettings(key: $0.key, authenticator: TenantAuthenticator(kv: kv, runtime: runtime, cacheNanoseconds: $0.tokenCacheNanoseconds)) })
        if let digest = auth?.adminTokenDigest { await s.bootstrapAdmin(digest, kv: kv) }
        await s.meta.serve(on: transport)
        await s.kvIndex.serve(on: transport)
        await mgmtd.serveHints()
        runtime.spawn("meta.routing") { await s.followRouting(everyNanoseconds: heartbeatNanoseconds) }
        let maintenance = s.maintenance
        runtime.spawn("meta.maintenance") { await maintenance.run(runtime: runtime) }
        return s
    }

    init(kv: any TransactionalKV, runtime: any Runtime, mgmtd: MgmtdClient, remover: any ChunkRemover, lengthProbe: any ChunkLengthProbe, chunkBytes: UInt32, stripe: Int,
         maintenance settings: MaintenanceSettings, auth: AuthSettings?) {
        self.runtime = runtime
        self.mgmtd = mgmtd
        self.chunkBytes = chunkBytes
        self.stripe = stripe
        // Until routing names chains, file creation is refused ("no chains") rather
        // than placing files nowhere.
        self.meta = MetaService(kv: kv, runtime: runtime, policy: LayoutPolicy(table: 0, tableVersion: 0, chains: [], chunkBytes: chunkBytes, stripe: stripe), auth: auth, remover: remover)
        self.kvIndex = KVIndexService(kv: kv, runtime: runtime, policy: nil, auth: auth)
        self.maintenance = MetaMaintenance(meta: meta, me: mgmtd.node.rawValue, remover: remover,
                                           probe: lengthProbe, settings: settings, runtime: runtime)
        self.unownedExecutor = runtime.makeActorExecutor()
    }

    /// Makes sure the admin tenant has the configured token, retrying (a minute at
    /// most) while the store is unreachable; said in the log if it never succeeds.
    func bootstrapAdmin(_ digest: [UInt8], kv: any TransactionalKV) async {
        let now = runtime.nowNanoseconds()
        let wall = runtime.wallClockNanoseconds()
        let retry = RetryPolicy.fixed(attemptsMax: 120, delayNanoseconds: 500_000_000)
        var last = ""
        for attempt in retry.attempts {
            await retry.wait(beforeAttempt: attempt, on: runtime)
            do {
                try await kv.transact(runtime: runtime, idempotent: true) { tx in try await TenantRegistry(tx, now: now).bootstrapAdmin(tokenDigest: digest, wall: wall) }
                return
            } catch let e as TenantError {
                last = "\(e)"
                break
            } catch {
                last = "\(error)"
            }
        }
        runtime.logger("meta").error("the admin tenant's token could not be set up: \(last)")
    }

    /// Heartbeats and refreshes the layout policy whenever routing changes.
    func followRouting(everyNanoseconds interval: UInt64) async {
        while true {
            try? await mgmtd.heartbeat(targets: [])
            await applyRouting()
            do { try await runtime.sleep(nanoseconds: interval) } catch { return }
        }
    }

    /// Applies the newest routing now (also called by tests and bootstrap code).
    public func applyRouting() async {
        guard let routing = await mgmtd.routing, routing.version > policyVersion,
              let policy = LayoutPolicy(routing: routing, chunkBytes: chunkBytes, stripe: stripe) else { return }
        policyVersion = routing.version
        await meta.setPolicy(policy)
        await kvIndex.setPolicy(policy)
    }
}

/// What a metadata server needs to enforce tenants: the cluster key (shared with the
/// storage servers) and, optionally, the admin token's digest to set up at start.
public struct MetadataAuth: Sendable {
    public var key: CapabilityKey
    public var adminTokenDigest: [UInt8]?
    /// How long a token's tenant is remembered (a revoked token works that long).
    public var tokenCacheNanoseconds: UInt64
    public init(key: CapabilityKey, adminTokenDigest: [UInt8]? = nil, tokenCacheNanoseconds: UInt64 = 1_000_000_000) {
        self.key = key
        self.adminTokenDigest = adminTokenDigest
        self.tokenCacheNanoseconds = tokenCacheNanoseconds
    }
}
