import CisternCore
import CisternPOSIX
import CURingShim
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A `Disk` whose reads, writes, fsyncs and fallocates go through io_uring, rooted at
/// one directory. It behaves exactly like `POSIXDisk` on the same root; only the way
/// batches reach the kernel differs.
///
/// Promises:
/// - Paths, handles, errors and limits are `POSIXDisk`'s: paths are checked with
///   `DiskPath.validate` and resolved under `root` ("a/b" creates "a" on open);
///   `ENOENT`/`ENOTDIR` are `notFound`, `ENOSPC`/`EDQUOT` are `noSpace` with the file
///   system's free bytes, everything else is `ioError` with the `strerror` text; reads
///   and writes over `DiskLimits.ioBytesMax` and batches over `DiskLimits.batchOpsMax`
///   fail with `tooLarge`; handles that are not open fail with `badHandle`; after a
///   failed `fsync` the handle is poisoned and every later operation on it fails.
///   Creating and removing a file fsync the parent directory.
/// - `open`, `remove`, `list` and `size` use plain system calls (`remove` and `list` are
///   `POSIXDisk`'s own), and `truncate` is `ftruncate(2)`; all run on the thread pool.
/// - `submit` really batches: the batch runs as one thread-pool job on a ring of its
///   own (taken from a small cache, so concurrent batches never share one). Operations
///   are grouped into dependency-ordered waves: every operation of a wave is prepared
///   and the wave is submitted with one `io_uring_enter`, then reaped; an operation on
///   a file waits for the earlier operations of the batch on the same file (same inode,
///   any handle) that it conflicts with: overlapping writes, a read and a write that
///   may change what it sees, and `fsync`/`fallocate`/`truncate`, which order against
///   everything on the file. Results therefore equal running the batch one operation
///   at a time, in order; independent operations (other files, reads of a file,
///   disjoint writes) run together. Once submitted, a batch runs to the end even if
///   the calling task is cancelled.
/// - Short reads and writes are resubmitted for the remainder (and `EINTR` retried), so
///   a read returns fewer bytes than asked only at end of file; writes past the end
///   leave zeros between. `fallocate` reserves space with `FALLOC_FL_KEEP_SIZE`,
///   keeping the size and content (where the file system cannot preallocate, it
///   succeeds without reserving).
/// - Direct I/O where it can be used (`directIO`, the default): each file also gets an
///   `O_DIRECT` descriptor when the file system allows one, and reads at offsets and
///   writes of offsets and lengths that are multiples of 4 KiB use it, bypassing the
///   page cache (a read asks for its length rounded up to 4 KiB and returns the bytes
///   asked for). Other transfers, and every transfer of a file system that refuses
///   `O_DIRECT`, go through the page cache; the kernel keeps the two views coherent. Either way data is copied once between the caller's arrays and the
///   ring's buffers (4 KiB-aligned for direct transfers). Why: in the VMs measured,
///   buffered writes spent most of their time allocating and filling new page-cache
///   pages (about 100 MB/s per target), while direct writes go from the buffer to
///   the device.
public final class IOUringDisk: Disk {
    /// The directory every path is relative to (absolute or relative to the process's
    /// working directory, as given, without trailing slashes).
    public let root: String
    public var location: String { root }
    private let pool: NIOThreadPool
    private let names: POSIXDisk
    private let rings: URingCache
    private let handles = DiskHandleTable()
    /// Whether files get an `O_DIRECT` descriptor for aligned transfers.
    public let directIO: Bool

    /// A disk rooted at `root`, creating the directory (and its parents) if missing.
    /// Blocking work runs on `threadPool`, which must be started (the default is NIO's
    /// shared blocking pool). Each ring has `ringEntries` submission entries (rounded up
    /// to a power of two by the kernel); larger waves are submitted in chunks.
    ///
    /// Throws `invalidPath` for a bad root (as `POSIXDisk`), and `unavailable` when no
    /// ring can be set up or the kernel lacks the READ, WRITE, FSYNC or FALLOCATE ring
    /// operations (Linux 5.6 or later): use `DiskFactory.makeBest` to fall back.
    public init(root: String, threadPool: NIOThreadPool = DiskThreadPool.shared, ringEntries: UInt32 = 256, directIO: Bool = true) throws(DiskError) {
        let names = try POSIXDisk(root: root, threadPool: threadPool)
        self.directIO = directIO
        self.names = names
        self.root = names.root
        self.pool = threadPool
        self.rings = URingCache(entries: max(ringEntries, 1), maxIdle: DiskThreadPool.threads)
        switch rings.checkOut() {
        case .failure(let error):
            throw .unavailable(reason: IOUringProbe.reason(for: error.code))
        case .success(let ring):
            guard ring.supportsDiskOperations else {
                throw .unavailable(
                    reason: "the kernel's io_uring lacks READ, WRITE, FSYNC or FALLOCATE (needs Linux 5.6 or later)")
            }
            rings.checkIn(ring)
        }
    }

    // MARK: - Disk

    public func open(_ path: String, create: Bool) async throws(DiskError) -> DiskFile {
        try DiskPath.validate(path)
        let root = self.root
        let direct = directIO
        let opened = await pool.runDiskJob {
            DiskNames.openFile(root: root, path: path, create: create, openDirect: direct ? { cistern_open_direct($0, 0) } : nil)
        }
        return handles.insert(try opened.get())
    }

    /// Whether `file` has an `O_DIRECT` descriptor for its aligned transfers (false
    /// when `directIO` is off, the file system refused one, or the file is not open).
    public func usesDirectIO(_ file: DiskFile) -> Bool {
        ((try? handles.lookup(file))?.directFD ?? -1) >= 0
    }

    public func close(_ file: DiskFile) async {
        // The descriptor closes when the last batch holding it finishes.
        handles.remove(file)
    }

    public func remove(_ path: String) async throws(DiskError) {
        try await names.remove(path)
    }

    public func space() async throws(DiskError) -> DiskSpace { try await names.space() }

    public func list() async throws(DiskError) -> [String] {
        try await names.list()
    }

    public func size(_ file: DiskFile) async throws(DiskError) -> UInt64 {
        let descriptor = try handles.lookup(file)
        let root = self.root
        return try await pool.runDiskJob { () -> Result<UInt64, DiskError> in
            if let reason = descriptor.poisoned { return .failure(.ioError(path: file.path, detail: reason)) }
            var info = stat()
            guard fstat(descriptor.fd, &info) == 0 else {
                return .failure(POSIXErrno.error(POSIXErrno.current, call: "fstat", path: file.path, root: root))
            }
            return .success(UInt64(info.st_size))
        }.get()
    }

    public func submit(_ ops: [DiskOp]) async -> [Result<DiskCompletion, DiskError>] {
        if ops.isEmpty { return [] }
        if ops.count > DiskLimits.batchOpsMax {
            let error = DiskError.tooLarge(
                what: "batch of \(ops.count) operations", bytes: ops.count, limitBytes: DiskLimits.batchOpsMax)
            return Array(repeating: .failure(error), count: ops.count)
        }
        let descriptors = handles.lookup(ops)
        let root = self.root
        let rings = self.rings
        let results = await pool.runDiskJob {
            IOUringBatch.run(ops, descriptors: descriptors, root: root, rings: rings)
        }
        switch results {
        case .success(let results): return results
        case .failure(let error): return Array(repeating: .failure(error), count: ops.count)
        }
    }

}
