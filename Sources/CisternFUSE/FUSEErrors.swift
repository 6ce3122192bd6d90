import Cistern
import CisternMeta
import Glibc

/// The POSIX error a client failure becomes on the mount (pure).
public enum FUSEErrno {
    public static func of(_ error: CisternError) -> Int32 {
        switch error {
        case .meta(.refused(let code, let text)):
            switch code {
            case .notFound: return ENOENT
            case .exists: return EEXIST
            case .notADirectory: return ENOTDIR
            case .isADirectory: return EISDIR
            case .notEmpty: return ENOTEMPTY
            case .invalidPath: return text.contains("longer than") ? ENAMETOOLONG : EINVAL
            case .cycle: return EINVAL
            case .tooLarge: return EFBIG
            case .store: return EIO
            case .noSpace: return ENOSPC
            case .permissionDenied: return EACCES
            }
        case .meta(.exhausted): return EIO
        case .storage(.noSpace): return ENOSPC
        case .storage(.forbidden): return EACCES
        case .storage: return EIO
        case .kv: return EIO
        case .invalidArgument: return EINVAL
        }
    }

    public static func of(_ error: any Error) -> Int32 {
        if let e = error as? CisternError { return of(e) }
        if let e = error as? FUSEFailure { return e.errno }
        return EIO
    }
}

/// A refusal decided by the mount itself (a read-only mount, a name too long ...).
public struct FUSEFailure: Error, CustomStringConvertible {
    public let errno: Int32
    public let description: String
    public init(_ errno: Int32, _ description: String) {
        self.errno = errno
        self.description = description
    }
}
