import CisternCore
import CisternPOSIX
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
/// - Files are opened without `O_DIRECT` (offsets and lengths need no alignment); data
///   goes through the page cache, and is copied once between the caller's arrays and
///   the ring's buffers.
public final class IOUringDisk: Disk {
    /// The directory every path is relative to (absolute or relative to the process's
    /// working directory, as given, without trailing slashes).
    public let root: String
    public var location: String { root }
    private let pool: NIOThreadPool
    private let names: POSIXDisk
    private let rings: URingCache
    private let table = Mutex(HandleTable())

    private struct HandleTable: ~Copyable {
        var nextID: UInt64 = 1
        var open: [UInt64: URingFileDescriptor] = [:]
    }

    /// A disk rooted at `root`, creating the directory (and its parents) if missing.
    /// Blocking work runs on `threadPool`, which must be started (the default is NIO's
    /// shared blocking pool). Each ring has `ringEntries` submission entries (rounded up
    /// to a power of two by the kernel); larger waves are submitted in chunks.
    ///
    /// Throws `invalidPath` for a bad root (as `POSIXDisk`), and `unavailable` when no
    /// ring can be set up or the kernel lacks the READ, WRITE, FSYNC or FALLOCATE ring
    /// operations (Linux 5.6 or later): use `DiskFactory.makeBest` to fall back.
    public init(root: String, threadPool: NIOThreadPool = DiskThreadPool.shared, ringEntries: UInt32 = 256) throws(DiskError) {
        let names = try POSIXDisk(root: root, threadPool: threadPool)
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
        let opened = await blocking { Self.openFile(root: root, path: path, create: create) }
        let descriptor = try opened.get()
        let id = table.withLock { table in
            let id = table.nextID
            table.nextID += 1
            table.open[id] = descriptor
            return id
        }
        return DiskFile(id: id, path: path)
    }

    public func close(_ file: DiskFile) async {
        // The descriptor closes when the last batch holding it finishes.
        _ = table.withLock { $0.open.removeValue(forKey: file.id) }
    }

    public func remove(_ path: String) async throws(DiskError) {
        try await names.remove(path)
    }

    public func space() async throws(DiskError) -> DiskSpace { try await names.space() }

    public func list() async throws(DiskError) -> [String] {
        try await names.list()
    }

    public func size(_ file: DiskFile) async throws(DiskError) -> UInt64 {
        guard let descriptor = table.withLock({ $0.open[file.id] }) else { throw .badHandle(file) }
        let root = self.root
        return try await blocking { () -> Result<UInt64, DiskError> in
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
        // Resolve handles now, on the caller's side: a handle closed after submission
        // still completes this batch, as the caller submitted it while it was open.
        let descriptors: [URingFileDescriptor?] = table.withLock { table in
            ops.map { table.open[IOUringBatch.file(of: $0).id] }
        }
        let root = self.root
        let rings = self.rings
        let results = await blocking {
            IOUringBatch.run(ops, descriptors: descriptors, root: root, rings: rings)
        }
        switch results {
        case .success(let results): return results
        case .failure(let error): return Array(repeating: .failure(error), count: ops.count)
        }
    }

    // MARK: - Running blocking work

    /// Runs `body` on the thread pool. Fails with `unavailable` only when the pool has
    /// been shut down.
    private func blocking<T: Sendable>(
        _ body: @escaping @Sendable () -> Result<T, DiskError>
    ) async -> Result<T, DiskError> {
        await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, DiskError>, Never>) in
            pool.submit { state in
                switch state {
                case .active: continuation.resume(returning: body())
                case .cancelled:
                    continuation.resume(returning: .failure(.unavailable(reason: "the disk's thread pool has been shut down")))
                }
            }
        }
    }

    private func blocking<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> Result<T, DiskError> {
        await blocking { () -> Result<T, DiskError> in .success(body()) }
    }

    // MARK: - Names (run on pool threads)

    private static func openFile(root: String, path: String, create: Bool) -> Result<URingFileDescriptor, DiskError> {
        let full = root + "/" + path
        if create {
            if let error = makeParents(root: root, path: path) { return .failure(error) }
            var fd: Int32
            repeat { fd = uringOpen(full, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644) } while fd < 0 && errno == EINTR
            if fd >= 0 {
                var info = stat()
                guard fstat(fd, &info) == 0 else {
                    let code = POSIXErrno.current
                    _ = uringClose(fd)
                    return .failure(POSIXErrno.error(code, call: "fstat", path: path, root: root))
                }
                let descriptor = URingFileDescriptor(fd: fd, path: path, key: key(of: info))
                if case .failure(let error) = syncDirectory(parent(of: full), path: path, root: root) {
                    return .failure(error)
                }
                return .success(descriptor)
            }
            let code = POSIXErrno.current
            if code != EEXIST { return .failure(POSIXErrno.error(code, call: "open", path: path, root: root)) }
        }
        var fd: Int32
        repeat { fd = uringOpen(full, O_RDWR | O_CLOEXEC) } while fd < 0 && errno == EINTR
        if fd < 0 { return .failure(POSIXErrno.error(POSIXErrno.current, call: "open", path: path, root: root)) }
        var info = stat()
        if fstat(fd, &info) != 0 || (info.st_mode & S_IFMT) != S_IFREG {
            _ = uringClose(fd)
            return .failure(.ioError(path: path, detail: "open: not a regular file"))
        }
        return .success(URingFileDescriptor(fd: fd, path: path, key: key(of: info)))
    }

    private static func key(of info: stat) -> URingFileKey {
        URingFileKey(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
    }

    /// Creates the directories on the way to `path` under `root`, fsyncing the parent of
    /// each one created.
    private static func makeParents(root: String, path: String) -> DiskError? {
        var components = path.split(separator: "/").map(String.init)
        components.removeLast()
        var directory = root
        for component in components {
            let next = directory + "/" + component
            if mkdir(next, 0o755) == 0 {
                if case .failure(let error) = syncDirectory(directory, path: path, root: root) { return error }
            } else if errno != EEXIST {
                return POSIXErrno.error(POSIXErrno.current, call: "mkdir", path: path, root: root)
            }
            directory = next
        }
        return nil
    }

    /// fsyncs a directory so the names in it are durable.
    private static func syncDirectory(_ directory: String, path: String, root: String) -> Result<Void, DiskError> {
        let fd = uringOpen(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { return .failure(POSIXErrno.error(POSIXErrno.current, call: "open directory", path: path, root: root)) }
        defer { _ = uringClose(fd) }
        var rc: Int32
        repeat { rc = uringFsync(fd) } while rc != 0 && errno == EINTR
        if rc != 0 { return .failure(POSIXErrno.error(POSIXErrno.current, call: "fsync directory", path: path, root: root)) }
        return .success(())
    }

    private static func parent(of full: String) -> String {
        guard let slash = full.lastIndex(of: "/") else { return "." }
        return slash == full.startIndex ? "/" : String(full[..<slash])
    }
}

// File-scope wrappers: inside `IOUringDisk`, `open` and `close` name the Disk methods.
private func uringOpen(_ path: String, _ flags: Int32, _ mode: mode_t = 0) -> Int32 { open(path, flags, mode) }
private func uringClose(_ fd: Int32) -> Int32 { close(fd) }
private func uringFsync(_ fd: Int32) -> Int32 { fsync(fd) }
