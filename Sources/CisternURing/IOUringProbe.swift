import CURing
import CURingShim

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Capability checks for io_uring.
///
/// Promises: `probe()` really creates an 8-entry ring with `io_uring_queue_init` and
/// destroys it with `io_uring_queue_exit`, so `.available` means this kernel, its
/// sysctls, the seccomp filter and the memlock limit all let this process use io_uring
/// now. It never crashes: every failure comes back as `.unavailable` with the errno.
public enum IOUringProbe {
    /// Sets up and tears down a small ring.
    public static func probe() -> IOUringSupport {
        let rc = cistern_uring_probe(8)
        guard rc == 0 else {
            // liburing returns -errno.
            let code = rc < 0 ? -rc : rc
            return .unavailable(reason: reason(for: code))
        }
        return .available
    }

    /// The platform's `O_DIRECT` open flag (hidden from Swift's Glibc import, and
    /// different between architectures).
    public static var oDirectFlag: Int32 { cistern_o_direct() }

    static func reason(for code: Int32) -> String {
        let text = strerror(code).map { String(cString: $0) } ?? "unknown error"
        let base = "io_uring_queue_init failed: \(text) (errno \(code))"
        switch code {
        case ENOSYS:
            return base + "; the kernel has no io_uring (needs Linux 5.1 or later) or a seccomp filter hides it"
        case EPERM:
            return base + "; io_uring is disabled (sysctl kernel.io_uring_disabled) or blocked by a seccomp filter"
        case ENOMEM:
            return base + "; the locked-memory limit (ulimit -l) is too low for the ring"
        case EINVAL:
            return base + "; the kernel rejected the ring parameters (kernel too old for this liburing)"
        default:
            return base
        }
    }
}
