import CisternCore
import CisternRouting

/// Why a chunk operation failed, with what to do about it.
public enum ChunkError: Error, Equatable, Sendable, CustomStringConvertible {
    case notFound(ChunkID)
    /// The bytes on disk do not match the checksum recorded when they were written:
    /// this replica must not serve them; repair it from a healthy replica.
    case corrupt(ChunkID, expected: UInt32, actual: UInt32)
    case tooLarge(ChunkID, bytes: Int, limitBytes: Int)
    /// A commit named a version that is not the pending one.
    case versionMismatch(ChunkID, expected: UInt64, pending: UInt64?)
    case disk(DiskError)
    /// The metadata log is unreadable beyond repair (not a torn tail).
    case metadataCorrupt(String)
    /// A batch named the same chunk twice.
    case duplicate(ChunkID)

    public var description: String {
        switch self {
        case .notFound(let id): return "\(id) does not exist on this target"
        case .corrupt(let id, let e, let a):
            return "\(id) is corrupt on this target (checksum \(String(a, radix: 16)), expected \(String(e, radix: 16))); it will be repaired from another replica"
        case .tooLarge(let id, let b, let l): return "\(id): \(b) bytes exceed the \(l)-byte chunk limit"
        case .versionMismatch(let id, let e, let p):
            return "\(id): commit of version \(e), but the pending version is \(p.map(String.init) ?? "none")"
        case .disk(let e): return "disk: \(e)"
        case .metadataCorrupt(let d): return "chunk metadata is unreadable: \(d)"
        case .duplicate(let id): return "\(id) appears twice in one batch; send each chunk once"
        }
    }
}
