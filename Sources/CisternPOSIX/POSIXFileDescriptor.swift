import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// One open file descriptor of a `POSIXDisk`, shared by the handle table and by the
/// operations in flight on it.
///
/// Promises: the descriptor is closed exactly once, when the last reference goes
/// away, so closing a handle while an operation is running on a pool thread never
/// lets that operation touch a recycled descriptor number. After an `fsync` fails the
/// descriptor is poisoned: Linux may drop the dirty pages and report success on the
/// next `fsync`, so every later operation on this handle fails instead.
final class POSIXFileDescriptor: Sendable {
    let fd: Int32
    let path: String
    private let poison = Mutex<String?>(nil)

    init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    /// The reason this descriptor may no longer be used, if an earlier fsync failed.
    var poisoned: String? { poison.withLock { $0 } }

    func markPoisoned(_ reason: String) {
        poison.withLock { if $0 == nil { $0 = reason } }
    }

    deinit {
        _ = close(fd)
    }
}
