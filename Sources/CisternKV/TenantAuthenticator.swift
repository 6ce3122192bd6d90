import CisternAuth
import CisternCore
import CisternMeta

/// Finds the tenant of a request's token in the tenant registry (one transaction),
/// remembering answers for `cacheNanoseconds`: a revoked token stops working within
/// that time on every metadata server. At most `cacheEntriesMax` tokens are
/// remembered (the cache starts over when full).
public actor TenantAuthenticator: CallerAuthenticator {
    public nonisolated let unownedExecutor: UnownedSerialExecutor
    let kv: any TransactionalKV
    let runtime: any Runtime
    public let cacheNanoseconds: UInt64
    public static let cacheEntriesMax = 4_096
    private var cache: [[UInt8]: (tenant: String, atNanoseconds: UInt64)] = [:]

    public init(kv: any TransactionalKV, runtime: any Runtime, cacheNanoseconds: UInt64 = 1_000_000_000) {
        self.kv = kv
        self.runtime = runtime
        self.cacheNanoseconds = cacheNanoseconds
        self.unownedExecutor = runtime.makeActorExecutor()
    }

    public func caller(token: String?) async throws(AuthError) -> Caller {
        guard let token, !token.isEmpty else {
            throw .unauthenticated("the request carries no token; give the client its tenant's token (CISTERN_TOKEN=TOKEN or CISTERN_TOKEN_FILE=FILE; a cistern up data dir's admin.token is found by itself)")
        }
        let digest = TokenDigest.of(token)
        let now = runtime.nowNanoseconds()
        if let hit = cache[digest], now &- hit.atNanoseconds < cacheNanoseconds { return Caller(tenant: hit.tenant) }
        let tenant: String
        do {
            tenant = try await kv.transact(runtime: runtime, idempotent: true) { tx in try await TenantRegistry(tx, now: now).authenticate(digest) }
        } catch TenantError.unauthenticated {
            cache[digest] = nil
            throw .unauthenticated("unknown or revoked token; ask an admin for a token of your tenant (POST /v1/tenants/NAME/tokens on the master)")
        } catch {
            throw .unavailable("cannot check the token now: \(error)")
        }
        if cache.count >= Self.cacheEntriesMax { cache.removeAll(keepingCapacity: true) }
        cache[digest] = (tenant, now)
        return Caller(tenant: tenant)
    }
}

extension TenantRegistry {
    /// Makes sure the admin tenant exists and `digest` is one of its tokens
    /// (idempotent: a metadata server does it at every start, several at once).
    public func bootstrapAdmin(tokenDigest digest: [UInt8], wall: UInt64? = nil) async throws {
        try await ensure(TenantLimits.admin, quota: TenantQuota(bytes: 0, pages: 0))
        _ = try await Namespace(tx, now: now, wall: wall).mkdir(Access.root(of: TenantLimits.admin), parents: true)
        if let who = try? await authenticate(digest) {
            guard who == TenantLimits.admin else { throw TenantError.forbidden("the configured admin token belongs to tenant '\(who)'; configure another") }
            return
        }
        try await addToken(TenantLimits.admin, id: "bootstrap-" + digest.prefix(4).map { String($0, radix: 16) }.joined(), hash: digest)
    }
}

/// Which KV index requests a caller may send (pure): the admin everything; another
/// tenant T only requests on namespaces named `T.NAME`, no tenant management, and
/// namespaces it creates are its own (charged to its quota).
public enum KVAccess {
    /// The request to run for `caller`, or why it may not (`.failure`).
    public static func authorize(_ request: KVRequest, caller: Caller) -> Result<KVRequest, AuthError> {
        if caller.isAdmin { return .success(request) }
        let t = caller.tenant
        switch request {
        case .tenant:
            return .failure(.forbidden("only the admin tenant manages tenants"))
        case .list:
            return .success(request)
        case .createNamespace(let name, let p, let c, let f, let d):
            guard Access.mayUse(namespace: name, tenant: t) else { return .failure(.forbidden(namespaceRule(name, t))) }
            return .success(.createOwnedNamespace(owner: t, name: name, pageBytes: p, capacityPages: c, files: f, durability: d))
        case .createOwnedNamespace(let owner, let name, _, _, _, _):
            guard owner == t else { return .failure(.forbidden("\(caller) cannot create a namespace for tenant '\(owner.prefix(40))'")) }
            guard Access.mayUse(namespace: name, tenant: t) else { return .failure(.forbidden(namespaceRule(name, t))) }
            return .success(request)
        default:
            guard let name = request.namespace, Access.mayUse(namespace: name, tenant: t) else {
                return .failure(.forbidden(namespaceRule(request.namespace ?? "", t)))
            }
            return .success(request)
        }
    }

    static func namespaceRule(_ name: String, _ tenant: String) -> String {
        "tenant '\(tenant)' may use only namespaces named '\(tenant).NAME', not '\(name.prefix(200))'"
    }
}
