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
                             maintenance settings: MaintenanceSettings = MaintenanceSettings()) async -> MetadataServer {
        let s = MetadataServer(kv: kv, runtime: runtime, mgmtd: mgmtd, remover: remover, lengthProbe: lengthProbe, chunkBytes: chunkBytes, stripe: stripe, maintenance: settings)
        await s.meta.serve(on: transport)
        await s.kvIndex.serve(on: transport)
        await mgmtd.serveHints()
        runtime.spawn("meta.routing") { await s.followRouting(everyNanoseconds: heartbeatNanoseconds) }
        let maintenance = s.maintenance
        runtime.spawn("meta.maintenance") { await maintenance.run(runtime: runtime) }
        return s
    }

    init(kv: any TransactionalKV, runtime: any Runtime, mgmtd: MgmtdClient, remover: any ChunkRemover, lengthProbe: any ChunkLengthProbe, chunkBytes: UInt32, stripe: Int,
         maintenance settings: MaintenanceSettings) {
        self.runtime = runtime
        self.mgmtd = mgmtd
        self.chunkBytes = chunkBytes
        self.stripe = stripe
        // Until routing names chains, file creation is refused ("no chains") rather
        // than placing files nowhere.
        self.meta = MetaService(kv: kv, runtime: runtime, policy: LayoutPolicy(table: 0, tableVersion: 0, chains: [], chunkBytes: chunkBytes, stripe: stripe))
        self.kvIndex = KVIndexService(kv: kv, runtime: runtime, policy: nil)
        self.maintenance = MetaMaintenance(meta: meta, me: mgmtd.node.rawValue, remover: remover,
                                           probe: lengthProbe, settings: settings, runtime: runtime)
        self.unownedExecutor = runtime.makeActorExecutor()
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
