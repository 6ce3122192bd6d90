import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Identifies the file behind a descriptor (device and inode), so that two handles on
/// the same file are ordered against each other within a batch.
struct URingFileKey: Hashable, Sendable {
    let device: UInt64
    let inode: UInt64
}

/// One open file descriptor of an `IOUringDisk`, shared by the handle table and by the
/// batches in flight on it.
///
/// Promises (the same as `POSIXDisk`'s descriptors): the descriptor is closed exactly
/// once, when the last reference goes away, so closing a handle while a batch still has
/// operations in the ring never lets the kernel see a recycled descriptor number. After
/// an `fsync` fails the descriptor is poisoned: Linux may drop the dirty pages and
/// report success on the next `fsync`, so every later operation on this handle fails.
final class URingFileDescriptor: Sendable {
    let fd: Int32
    let path: String
    let key: URingFileKey
    private let poison = Mutex<String?>(nil)

    init(fd: Int32, path: String, key: URingFileKey) {
        self.fd = fd
        self.path = path
        self.key = key
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
