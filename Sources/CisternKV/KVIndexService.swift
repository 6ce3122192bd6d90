import CisternAuth
import CisternCore
import CisternMeta
import CisternWire

/// The KV cache index, served by the metadata servers (like them, stateless: every
/// request is one serializable transaction on the shared transactional KV, so any
/// server can answer any request).
///
/// Retries are safe without idempotency records: a repeated reserve only holds extra
/// slots until their reservations expire; confirm, abort, delete and lookup give the
/// same result when applied twice.
public actor KVIndexService {
    public nonisolated let unownedExecutor: UnownedSerialExecutor
    let kv: any TransactionalKV
    let runtime: any Runtime
    /// Where namespaces' data files go (the chains of the current chain table).
    public private(set) var policy: LayoutPolicy?
    /// How long a put may take between reserve and confirm.
    public var reservationNanoseconds: UInt64 = KVCacheLimits.reservationNanoseconds
    private var rng: DeterministicRandom
    public private(set) var evictions = 0
    private let metrics = KVIndexMetrics()
    /// The folder of every namespace's data files.
    public static let root = "/.kvcache"

    /// Tenants and capabilities (nil: a cluster without authentication).
    public nonisolated let auth: AuthSettings?

    public init(kv: any TransactionalKV, runtime: any Runtime, policy: LayoutPolicy?, auth: AuthSettings? = nil) {
        self.auth = auth
        self.kv = kv
        self.runtime = runtime
        self.policy = policy
        self.rng = runtime.random("kv.index")
        self.unownedExecutor = runtime.makeActorExecutor()
    }

    public func setPolicy(_ p: LayoutPolicy) { policy = p }

    /// Serves `kvIndexService` requests on `transport`. With authentication, each
    /// request's token names its caller, `KVAccess` decides what it may do, a
    /// namespace listing shows only the caller's own, and a reply describing a
    /// namespace carries capabilities for its data files.
    public func serve(on transport: any Transport) async {
        let auth = self.auth
        await transport.serve(kvIndexService) { [self] request in
            var r = WireReader(request.message.header)
            let parsed = try KVRequest(from: &r)
            let trailer = try AuthTrailer.read(after: &r)
            guard let auth else { return Message(method: 0, header: await self.execute(parsed).wireBytes()) }
            let caller: Caller
            do throws(AuthError) {
                caller = try await auth.authenticator.caller(token: trailer?.token)
            } catch .unavailable(let why) {
                return Message(method: 0, header: KVReply.unavailable(why).wireBytes())
            } catch {
                return Message(method: 0, header: KVReply.refused(.tenant(.unauthenticated)).wireBytes())
            }
            let allowed: KVRequest
            switch KVAccess.authorize(parsed, caller: caller) {
            case .success(let a): allowed = a
            case .failure(let e): return Message(method: 0, header: KVReply.refused(.tenant(.forbidden("\(e)"))).wireBytes())
            }
            var reply = await self.execute(allowed)
            var grant: AuthTrailer?
            switch reply {
            case .config(let c):
                grant = AuthTrailer(capabilities: c.files.map { auth.key.mint(inode: $0.inode.rawValue, rights: .readWrite) })
            case .namespaces(let names) where !caller.isAdmin:
                reply = .namespaces(names.filter { Access.mayUse(namespace: $0, tenant: caller.tenant) })
            default:
                break
            }
            return Message(method: 0, header: grant.map { $0.appended(to: reply.wireBytes()) } ?? reply.wireBytes())
        }
    }

    /// Runs one request and records it in the metrics.
    public func execute(_ request: KVRequest) async -> KVReply {
        let start = runtime.nowNanoseconds()
        // Fault point: the index's store is briefly unreachable (clients retry).
        if runtime.faultPoint("kv.index.unavailable") { return .unavailable("fault point: the KV store did not answer") }
        let reply = await run(request, now: start)
        metrics.record(request, reply, nanoseconds: runtime.nowNanoseconds() &- start)
        return reply
    }

    private func run(_ request: KVRequest, now: UInt64) async -> KVReply {
        do {
            if let ns = request.namespace { try KVCacheError.check(namespace: ns) }
            switch request {
            case .createNamespace(let name, let pageBytes, let capacity, let files, let durability):
                return .config(try await createNamespace(name, pageBytes: pageBytes, capacityPages: capacity, files: files, durability: durability, now: now))
            case .createOwnedNamespace(let owner, let name, let pageBytes, let capacity, let files, let durability):
                return .config(try await createNamespace(name, pageBytes: pageBytes, capacityPages: capacity, files: files, durability: durability, owner: owner, now: now))
            case .tenant(let t):
                return try await kv.transact(runtime: runtime, idempotent: true) { tx in try await Self.execute(t, TenantRegistry(tx, now: now), Namespace(tx, now: now, wall: runtime.wallClockNanoseconds())) }
            case .describe(let name):
                return .config(try await kv.transact(runtime: runtime, idempotent: true) { tx in try await KVIndex(tx, now: now).config(name) })
            case .reserve(let name, let keys):
                try KVCacheError.check(keys: keys)
                let tokens = keys.map { _ in rng.next() | 1 }
                let reservation = reservationNanoseconds
                let (outcomes, evicted) = try await kv.transact(runtime: runtime, idempotent: true) { tx in
                    try await KVIndex(tx, now: now).reserve(name, keys: keys, tokens: tokens, reservationNanoseconds: reservation)
                }
                evictions += evicted
                return .reserved(outcomes, evicted: evicted)
            case .confirm(let name, let items):
                try KVCacheError.check(keys: items.map(\.key))
                return .confirmed(try await kv.transact(runtime: runtime, idempotent: true) { tx in try await KVIndex(tx, now: now).confirm(name, items) })
            case .abort(let name, let slots, let tokens):
                guard slots.count == tokens.count, slots.count <= KVCacheLimits.batchKeysMax else {
                    throw KVCacheError.invalidConfig("abort needs one token per slot, at most \(KVCacheLimits.batchKeysMax)")
                }
                let pairs = Array(zip(slots, tokens))
                try await kv.transact(runtime: runtime, idempotent: true) { tx in try await KVIndex(tx, now: now).abort(name, pairs.map { ($0.0, $0.1) }) }
                return .ok
            case .lookup(let name, let keys, let lease):
                try KVCacheError.check(keys: keys)
                // A lookup writes only read leases and access times: a relaxed commit
                // (no fsync on a get's path). Losing one in a power loss costs at most
                // a hit (a reused slot fails the reader's CRC check and reads as
                // missing) or an eviction order a moment old.
                return .located(try await kv.transact(runtime: runtime, idempotent: true, durability: .relaxed) { tx in
                    try await KVIndex(tx, now: now).lookup(name, keys: keys, leaseNanoseconds: lease)
                })
            case .exists(let name, let keys):
                try KVCacheError.check(keys: keys)
                return .present(try await kv.transact(runtime: runtime, idempotent: true) { tx in try await KVIndex(tx, now: now).exists(name, keys: keys) })
            case .delete(let name, let keys):
                try KVCacheError.check(keys: keys)
                return .deleted(try await kv.transact(runtime: runtime, idempotent: true) { tx in try await KVIndex(tx, now: now).delete(name, keys: keys) })
            case .usage(let name):
                return .usage(try await kv.transact(runtime: runtime, idempotent: true) { tx in try await KVIndex(tx, now: now).usage(name) })
            case .drop(let name):
                try await kv.transact(runtime: runtime, idempotent: true) { tx in
                    let index = KVIndex(tx, now: now)
                    _ = try await index.config(name)
                    for kind in KVKeys.kinds { try await tx.clearRange(.prefix(KVKeys.tag(kind, name))) }
                    try await TenantRegistry(tx, now: now).release(namespace: name)
                    _ = try await Namespace(tx, now: now, wall: runtime.wallClockNanoseconds()).remove("\(Self.root)/\(name)", recursive: true)
                }
                return .ok
            case .list:
                let names = try await kv.transact(runtime: runtime, idempotent: true) { tx in
                    try await tx.getRange(.prefix(KVKeys.configPrefix), limit: 10_000, reverse: false).map { p in
                        String(decoding: p.key.dropFirst(KVKeys.configPrefix.count).dropLast(), as: UTF8.self)
                    }
                }
                return .namespaces(names)
            case .audit(let name):
                return .problems(try await kv.transact(runtime: runtime, idempotent: true) { tx in try await KVIndex(tx, now: now).audit(name) })
            }
        } catch let e as KVCacheError {
            return .refused(e)
        } catch let e as TenantError {
            return .refused(.tenant(e))
        } catch let e as MetaError {
            return .refused(.invalidConfig("\(e)"))
        } catch KVError.noSpace(let d) {
            // Said at once: a retry cannot succeed until space is freed.
            return .refused(.noSpace(d))
        } catch {
            return .unavailable("\(error)")
        }
    }

    /// Runs one tenant-registry request. A tenant's file tree (`/tenants/NAME`) is
    /// made with it and removed with it (if empty), in the same transaction.
    static func execute(_ request: TenantRequest, _ registry: TenantRegistry, _ files: Namespace) async throws -> KVReply {
        switch request {
        case .create(let n, let q, let c):
            try await registry.create(n, quota: q, capacityBytes: c)
            _ = try await files.mkdir(Access.root(of: n), parents: true)
        case .delete(let n):
            try await registry.delete(n)
            do {
                _ = try await files.remove(Access.root(of: n), recursive: false)
            } catch MetaError.notFound {
                // Never made (a tenant from before file trees), nothing to remove.
            }
        case .list: return .tenants(try await registry.list())
        case .info(let n): return .tenants([try await registry.info(n)])
        case .setQuota(let n, let q, let c): try await registry.setQuota(n, q, capacityBytes: c)
        case .addToken(let t, let id, let h): try await registry.addToken(t, id: id, hash: h)
        case .revokeToken(let t, let id): try await registry.revokeToken(t, id: id)
        case .authenticate(let h): return .tenantName(try await registry.authenticate(h))
        case .ensure(let n, let q):
            try await registry.ensure(n, quota: q)
            _ = try await files.mkdir(Access.root(of: n), parents: true)
        }
        return .ok
    }

    /// Creates a namespace (or returns it if it exists with the same shape): its data
    /// files under `/.kvcache/NAME/`, each a chunk per slot with chunk size = page size,
    /// striped over every chain of the table, and its configuration in the index.
    /// With an `owner`, the namespace claims its whole capacity (pages, and pages times
    /// page size in bytes) on that tenant's quota in the same transaction.
    func createNamespace(_ name: String, pageBytes: UInt32, capacityPages: UInt64, files: UInt32, durability: KVDurability, owner: String? = nil, now: UInt64) async throws -> KVNamespaceConfig {
        guard (UInt32(KVCacheLimits.pageBytesMin)...UInt32(KVCacheLimits.pageBytesMax)).contains(pageBytes) else {
            throw KVCacheError.invalidConfig("page size \(pageBytes) bytes is outside \(KVCacheLimits.pageBytesMin)...\(KVCacheLimits.pageBytesMax)")
        }
        guard capacityPages >= 1, capacityPages <= KVCacheLimits.capacityPagesMax else {
            throw KVCacheError.invalidConfig("capacity of \(capacityPages) pages is outside 1...\(KVCacheLimits.capacityPagesMax)")
        }
        guard files >= 1, files <= KVCacheLimits.filesMax, UInt64(files) <= capacityPages else {
            throw KVCacheError.invalidConfig("\(files) data files: use 1...\(KVCacheLimits.filesMax), at most one per page")
        }
        guard let base = policy, !base.chains.isEmpty else {
            throw KVCacheError.unavailable("no chain table yet: create chains first (cistern admin create-chains)")
        }
        var pagePolicy = base
        pagePolicy.chunkBytes = pageBytes
        pagePolicy.stripe = base.chains.count
        let perFile = (capacityPages + UInt64(files) - 1) / UInt64(files)
        return try await kv.transact(runtime: runtime, idempotent: true) { tx in
            let index = KVIndex(tx, now: now)
            let tenants = TenantRegistry(tx, now: now)
            if let existing = try? await index.config(name) {
                guard existing.pageBytes == pageBytes, existing.capacityPages == capacityPages, existing.files.count == Int(files), existing.durability == durability else {
                    throw KVCacheError.namespaceMismatch(name, existing: existing.description)
                }
                if let owner, try await tenants.owner(of: name) != owner { throw TenantError.forbidden("namespace '\(name)' belongs to another tenant") }
                return existing
            }
            if let owner {
                try await tenants.claim(owner, namespace: name, bytes: capacityPages * UInt64(pageBytes), pages: capacityPages)
            }
            let ns = Namespace(tx, now: now, wall: runtime.wallClockNanoseconds())
            let folder = "\(Self.root)/\(name)"
            _ = try await ns.mkdir(folder, parents: true)
            var dataFiles: [KVDataFile] = []
            for i in 0..<Int(files) {
                let file = try await ns.create("\(folder)/pages.\(i)", mode: 0o600, policy: pagePolicy, exclusive: false)
                _ = try await ns.truncate("\(folder)/pages.\(i)", length: perFile * UInt64(pageBytes))
                guard let layout = file.layout else { throw KVCacheError.invalidConfig("data file \(i) has no layout") }
                dataFiles.append(KVDataFile(inode: file.id, layout: layout))
            }
            let config = KVNamespaceConfig(name: name, pageBytes: pageBytes, capacityPages: capacityPages, slotsPerFile: perFile, files: dataFiles, durability: durability)
            try await index.putConfig(config)
            return config
        }
    }
}
