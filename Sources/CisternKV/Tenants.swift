import CisternCore
import CisternMeta
import CisternWire

/// Bounds on the tenant registry.
public enum TenantLimits {
    public static let nameBytesMax = 32
    public static let tenantsMax = 1_000
    public static let tokensPerTenantMax = 16
    public static let tokenIDBytesMax = 64
    public static let namespacesPerTenantMax = 1_000
    /// Tokens are stored as SHA-256 digests.
    public static let tokenHashBytes = 32
    /// The tenant that manages the cluster.
    public static let admin = "admin"
}

/// Why the tenant registry refused; each names the fix.
public enum TenantError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidName(String, reason: String)
    case noSuchTenant(String)
    case tenantExists(String)
    /// The tenant still owns namespaces.
    case notEmpty(String, namespaces: [String])
    case unauthenticated
    case forbidden(String)
    case tooManyTokens(String, limit: Int)
    case noSuchToken(tenant: String, id: String)
    case quotaExceeded(tenant: String, needBytes: UInt64, needPages: UInt64, freeBytes: UInt64, freePages: UInt64)
    /// Quotas would promise more than the cluster holds.
    case overcommitted(quotaBytes: UInt64, capacityBytes: UInt64)
    /// The new quota is below what the tenant's namespaces already hold.
    case quotaBelowUse(tenant: String, usedBytes: UInt64, usedPages: UInt64)
    case limit(String)

    public var description: String {
        switch self {
        case .invalidName(let n, let r): return "invalid tenant name '\(n.prefix(80))': \(r)"
        case .noSuchTenant(let n): return "no tenant '\(n)'; list them with GET /v1/tenants (admin) or create it"
        case .tenantExists(let n): return "tenant '\(n)' already exists; pick another name or delete it first"
        case .notEmpty(let n, let ns): return "tenant '\(n)' still owns \(ns.count) namespace(s) (\(ns.prefix(5).joined(separator: ", "))); delete them first"
        case .unauthenticated: return "missing, unknown or revoked token; send 'Authorization: Bearer TOKEN' with a token issued for your tenant"
        case .forbidden(let why): return "forbidden: \(why)"
        case .tooManyTokens(let n, let l): return "tenant '\(n)' already has \(l) tokens; revoke one first"
        case .noSuchToken(let t, let id): return "tenant '\(t)' has no token '\(id.prefix(80))'; list its tokens with GET /v1/tenants/\(t)"
        case .quotaExceeded(let t, let nb, let np, let fb, let fp):
            return "quota of tenant '\(t)' exceeded: needs \(nb) bytes and \(np) pages, \(fb) bytes and \(fp) pages are left; delete a namespace or ask an admin to raise the quota"
        case .overcommitted(let q, let c):
            return "quotas would total \(q) bytes but the cluster holds \(c) bytes; lower a quota or add storage"
        case .quotaBelowUse(let t, let b, let p):
            return "tenant '\(t)' already holds \(b) bytes and \(p) pages in namespaces; a quota must be at least that (delete namespaces first)"
        case .limit(let what): return what
        }
    }

    /// Refuses a bad tenant name with the rule it breaks: 1 to 32 of a-z, 0-9, '-', '_'.
    public static func check(name: String) throws(TenantError) {
        if name.isEmpty { throw .invalidName(name, reason: "empty") }
        if name.utf8.count > TenantLimits.nameBytesMax { throw .invalidName(name, reason: "longer than \(TenantLimits.nameBytesMax) bytes") }
        let ok = name.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" || $0 == "_" }
        if !ok { throw .invalidName(name, reason: "use lower-case letters, digits, '-' and '_'") }
    }
}

/// A tenant's allowance: bytes and pages of KV namespaces (each namespace claims its
/// whole capacity when it is created, so a tenant's pages can never outgrow it and
/// eviction stays inside the tenant's own namespaces).
public struct TenantQuota: Hashable, Sendable, WireCodable {
    public var bytes: UInt64
    public var pages: UInt64
    public init(bytes: UInt64, pages: UInt64) {
        self.bytes = bytes
        self.pages = pages
    }
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.writeVarint(bytes)
            w.writeVarint(pages)
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        self = try reader.readMessage("TenantQuota") { r throws(WireError) in TenantQuota(bytes: try r.readVarint(), pages: try r.readVarint()) }
    }
}

/// A token as stored: its id (shown to admins) and the SHA-256 of its secret.
public struct TenantToken: Hashable, Sendable, WireCodable {
    public var id: String
    public var hash: [UInt8]
    public var createdNanoseconds: UInt64
    public init(id: String, hash: [UInt8], createdNanoseconds: UInt64) {
        self.id = id
        self.hash = hash
        self.createdNanoseconds = createdNanoseconds
    }
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.writeString(id)
            w.writeBytes(hash)
            w.writeVarint(createdNanoseconds)
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        self = try reader.readMessage("TenantToken") { r throws(WireError) in
            TenantToken(id: try r.readString(), hash: try r.readBytes(), createdNanoseconds: try r.readVarint())
        }
    }
}

/// A tenant as stored.
public struct TenantRecord: Hashable, Sendable, WireCodable {
    public var name: String
    public var quota: TenantQuota
    public var tokens: [TenantToken]
    public var createdNanoseconds: UInt64
    public init(name: String, quota: TenantQuota, tokens: [TenantToken] = [], createdNanoseconds: UInt64) {
        self.name = name
        self.quota = quota
        self.tokens = tokens
        self.createdNanoseconds = createdNanoseconds
    }
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.writeString(name)
            w.write(quota)
            w.write(tokens)
            w.writeVarint(createdNanoseconds)
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        self = try reader.readMessage("TenantRecord") { r throws(WireError) in
            TenantRecord(name: try r.readString(), quota: try r.read(TenantQuota.self), tokens: try r.read([TenantToken].self), createdNanoseconds: try r.readVarint())
        }
    }
}

/// A tenant as reported: its quota, what its namespaces claim, and its token ids
/// (never the hashes).
public struct TenantInfo: Hashable, Sendable, WireCodable {
    public var name: String
    public var quota: TenantQuota
    public var used: TenantQuota
    public var namespaces: [String]
    public var tokenIDs: [String]
    public init(name: String, quota: TenantQuota, used: TenantQuota, namespaces: [String], tokenIDs: [String]) {
        self.name = name
        self.quota = quota
        self.used = used
        self.namespaces = namespaces
        self.tokenIDs = tokenIDs
    }
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.writeString(name)
            w.write(quota)
            w.write(used)
            w.write(namespaces)
            w.write(tokenIDs)
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        self = try reader.readMessage("TenantInfo") { r throws(WireError) in
            TenantInfo(name: try r.readString(), quota: try r.read(TenantQuota.self), used: try r.read(TenantQuota.self),
                       namespaces: try r.read([String].self), tokenIDs: try r.read([String].self))
        }
    }
}

/// The name a tenant's namespace has in the index: `TENANT.NAME` (tenant names have
/// no '.', so the split is unambiguous).
public enum TenantNaming {
    public static func indexName(tenant: String, namespace: String) -> String { "\(tenant).\(namespace)" }

    /// The tenant-visible name of an index namespace the tenant owns, or nil.
    public static func tenantName(indexName: String, tenant: String) -> String? {
        let prefix = "\(tenant)."
        return indexName.hasPrefix(prefix) ? String(indexName.dropFirst(prefix.count)) : nil
    }
}

enum TenantKeys {
    static func tenant(_ name: String) -> [UInt8] { Array("tn/".utf8) + Array(name.utf8) + [0] }
    static let tenantPrefix = Array("tn/".utf8)
    /// Token digest → tenant name.
    static func token(_ hash: [UInt8]) -> [UInt8] { Array("th/".utf8) + hash }
    /// A namespace's claim on its owner's quota: owner, then namespace.
    static func claim(_ tenant: String, _ ns: String) -> [UInt8] { claimPrefix(tenant) + Array(ns.utf8) }
    static func claimPrefix(_ tenant: String) -> [UInt8] { Array("tc/".utf8) + Array(tenant.utf8) + [0] }
    /// Namespace → owner.
    static func owner(_ ns: String) -> [UInt8] { Array("to/".utf8) + Array(ns.utf8) + [0] }
}

/// The tenant registry as operations inside one transaction of the transactional KV
/// (the store the metadata and index servers share), at time `now`.
public struct TenantRegistry {
    let tx: any KVTransaction
    let now: UInt64

    public init(_ tx: any KVTransaction, now: UInt64) {
        self.tx = tx
        self.now = now
    }

    public func record(_ name: String) async throws -> TenantRecord {
        guard let bytes = try await tx.get(TenantKeys.tenant(name)) else { throw TenantError.noSuchTenant(name) }
        return try TenantRecord(wireBytes: bytes)
    }

    func put(_ r: TenantRecord) async throws { try await tx.set(TenantKeys.tenant(r.name), r.wireBytes()) }

    func records() async throws -> [TenantRecord] {
        try await tx.getRange(.prefix(TenantKeys.tenantPrefix), limit: TenantLimits.tenantsMax + 1, reverse: false).map { try TenantRecord(wireBytes: $0.value) }
    }

    /// The namespaces a tenant owns and what they claim.
    public func claims(_ tenant: String) async throws -> (namespaces: [String], used: TenantQuota) {
        let prefix = TenantKeys.claimPrefix(tenant)
        var names: [String] = []
        var used = TenantQuota(bytes: 0, pages: 0)
        for p in try await tx.getRange(.prefix(prefix), limit: TenantLimits.namespacesPerTenantMax + 1, reverse: false) {
            names.append(String(decoding: p.key.dropFirst(prefix.count), as: UTF8.self))
            let q = try TenantQuota(wireBytes: p.value)
            used.bytes += q.bytes
            used.pages += q.pages
        }
        return (names, used)
    }

    func checkCapacity(addingBytes: UInt64, excluding name: String?, capacityBytes: UInt64) async throws {
        guard capacityBytes > 0 else { return }  // capacity unknown (no storage reported yet): nothing to check against
        var total = addingBytes
        for r in try await records() where r.name != name { total += r.quota.bytes }
        if total > capacityBytes { throw TenantError.overcommitted(quotaBytes: total, capacityBytes: capacityBytes) }
    }

    /// Creates a tenant; the sum of all quotas must fit the cluster's capacity
    /// (`capacityBytes`, 0 when unknown).
    public func create(_ name: String, quota: TenantQuota, capacityBytes: UInt64) async throws {
        try TenantError.check(name: name)
        if try await tx.get(TenantKeys.tenant(name)) != nil { throw TenantError.tenantExists(name) }
        if try await records().count >= TenantLimits.tenantsMax { throw TenantError.limit("the cluster already has \(TenantLimits.tenantsMax) tenants; delete one first") }
        try await checkCapacity(addingBytes: quota.bytes, excluding: name, capacityBytes: capacityBytes)
        try await put(TenantRecord(name: name, quota: quota, createdNanoseconds: now))
    }

    /// Makes sure a tenant exists (the admin tenant at a master's start); never changes one that does.
    public func ensure(_ name: String, quota: TenantQuota) async throws {
        try TenantError.check(name: name)
        if try await tx.get(TenantKeys.tenant(name)) == nil { try await put(TenantRecord(name: name, quota: quota, createdNanoseconds: now)) }
    }

    /// Deletes a tenant that owns no namespace, with its tokens.
    public func delete(_ name: String) async throws {
        let r = try await record(name)
        if name == TenantLimits.admin { throw TenantError.forbidden("the admin tenant cannot be deleted") }
        let (namespaces, _) = try await claims(name)
        if !namespaces.isEmpty { throw TenantError.notEmpty(name, namespaces: namespaces) }
        for t in r.tokens { try await tx.clear(TenantKeys.token(t.hash)) }
        try await tx.clear(TenantKeys.tenant(name))
    }

    public func info(_ name: String) async throws -> TenantInfo {
        let r = try await record(name)
        let (namespaces, used) = try await claims(name)
        return TenantInfo(name: r.name, quota: r.quota, used: used, namespaces: namespaces, tokenIDs: r.tokens.map(\.id))
    }

    public func list() async throws -> [TenantInfo] {
        var out: [TenantInfo] = []
        for r in try await records() {
            let (namespaces, used) = try await claims(r.name)
            out.append(TenantInfo(name: r.name, quota: r.quota, used: used, namespaces: namespaces, tokenIDs: r.tokens.map(\.id)))
        }
        return out
    }

    public func setQuota(_ name: String, _ quota: TenantQuota, capacityBytes: UInt64) async throws {
        var r = try await record(name)
        let (_, used) = try await claims(name)
        if quota.bytes < used.bytes || quota.pages < used.pages { throw TenantError.quotaBelowUse(tenant: name, usedBytes: used.bytes, usedPages: used.pages) }
        try await checkCapacity(addingBytes: quota.bytes, excluding: name, capacityBytes: capacityBytes)
        r.quota = quota
        try await put(r)
    }

    /// Adds a token (its digest) to a tenant.
    public func addToken(_ tenant: String, id: String, hash: [UInt8]) async throws {
        var r = try await record(tenant)
        guard hash.count == TenantLimits.tokenHashBytes else { throw TenantError.limit("a token digest is \(TenantLimits.tokenHashBytes) bytes (SHA-256), not \(hash.count)") }
        guard !id.isEmpty, id.utf8.count <= TenantLimits.tokenIDBytesMax else { throw TenantError.limit("a token id has 1...\(TenantLimits.tokenIDBytesMax) bytes") }
        if r.tokens.contains(where: { $0.id == id }) { throw TenantError.limit("tenant '\(tenant)' already has a token '\(id)'") }
        if r.tokens.count >= TenantLimits.tokensPerTenantMax { throw TenantError.tooManyTokens(tenant, limit: TenantLimits.tokensPerTenantMax) }
        if try await tx.get(TenantKeys.token(hash)) != nil { throw TenantError.limit("that token is already issued") }
        r.tokens.append(TenantToken(id: id, hash: hash, createdNanoseconds: now))
        try await put(r)
        try await tx.set(TenantKeys.token(hash), Array(tenant.utf8))
    }

    public func revokeToken(_ tenant: String, id: String) async throws {
        var r = try await record(tenant)
        guard let i = r.tokens.firstIndex(where: { $0.id == id }) else { throw TenantError.noSuchToken(tenant: tenant, id: id) }
        try await tx.clear(TenantKeys.token(r.tokens[i].hash))
        r.tokens.remove(at: i)
        try await put(r)
    }

    /// The tenant a token digest belongs to.
    public func authenticate(_ hash: [UInt8]) async throws -> String {
        guard hash.count == TenantLimits.tokenHashBytes, let name = try await tx.get(TenantKeys.token(hash)) else { throw TenantError.unauthenticated }
        return String(decoding: name, as: UTF8.self)
    }

    public func owner(of ns: String) async throws -> String? {
        try await tx.get(TenantKeys.owner(ns)).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Claims a namespace's whole capacity on its owner's quota (refused past it).
    public func claim(_ tenant: String, namespace ns: String, bytes: UInt64, pages: UInt64) async throws {
        let r = try await record(tenant)
        let (namespaces, used) = try await claims(tenant)
        if namespaces.count >= TenantLimits.namespacesPerTenantMax { throw TenantError.limit("tenant '\(tenant)' already owns \(TenantLimits.namespacesPerTenantMax) namespaces; delete one first") }
        let freeBytes = r.quota.bytes - min(r.quota.bytes, used.bytes)
        let freePages = r.quota.pages - min(r.quota.pages, used.pages)
        if bytes > freeBytes || pages > freePages {
            throw TenantError.quotaExceeded(tenant: tenant, needBytes: bytes, needPages: pages, freeBytes: freeBytes, freePages: freePages)
        }
        try await tx.set(TenantKeys.claim(tenant, ns), TenantQuota(bytes: bytes, pages: pages).wireBytes())
        try await tx.set(TenantKeys.owner(ns), Array(tenant.utf8))
    }

    /// Releases a namespace's claim (when it is dropped).
    public func release(namespace ns: String) async throws {
        guard let owner = try await owner(of: ns) else { return }
        try await tx.clear(TenantKeys.claim(owner, ns))
        try await tx.clear(TenantKeys.owner(ns))
    }
}

/// A request to the tenant registry (carried by `KVRequest.tenant`; append-only tags).
public enum TenantRequest: Sendable, Equatable, WireCodable {
    case create(name: String, quota: TenantQuota, capacityBytes: UInt64)
    case delete(name: String)
    case list
    case info(name: String)
    case setQuota(name: String, quota: TenantQuota, capacityBytes: UInt64)
    case addToken(tenant: String, id: String, hash: [UInt8])
    case revokeToken(tenant: String, id: String)
    case authenticate(hash: [UInt8])
    case ensure(name: String, quota: TenantQuota)

    public func encode(to writer: inout WireWriter) {
        func body(_ tag: UInt64, _ b: (inout WireWriter) -> Void) {
            writer.writeVarint(tag)
            writer.writeMessage(b)
        }
        switch self {
        case .create(let n, let q, let c): body(1) { w in w.writeString(n); w.write(q); w.writeVarint(c) }
        case .delete(let n): body(2) { $0.writeString(n) }
        case .list: body(3) { _ in }
        case .info(let n): body(4) { $0.writeString(n) }
        case .setQuota(let n, let q, let c): body(5) { w in w.writeString(n); w.write(q); w.writeVarint(c) }
        case .addToken(let t, let id, let h): body(6) { w in w.writeString(t); w.writeString(id); w.writeBytes(h) }
        case .revokeToken(let t, let id): body(7) { w in w.writeString(t); w.writeString(id) }
        case .authenticate(let h): body(8) { $0.writeBytes(h) }
        case .ensure(let n, let q): body(9) { w in w.writeString(n); w.write(q) }
        }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let tag = try reader.readVarint("TenantRequest tag")
        self = try reader.readMessage("TenantRequest") { m throws(WireError) -> TenantRequest in
            switch tag {
            case 1: return .create(name: try m.readString(), quota: try m.read(TenantQuota.self), capacityBytes: try m.readVarint())
            case 2: return .delete(name: try m.readString())
            case 3: return .list
            case 4: return .info(name: try m.readString())
            case 5: return .setQuota(name: try m.readString(), quota: try m.read(TenantQuota.self), capacityBytes: try m.readVarint())
            case 6: return .addToken(tenant: try m.readString(), id: try m.readString(), hash: try m.readBytes())
            case 7: return .revokeToken(tenant: try m.readString(), id: try m.readString())
            case 8: return .authenticate(hash: try m.readBytes())
            case 9: return .ensure(name: try m.readString(), quota: try m.read(TenantQuota.self))
            default: throw .unknownTag(type: "TenantRequest", tag: tag)
            }
        }
    }
}

extension TenantError: WireCodable {
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            switch self {
            case .invalidName(let n, let r): w.writeVarint(1); w.writeString(n); w.writeString(r)
            case .noSuchTenant(let n): w.writeVarint(2); w.writeString(n)
            case .tenantExists(let n): w.writeVarint(3); w.writeString(n)
            case .notEmpty(let n, let ns): w.writeVarint(4); w.writeString(n); w.write(ns)
            case .unauthenticated: w.writeVarint(5)
            case .forbidden(let why): w.writeVarint(6); w.writeString(why)
            case .tooManyTokens(let n, let l): w.writeVarint(7); w.writeString(n); w.write(l)
            case .noSuchToken(let t, let id): w.writeVarint(8); w.writeString(t); w.writeString(id)
            case .quotaExceeded(let t, let nb, let np, let fb, let fp):
                w.writeVarint(9); w.writeString(t)
                for v in [nb, np, fb, fp] { w.writeVarint(v) }
            case .overcommitted(let q, let c): w.writeVarint(10); w.writeVarint(q); w.writeVarint(c)
            case .quotaBelowUse(let t, let b, let p): w.writeVarint(11); w.writeString(t); w.writeVarint(b); w.writeVarint(p)
            case .limit(let what): w.writeVarint(12); w.writeString(what)
            }
        }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        self = try reader.readMessage("TenantError") { r throws(WireError) -> TenantError in
            switch try r.readVarint("error") {
            case 1: return .invalidName(try r.readString(), reason: try r.readString())
            case 2: return .noSuchTenant(try r.readString())
            case 3: return .tenantExists(try r.readString())
            case 4: return .notEmpty(try r.readString(), namespaces: try r.read([String].self))
            case 5: return .unauthenticated
            case 6: return .forbidden(try r.readString())
            case 7: return .tooManyTokens(try r.readString(), limit: try r.read(Int.self))
            case 8: return .noSuchToken(tenant: try r.readString(), id: try r.readString())
            case 9: return .quotaExceeded(tenant: try r.readString(), needBytes: try r.readVarint(), needPages: try r.readVarint(), freeBytes: try r.readVarint(), freePages: try r.readVarint())
            case 10: return .overcommitted(quotaBytes: try r.readVarint(), capacityBytes: try r.readVarint())
            case 11: return .quotaBelowUse(tenant: try r.readString(), usedBytes: try r.readVarint(), usedPages: try r.readVarint())
            case 12: return .limit(try r.readString())
            case let t: throw .unknownTag(type: "TenantError", tag: t)
            }
        }
    }
}
