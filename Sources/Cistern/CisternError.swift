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

    public var description: String {
        switch self {
        case .meta(let e): return "metadata: \(e)"
        case .storage(let e): return "storage: \(e)"
        case .kv(let e): return "kv: \(e)"
        case .invalidArgument(let d): return "invalid argument: \(d)"
        }
    }
}
