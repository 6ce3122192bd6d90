import CisternCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Maps error numbers from file system calls (`errno`, or a negated io_uring
/// completion result) to `DiskError`s, the same way for every disk: missing files
/// are `notFound`, full devices and quotas are `noSpace`, and everything else is
/// `ioError` naming the call, the `strerror` text and the number. Shared by the POSIX
/// and io_uring disks so both report errors alike.
public enum POSIXErrno {
    /// The current thread's `errno`.
    public static var current: Int32 { errno }

    /// `strerror` text with the symbolic number, e.g. "No such file or directory (errno 2)".
    public static func describe(_ code: Int32) -> String {
        let text = strerror(code).map { String(cString: $0) } ?? "unknown error"
        return "\(text) (errno \(code))"
    }

    /// The `DiskError` for `code`, raised by `call` on `path`. `neededBytes` is what the
    /// operation tried to allocate or write (for `noSpace`); `root` is the directory
    /// whose file system's free space is reported.
    public static func error(
        _ code: Int32, call: String, path: String, root: String, neededBytes: UInt64 = 0
    ) -> DiskError {
        switch code {
        case ENOENT, ENOTDIR:
            return .notFound(path: path)
        case EEXIST:
            return .alreadyExists(path: path)
        case ENOSPC, EDQUOT:
            return .noSpace(path: path, neededBytes: neededBytes, freeBytes: freeBytes(root))
        default:
            return .ioError(path: path, detail: "\(call): \(describe(code))")
        }
    }

    /// Bytes available to unprivileged users on the file system holding `directory`
    /// (0 when `statvfs` fails).
    public static func freeBytes(_ directory: String) -> UInt64 {
        var info = statvfs()
        guard statvfs(directory, &info) == 0 else { return 0 }
        return UInt64(info.f_bavail) &* UInt64(info.f_frsize)
    }

    /// Total and available bytes of the file system holding `directory`.
    public static func space(_ directory: String) throws(DiskError) -> DiskSpace {
        var info = statvfs()
        guard statvfs(directory, &info) == 0 else {
            throw .ioError(path: directory, detail: "statvfs failed: \(String(cString: strerror(errno)))")
        }
        return DiskSpace(totalBytes: UInt64(info.f_blocks) &* UInt64(info.f_frsize), freeBytes: UInt64(info.f_bavail) &* UInt64(info.f_frsize))
    }
}
