import CisternCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A `Disk` over the POSIX file system, rooted at one directory.
///
/// Promises:
/// - Paths are checked with `DiskPath.validate` and resolved under `root`; a path may
///   name a file in a subdirectory ("a/b"), whose directories `open(_:create: true)`
///   creates. `list()` returns every regular file under the root, recursively, as
///   relative paths, sorted; directories and symbolic links are not listed.
/// - Every blocking system call runs on a `NIOThreadPool` (by default NIO's shared
///   blocking pool), never on the caller's thread. A batch runs as one job, in order,
///   so later operations observe earlier ones. Once submitted, a batch runs to the
///   end even if the calling task is cancelled.
/// - Reads and writes loop over short transfers and `EINTR`; a read returns fewer
///   bytes than asked only at end of file. Writes past the end leave zeros between.
/// - `fallocate` reserves space without changing the file's size or content (where
///   the file system cannot preallocate, it succeeds without reserving).
/// - Creating a file (and any directory on its way) and removing one fsync the parent
///   directory, so the name change is durable on return.
/// - Errors: `ENOENT`/`ENOTDIR` are `notFound`, `ENOSPC`/`EDQUOT` are `noSpace` with the
///   file system's free bytes, everything else is `ioError` with the `strerror` text.
///   Reads and writes over `DiskLimits.ioBytesMax` and batches over
///   `DiskLimits.batchOpsMax` fail with `tooLarge`; handles that are not open fail with
///   `badHandle`. After a failed `fsync` the handle is poisoned and every later
///   operation on it fails (the kernel may have dropped the unwritten pages).
public final class POSIXDisk: Disk {
    /// The directory every path is relative to (absolute or relative to the process's
    /// working directory, as given).
    public let root: String
    public var location: String { root }
    private let pool: NIOThreadPool
    private let handles = DiskHandleTable()

    /// A disk rooted at `root`, creating the directory (and its parents) if missing.
    /// Blocking work runs on `threadPool`, which must be started; the default is NIO's
    /// shared, always-running blocking pool.
    public init(root: String, threadPool: NIOThreadPool = DiskThreadPool.shared) throws(DiskError) {
        var trimmed = root
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed.removeLast() }
        guard !trimmed.isEmpty else { throw .invalidPath(path: root, reason: "empty root directory") }
        self.root = trimmed
        self.pool = threadPool
        try Self.makeDirectories(trimmed)
    }

    // MARK: - Disk

    public func open(_ path: String, create: Bool) async throws(DiskError) -> DiskFile {
        try DiskPath.validate(path)
        let root = self.root
        let opened = await pool.runDiskJob { DiskNames.openFile(root: root, path: path, create: create) }
        return handles.insert(try opened.get())
    }

    public func close(_ file: DiskFile) async {
        // The descriptor closes when the last operation holding it finishes.
        handles.remove(file)
    }

    public func remove(_ path: String) async throws(DiskError) {
        try DiskPath.validate(path)
        let root = self.root
        try await pool.runDiskJob { () -> Result<Void, DiskError> in
            let full = root + "/" + path
            if unlink(full) != 0 {
                let code = POSIXErrno.current
                return .failure(POSIXErrno.error(code, call: "unlink", path: path, root: root))
            }
            return DiskNames.syncDirectory(DiskNames.parent(of: full), path: path, root: root)
        }.get()
    }

    public func list() async throws(DiskError) -> [String] {
        let root = self.root
        return try await pool.runDiskJob { () -> Result<[String], DiskError> in
            var names: [String] = []
            if let error = Self.walk(root: root, relative: "", into: &names) { return .failure(error) }
            return .success(names.sorted())
        }.get()
    }

    public func space() async throws(DiskError) -> DiskSpace { try POSIXErrno.space(root) }

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
            let error = DiskError.tooLarge(what: "batch of \(ops.count) operations", bytes: ops.count, limitBytes: DiskLimits.batchOpsMax)
            return Array(repeating: .failure(error), count: ops.count)
        }
        // Resolve handles now, on the caller's side: a handle closed after submission
        // still completes this batch, as the caller submitted it while it was open.
        let descriptors = handles.lookup(ops)
        let root = self.root
        let results = await pool.runDiskJob { () -> [Result<DiskCompletion, DiskError>] in
            var results: [Result<DiskCompletion, DiskError>] = []
            results.reserveCapacity(ops.count)
            for (op, descriptor) in zip(ops, descriptors) {
                guard let descriptor else {
                    results.append(.failure(.badHandle(DiskNames.file(of: op))))
                    continue
                }
                results.append(Self.perform(op, on: descriptor, root: root))
            }
            return results
        }
        switch results {
        case .success(let results): return results
        case .failure(let error): return Array(repeating: .failure(error), count: ops.count)
        }
    }

    // MARK: - Operations (run on pool threads)

    private static func perform(
        _ op: DiskOp, on descriptor: DiskFileDescriptor, root: String
    ) -> Result<DiskCompletion, DiskError> {
        let path = descriptor.path
        if let reason = descriptor.poisoned { return .failure(.ioError(path: path, detail: reason)) }
        switch op {
        case .read(_, let offset, let length):
            if length > DiskLimits.ioBytesMax {
                return .failure(.tooLarge(what: "read", bytes: length, limitBytes: DiskLimits.ioBytesMax))
            }
            if length < 0 { return .failure(.tooLarge(what: "read of negative length", bytes: length, limitBytes: DiskLimits.ioBytesMax)) }
            guard let start = DiskNames.fileOffset(offset, plus: length) else {
                return .failure(.ioError(path: path, detail: "read at offset \(offset) is beyond the largest file offset"))
            }
            let (bytes, code) = readFully(descriptor.fd, offset: start, length: length)
            if let code { return .failure(POSIXErrno.error(code, call: "pread", path: path, root: root)) }
            return .success(.read(bytes))

        case .write(_, let offset, let bytes):
            if bytes.count > DiskLimits.ioBytesMax {
                return .failure(.tooLarge(what: "write", bytes: bytes.count, limitBytes: DiskLimits.ioBytesMax))
            }
            guard let start = DiskNames.fileOffset(offset, plus: bytes.count) else {
                return .failure(.ioError(path: path, detail: "write at offset \(offset) is beyond the largest file offset"))
            }
            if let code = writeFully(descriptor.fd, offset: start, bytes: bytes) {
                return .failure(POSIXErrno.error(code, call: "pwrite", path: path, root: root, neededBytes: UInt64(bytes.count)))
            }
            return .success(.done)

        case .fsync:
            var rc: Int32
            repeat { rc = posixFsync(descriptor.fd) } while rc != 0 && errno == EINTR
            if rc != 0 {
                let code = POSIXErrno.current
                let error = POSIXErrno.error(code, call: "fsync", path: path, root: root)
                descriptor.markPoisoned(
                    "an earlier fsync failed (\(POSIXErrno.describe(code))); writes since the last successful fsync may be lost")
                return .failure(error)
            }
            return .success(.done)

        case .fallocate(_, let offset, let length):
            if length == 0 { return .success(.done) }
            guard let start = Int64(exactly: offset), let count = Int64(exactly: length), start <= Int64.max - count else {
                return .failure(.ioError(path: path, detail: "fallocate of \(length) bytes at \(offset) is beyond the largest file offset"))
            }
            if let code = allocate(descriptor.fd, offset: start, length: count) {
                return .failure(POSIXErrno.error(code, call: "posix_fallocate", path: path, root: root, neededBytes: length))
            }
            return .success(.done)

        case .truncate(_, let length):
            guard let size = off_t(exactly: length) else {
                return .failure(.ioError(path: path, detail: "truncate to \(length) bytes is beyond the largest file offset"))
            }
            var rc: Int32
            repeat { rc = ftruncate(descriptor.fd, size) } while rc != 0 && errno == EINTR
            if rc != 0 {
                return .failure(POSIXErrno.error(POSIXErrno.current, call: "ftruncate", path: path, root: root, neededBytes: length))
            }
            return .success(.done)
        }
    }

    /// Reads until `length` bytes or end of file; returns the errno of a failed call.
    private static func readFully(_ fd: Int32, offset: off_t, length: Int) -> ([UInt8], Int32?) {
        if length == 0 { return ([], nil) }
        var failure: Int32? = nil
        let bytes = [UInt8](unsafeUninitializedCapacity: length) { buffer, initialized in
            var done = 0
            while done < length {
                let n = pread(fd, buffer.baseAddress! + done, length - done, offset + off_t(done))
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = errno
                    break
                }
                if n == 0 { break }  // end of file
                done += n
            }
            initialized = done
        }
        return (bytes, failure)
    }

    /// Writes all of `bytes`; returns the errno of a failed call, or nil.
    private static func writeFully(_ fd: Int32, offset: off_t, bytes: [UInt8]) -> Int32? {
        bytes.withUnsafeBytes { buffer -> Int32? in
            var done = 0
            while done < buffer.count {
                let n = pwrite(fd, buffer.baseAddress! + done, buffer.count - done, offset + off_t(done))
                if n < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                if n == 0 { return EIO }  // no progress and no error: treat as a device failure
                done += n
            }
            return nil
        }
    }

    /// Reserves `[offset, offset + length)` without changing the file's size (Linux
    /// `fallocate` with `FALLOC_FL_KEEP_SIZE`); returns the error number, or nil. Where
    /// the file system cannot preallocate (`EOPNOTSUPP`) or the call does not exist,
    /// nothing is reserved and the call succeeds: later writes allocate as they go.
    private static func allocate(_ fd: Int32, offset: Int64, length: Int64) -> Int32? {
        guard let reserve = keepSizeFallocate else { return nil }
        var rc: Int32
        repeat { rc = reserve(fd, 1 /* FALLOC_FL_KEEP_SIZE */, off_t(offset), off_t(length)) } while rc != 0 && errno == EINTR
        if rc == 0 { return nil }
        let code = errno
        return code == EOPNOTSUPP ? nil : code
    }

    // MARK: - Names (run on pool threads, except makeDirectories from init)

    /// Creates `directory` and its missing parents (like `mkdir -p`).
    private static func makeDirectories(_ directory: String) throws(DiskError) {
        var prefix = directory.hasPrefix("/") ? "" : "."
        for component in directory.split(separator: "/") {
            prefix += "/" + component
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
                throw POSIXErrno.error(POSIXErrno.current, call: "mkdir", path: prefix, root: "/")
            }
        }
        var info = stat()
        guard stat(directory, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
            throw .invalidPath(path: directory, reason: "the disk root exists and is not a directory")
        }
    }

    /// Appends the regular files under `root/relative` to `names`, recursively.
    private static func walk(root: String, relative: String, into names: inout [String]) -> DiskError? {
        let directory = relative.isEmpty ? root : root + "/" + relative
        guard let stream = opendir(directory) else {
            return POSIXErrno.error(POSIXErrno.current, call: "opendir", path: relative.isEmpty ? "." : relative, root: root)
        }
        defer { closedir(stream) }
        var children: [String] = []
        while true {
            errno = 0
            guard let entry = readdir(stream) else {
                if errno != 0 {
                    return POSIXErrno.error(POSIXErrno.current, call: "readdir", path: relative.isEmpty ? "." : relative, root: root)
                }
                break
            }
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name == "." || name == ".." { continue }
            children.append(name)
        }
        for name in children {
            let child = relative.isEmpty ? name : relative + "/" + name
            var info = stat()
            guard lstat(root + "/" + child, &info) == 0 else { continue }  // removed meanwhile
            switch info.st_mode & S_IFMT {
            case S_IFREG: names.append(child)
            case S_IFDIR: if let error = walk(root: root, relative: child, into: &names) { return error }
            default: continue
            }
        }
        return nil
    }
}

/// Linux `fallocate(2)`, looked up at run time: Swift's Glibc import hides it (it needs
/// `_GNU_SOURCE`), and it keeps the file size where `posix_fallocate` would grow it.
private typealias FallocateFunction = @convention(c) (Int32, Int32, off_t, off_t) -> Int32
private let keepSizeFallocate: FallocateFunction? = {
    #if os(Linux)
    guard let symbol = dlsym(nil, "fallocate") else { return nil }
    return unsafeBitCast(symbol, to: FallocateFunction.self)
    #else
    return nil
    #endif
}()

// A file-scope wrapper, so that no method of the disk hides the system call.
private func posixFsync(_ fd: Int32) -> Int32 { fsync(fd) }
