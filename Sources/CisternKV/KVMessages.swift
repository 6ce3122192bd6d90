import CisternCore
import CisternWire

/// The KV cache index service, served by the metadata servers.
public let kvIndexService = ServiceID(6)

/// A request to the KV cache index. Every request names its namespace; batches are
/// capped at `KVCacheLimits.batchKeysMax` keys. New kinds get new tags (append-only).
public enum KVRequest: Sendable, Equatable, WireCodable {
    /// `durability` was added after the first format: absent means `durable`.
    case createNamespace(name: String, pageBytes: UInt32, capacityPages: UInt64, files: UInt32, durability: KVDurability)
    case describe(name: String)
    case reserve(name: String, keys: [String])
    case confirm(name: String, items: [KVConfirmItem])
    case abort(name: String, slots: [PageSlot], tokens: [UInt64])
    case lookup(name: String, keys: [String], leaseNanoseconds: UInt64)
    case exists(name: String, keys: [String])
    case delete(name: String, keys: [String])
    case usage(name: String)
    case drop(name: String)
    case list
    /// Checks the namespace's slab and index invariants (a full scan).
    case audit(name: String)
    /// The tenant registry (tenants, tokens, quotas).
    case tenant(TenantRequest)
    /// Creates a namespace owned by a tenant, claiming its capacity on the tenant's
    /// quota in the same transaction.
    case createOwnedNamespace(owner: String, name: String, pageBytes: UInt32, capacityPages: UInt64, files: UInt32, durability: KVDurability)

    public var namespace: String? {
        switch self {
        case .createNamespace(let n, _, _, _, _), .describe(let n), .reserve(let n, _), .confirm(let n, _), .abort(let n, _, _),
             .lookup(let n, _, _), .exists(let n, _), .delete(let n, _), .usage(let n), .drop(let n), .audit(let n),
             .createOwnedNamespace(_, let n, _, _, _, _):
            return n
        case .list, .tenant: return nil
        }
    }

    public func encode(to writer: inout WireWriter) {
        switch self {
        case .createNamespace(let n, let p, let c, let f, let d):
            writer.writeVarint(1)
            writer.writeMessage { w in
                w.writeString(n)
                w.write(p)
                w.writeVarint(c)
                w.write(f)
                w.write(d)
            }
        case .describe(let n):
            writer.writeVarint(2)
            writer.writeMessage { $0.writeString(n) }
        case .reserve(let n, let keys):
            writer.writeVarint(3)
            writer.writeMessage { w in
                w.writeString(n)
                w.write(keys)
            }
        case .confirm(let n, let items):
            writer.writeVarint(4)
            writer.writeMessage { w in
                w.writeString(n)
                w.write(items)
            }
        case .abort(let n, let slots, let tokens):
            writer.writeVarint(5)
            writer.writeMessage { w in
                w.writeString(n)
                w.write(slots)
                w.write(tokens)
            }
        case .lookup(let n, let keys, let lease):
            writer.writeVarint(6)
            writer.writeMessage { w in
                w.writeString(n)
                w.write(keys)
                w.writeVarint(lease)
            }
        case .exists(let n, let keys):
            writer.writeVarint(7)
            writer.writeMessage { w in
                w.writeString(n)
                w.write(keys)
            }
        case .delete(let n, let keys):
            writer.writeVarint(8)
            writer.writeMessage { w in
                w.writeString(n)
                w.write(keys)
            }
        case .usage(let n):
            writer.writeVarint(9)
            writer.writeMessage { $0.writeString(n) }
        case .drop(let n):
            writer.writeVarint(10)
            writer.writeMessage { $0.writeString(n) }
        case .list:
            writer.writeVarint(11)
            writer.writeMessage { _ in }
        case .audit(let n):
            writer.writeVarint(12)
            writer.writeMessage { $0.writeString(n) }
        case .tenant(let t):
            writer.writeVarint(13)
            writer.writeMessage { $0.write(t) }
        case .createOwnedNamespace(let o, let n, let p, let c, let f, let d):
            writer.writeVarint(14)
            writer.writeMessage { w in
                w.writeString(o)
                w.writeString(n)
                w.write(p)
                w.writeVarint(c)
                w.write(f)
                w.write(d)
            }
        }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let tag = try reader.readVarint("KVRequest tag")
        self = try reader.readMessage("KVRequest") { m throws(WireError) -> KVRequest in
            switch tag {
            case 1:
                return .createNamespace(name: try m.readString(), pageBytes: try m.read(UInt32.self), capacityPages: try m.readVarint(), files: try m.read(UInt32.self),
                                        durability: m.isAtEnd ? .durable : try m.read(KVDurability.self))
            case 2: return .describe(name: try m.readString())
            case 3: return .reserve(name: try m.readString(), keys: try m.read([String].self))
            case 4: return .confirm(name: try m.readString(), items: try m.read([KVConfirmItem].self))
            case 5: return .abort(name: try m.readString(), slots: try m.read([PageSlot].self), tokens: try m.read([UInt64].self))
            case 6: return .lookup(name: try m.readString(), keys: try m.read([String].self), leaseNanoseconds: try m.readVarint())
            case 7: return .exists(name: try m.readString(), keys: try m.read([String].self))
            case 8: return .delete(name: try m.readString(), keys: try m.read([String].self))
            case 9: return .usage(name: try m.readString())
            case 10: return .drop(name: try m.readString())
            case 11: return .list
            case 12: return .audit(name: try m.readString())
            case 13: return .tenant(try m.read(TenantRequest.self))
            case 14:
                return .createOwnedNamespace(owner: try m.readString(), name: try m.readString(), pageBytes: try m.read(UInt32.self), capacityPages: try m.readVarint(),
                                             files: try m.read(UInt32.self), durability: try m.read(KVDurability.self))
            default: throw .unknownTag(type: "KVRequest", tag: tag)
            }
        }
    }

    public func message() -> Message { Message(method: 0, header: wireBytes()) }
}

extension KVReserveOutcome: WireCodable {
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            switch self {
            case .exists: w.writeVarint(1)
            case .reserved(let s, let t):
                w.writeVarint(2)
                w.write(s)
                w.writeVarint(t)
            case .full: w.writeVarint(3)
            }
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        self = try reader.readMessage("KVReserveOutcome") { r throws(WireError) -> KVReserveOutcome in
            switch try r.readVarint("outcome") {
            case 1: return .exists
            case 2: return .reserved(slot: try r.read(PageSlot.self), token: try r.readVarint())
            case 3: return .full
            case let t: throw .unknownTag(type: "KVReserveOutcome", tag: t)
            }
        }
    }
}

extension KVConfirmOutcome: WireEnum {
    public var rawValue: UInt8 {
        switch self {
        case .confirmed: return 1
        case .exists: return 2
        case .expired: return 3
        }
    }
    public init?(rawValue: UInt8) {
        switch rawValue {
        case 1: self = .confirmed
        case 2: self = .exists
        case 3: self = .expired
        default: return nil
        }
    }
}

extension KVCacheError: WireCodable {
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            switch self {
            case .invalidNamespace(let n, let r): w.writeVarint(1); w.writeString(n); w.writeString(r)
            case .noSuchNamespace(let n): w.writeVarint(2); w.writeString(n)
            case .namespaceMismatch(let n, let e): w.writeVarint(3); w.writeString(n); w.writeString(e)
            case .invalidKey(let k, let r): w.writeVarint(4); w.writeString(k); w.writeString(r)
            case .batchTooLarge(let c, let l): w.writeVarint(5); w.write(c); w.write(l)
            case .pageTooLarge(let k, let b, let p): w.writeVarint(6); w.writeString(k); w.write(b); w.write(p)
            case .invalidConfig(let d): w.writeVarint(7); w.writeString(d)
            case .unavailable(let d): w.writeVarint(8); w.writeString(d)
            case .noSpace(let d): w.writeVarint(9); w.writeString(d)
            case .tenant(let e): w.writeVarint(10); w.write(e)
            }
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        self = try reader.readMessage("KVCacheError") { r throws(WireError) -> KVCacheError in
            switch try r.readVarint("error") {
            case 1: return .invalidNamespace(try r.readString(), reason: try r.readString())
            case 2: return .noSuchNamespace(try r.readString())
            case 3: return .namespaceMismatch(try r.readString(), existing: try r.readString())
            case 4: return .invalidKey(try r.readString(), reason: try r.readString())
            case 5: return .batchTooLarge(count: try r.read(Int.self), limit: try r.read(Int.self))
            case 6: return .pageTooLarge(key: try r.readString(), bytes: try r.read(Int.self), pageBytes: try r.read(Int.self))
            case 7: return .invalidConfig(try r.readString())
            case 8: return .unavailable(try r.readString())
            case 9: return .noSpace(try r.readString())
            case 10: return .tenant(try r.read(TenantError.self))
            case let t: throw .unknownTag(type: "KVCacheError", tag: t)
            }
        }
    }
}

/// The KV cache index's answers.
public enum KVReply: Sendable, Equatable, WireCodable {
    case config(KVNamespaceConfig)
    case reserved([KVReserveOutcome], evicted: Int)
    case confirmed([KVConfirmOutcome])
    case ok
    case located([KVPageLocation?])
    case present([Bool])
    case deleted(Int)
    case usage(KVUsage)
    case namespaces([String])
    /// Refused; retrying will not help.
    case refused(KVCacheError)
    /// What an audit found wrong (empty when sound).
    case problems([String])
    /// The store failed or was unreachable; retry.
    case unavailable(String)
    case tenants([TenantInfo])
    /// Who a token belongs to.
    case tenantName(String)

    public func encode(to writer: inout WireWriter) {
        switch self {
        case .config(let c): writer.writeVarint(1); writer.writeMessage { $0.write(c) }
        case .reserved(let o, let e): writer.writeVarint(2); writer.writeMessage { w in w.write(o); w.write(e) }
        case .confirmed(let o): writer.writeVarint(3); writer.writeMessage { $0.write(o) }
        case .ok: writer.writeVarint(4); writer.writeMessage { _ in }
        case .located(let l): writer.writeVarint(5); writer.writeMessage { $0.write(l) }
        case .present(let p): writer.writeVarint(6); writer.writeMessage { $0.write(p) }
        case .deleted(let n): writer.writeVarint(7); writer.writeMessage { $0.write(n) }
        case .usage(let u): writer.writeVarint(8); writer.writeMessage { $0.write(u) }
        case .namespaces(let n): writer.writeVarint(9); writer.writeMessage { $0.write(n) }
        case .refused(let e): writer.writeVarint(10); writer.writeMessage { $0.write(e) }
        case .unavailable(let t): writer.writeVarint(11); writer.writeMessage { $0.writeString(t) }
        case .problems(let p): writer.writeVarint(12); writer.writeMessage { $0.write(p) }
        case .tenants(let t): writer.writeVarint(13); writer.writeMessage { $0.write(t) }
        case .tenantName(let n): writer.writeVarint(14); writer.writeMessage { $0.writeString(n) }
        }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let tag = try reader.readVarint("KVReply tag")
        self = try reader.readMessage("KVReply") { m throws(WireError) -> KVReply in
            switch tag {
            case 1: return .config(try m.read(KVNamespaceConfig.self))
            case 2: return .reserved(try m.read([KVReserveOutcome].self), evicted: try m.read(Int.self))
            case 3: return .confirmed(try m.read([KVConfirmOutcome].self))
            case 4: return .ok
            case 5: return .located(try m.read([KVPageLocation?].self))
            case 6: return .present(try m.read([Bool].self))
            case 7: return .deleted(try m.read(Int.self))
            case 8: return .usage(try m.read(KVUsage.self))
            case 9: return .namespaces(try m.read([String].self))
            case 10: return .refused(try m.read(KVCacheError.self))
            case 11: return .unavailable(try m.readString())
            case 12: return .problems(try m.read([String].self))
            case 13: return .tenants(try m.read([TenantInfo].self))
            case 14: return .tenantName(try m.readString())
            default: throw .unknownTag(type: "KVReply", tag: tag)
            }
        }
    }
}
