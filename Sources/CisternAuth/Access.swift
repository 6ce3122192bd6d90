import Crypto
import Foundation

/// Who sent a request, as the metadata servers established it.
public struct Caller: Sendable, Hashable, CustomStringConvertible {
    public var tenant: String
    public init(tenant: String) { self.tenant = tenant }
    public var isAdmin: Bool { tenant == Access.admin }
    /// The caller of a cluster without authentication: everything is allowed.
    public static let admin = Caller(tenant: Access.admin)
    public var description: String { "tenant '\(tenant)'" }
}

/// Turns a request's token into its caller (the metadata servers' tenant registry).
public protocol CallerAuthenticator: Sendable {
    func caller(token: String?) async throws(AuthError) -> Caller
}

/// What a metadata server needs to enforce tenants: who callers are, and the key
/// that mints capabilities for the files it hands out.
public struct AuthSettings: Sendable {
    public var key: CapabilityKey
    public var authenticator: any CallerAuthenticator
    public init(key: CapabilityKey, authenticator: any CallerAuthenticator) {
        self.key = key
        self.authenticator = authenticator
    }
}

/// The rules of who may use what (pure, so they are tested exhaustively):
/// - the `admin` tenant may use everything;
/// - any other tenant T only the tree `/tenants/T` of the file system and the KV
///   namespaces named `T.NAME`.
public enum Access {
    public static let admin = "admin"
    /// Every tenant's files live in `/tenants/TENANT`.
    public static let tenantsRoot = "/tenants"

    /// The root of `tenant`'s files.
    public static func root(of tenant: String) -> String { "\(tenantsRoot)/\(tenant)" }

    /// Whether `tenant` may use `path` (the path as sent: absolute, no `.` or `..`,
    /// which the metadata service refuses anyway).
    public static func mayUse(path: String, tenant: String) -> Bool {
        if tenant == admin { return true }
        guard path.hasPrefix("/") else { return false }
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        guard parts.count >= 2, parts[0] == "tenants", parts[1] == tenant else { return false }
        return !parts.contains { $0 == "." || $0 == ".." }
    }

    /// The tenant a KV namespace name belongs to: the part before the first dot
    /// (`alpha.llama` → alpha), or the admin for names without one.
    public static func owner(ofNamespace name: String) -> String {
        guard let dot = name.firstIndex(of: "."), dot != name.startIndex else { return admin }
        return String(name[..<dot])
    }

    /// Whether `tenant` may use the KV namespace `name`.
    public static func mayUse(namespace name: String, tenant: String) -> Bool {
        tenant == admin || owner(ofNamespace: name) == tenant
    }

    /// The client number under which a tenant's retried requests are remembered: a
    /// tenant's own numbers are mixed with its name through SHA-256, so no tenant can
    /// name (and so replay) another's request records. The admin's are unchanged.
    public static func scopedClient(_ client: UInt64, tenant: String) -> UInt64 {
        if tenant == admin { return client }
        var input = Array("cistern-client-scope-v1|\(tenant)|".utf8)
        for i in 0..<8 { input.append(UInt8(truncatingIfNeeded: client >> (8 * UInt64(i)))) }
        let d = Array(SHA256.hash(data: input))
        var out: UInt64 = 0
        for i in 0..<8 { out |= UInt64(d[i]) << (8 * UInt64(i)) }
        return out
    }
}

/// Tokens are stored, compared and cached only as SHA-256 digests.
public enum TokenDigest {
    public static let bytes = 32
    public static func of(_ token: String) -> [UInt8] { Array(SHA256.hash(data: Data(token.utf8))) }
}
