import CisternCore
import CisternKV
import CisternMeta
import CisternStorage

/// Why a client operation failed. Each case carries the underlying service's precise
/// error, whose text names the problem and the fix.
public enum CisternError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A metadata operation was refused (no such file, exists, ...) or no metadata
    /// server answered.
    case meta(MetaClientError)
    /// A chunk read or write gave up after its retries.
    case storage(StorageClientError)
    /// A KV request was refused or the KV index could not be reached.
    case kv(KVCacheError)
    /// The call itself is wrong (a negative length, a buffer too small, a handle
    /// opened read-only used for writing).
    case invalidArgument(String)

    /// Whether a server refused for want of permission: a missing, unknown or
    /// revoked token, a tenant outside its own files and namespaces, or a chunk
    /// request without a valid capability (`CISTERN_EPERM` in the C library).
    public var isPermissionDenied: Bool {
        switch self {
        case .meta(.refused(.permissionDenied, _)), .kv(.tenant(.forbidden)), .kv(.tenant(.unauthenticated)), .storage(.forbidden): return true
        default: return false
        }
    }

    /// `isPermissionDenied` for the error of any client layer (the metadata, index or
    /// storage client used directly, or `CisternError`).
    public static func isPermissionDenied(_ error: any Error) -> Bool {
        switch error {
        case let e as CisternError: return e.isPermissionDenied
        case let e as MetaClientError: return CisternError.meta(e).isPermissionDenied
        case let e as KVCacheError: return CisternError.kv(e).isPermissionDenied
        case let e as StorageClientError: return CisternError.storage(e).isPermissionDenied
        default: return false
        }
    }

    public var description: String {
        switch self {
        case .meta(let e): return "metadata: \(e)"
        case .storage(let e): return "storage: \(e)"
        case .kv(let e): return "kv: \(e)"
        case .invalidArgument(let d): return "invalid argument: \(d)"
        }
    }
}
