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
    private let table = Mutex(HandleTable())

    private struct HandleTable: ~Copyable {
        var nextID: UInt64 = 1
        var open: [UInt64: POSIXFileDescriptor] = [:]
    }

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
        // The descriptor closes when the last operation holding it finishes.
        _ = table.withLock { $0.open.removeValue(forKey: file.id) }
    }

    public func remove(_ path: String) async throws(DiskError) {
        try DiskPath.validate(path)
        let root = self.root
        try await blocking { () -> Result<Void, DiskError> in
            let full = root + "/" + path
            if unlink(full) != 0 {
                let code = POSIXErrno.current
                return .failure(POSIXErrno.error(code, call: "unlink", path: path, root: root))
            }
            return Self.syncDirectory(Self.parent(of: full), path: path, root: root)
        }.get()
    }

    public func list() async throws(DiskError) -> [String] {
        let root = self.root
        return try await blocking { () -> Result<[String], DiskError> in
            var names: [String] = []
            if let error = Self.walk(root: root, relative: "", into: &names) { return .failure(error) }
            return .success(names.sorted())
        }.get()
    }

    public func space() async throws(DiskError) -> DiskSpace { try POSIXErrno.space(root) }

    public func size(_ file: DiskFile) async throws(DiskError) -> UInt64 {
        let descriptor = try lookup(file)
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
            let error = DiskError.tooLarge(what: "batch of \(ops.count) operations", bytes: ops.count, limitBytes: DiskLimits.batchOpsMax)
            return Array(repeating: .failure(error), count: ops.count)
        }
        // Resolve handles now, on the caller's side: a handle closed after submission
        // still completes this batch, as the caller submitted it while it was open.
        let descriptors: [Result<POSIXFileDescriptor, DiskError>] = table.withLock { table in
            ops.map { op in
                let file = Self.file(of: op)
                guard let descriptor = table.open[file.id] else { return .failure(.badHandle(file)) }
                return .success(descriptor)
            }
        }
        let root = self.root
        let results = await blocking { () -> [Result<DiskCompletion, DiskError>] in
            var results: [Result<DiskCompletion, DiskError>] = []
            results.reserveCapacity(ops.count)
            for (op, descriptor) in zip(ops, descriptors) {
                switch descriptor {
                case .failure(let error): results.append(.failure(error))
                case .success(let descriptor): results.append(Self.perform(op, on: descriptor, root: root))
                }
            }
            return results
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

    private func lookup(_ file: DiskFile) throws(DiskError) -> POSIXFileDescriptor {
        guard let descriptor = table.withLock({ $0.open[file.id] }) else { throw .badHandle(file) }
        return descriptor
    }

    private static func file(of op: DiskOp) -> DiskFile {
        switch op {
        case .read(let f, _, _), .write(let f, _, _), .fsync(let f), .fallocate(let f, _, _), .truncate(let f, _):
            return f
        }
    }

    // MARK: - Operations (run on pool threads)

    private static func perform(
        _ op: DiskOp, on descriptor: POSIXFileDescriptor, root: String
    ) -> Result<DiskCompletion, DiskError> {
        let path = descriptor.path
        if let reason = descriptor.poisoned { return .failure(.ioError(path: path, detail: reason)) }
        switch op {
        case .read(_, let offset, let length):
            if length > DiskLimits.ioBytesMax {
                return .failure(.tooLarge(what: "read", bytes: length, limitBytes: DiskLimits.ioBytesMax))
            }
            if length < 0 { return .failure(.tooLarge(what: "read of negative length", bytes: length, limitBytes: DiskLimits.ioBytesMax)) }
            guard let start = fileOffset(offset, plus: length) else {
                return .failure(.ioError(path: path, detail: "read at offset \(offset) is beyond the largest file offset"))
            }
            let (bytes, code) = readFully(descriptor.fd, offset: start, length: length)
            if let code { return .failure(POSIXErrno.error(code, call: "pread", path: path, root: root)) }
            return .success(.read(bytes))

        case .write(_, let offset, let bytes):
            if bytes.count > DiskLimits.ioBytesMax {
                return .failure(.tooLarge(what: "write", bytes: bytes.count, limitBytes: DiskLimits.ioBytesMax))
            }
            guard let start = fileOffset(offset, plus: bytes.count) else {
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

    /// `offset` as an `off_t` when `offset + count` still fits in one.
    private static func fileOffset(_ offset: UInt64, plus count: Int) -> off_t? {
        guard let start = Int64(exactly: offset), start <= Int64.max - Int64(count) else { return nil }
        return off_t(start)
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

    private static func openFile(root: String, path: String, create: Bool) -> Result<POSIXFileDescriptor, DiskError> {
        let full = root + "/" + path
        if create {
            if let error = makeParents(root: root, path: path) { return .failure(error) }
            var fd: Int32
            repeat { fd = posixOpen(full, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644) } while fd < 0 && errno == EINTR
            if fd >= 0 {
                let descriptor = POSIXFileDescriptor(fd: fd, path: path)
                if case .failure(let error) = syncDirectory(parent(of: full), path: path, root: root) {
                    return .failure(error)
                }
                return .success(descriptor)
            }
            let code = POSIXErrno.current
            if code != EEXIST { return .failure(POSIXErrno.error(code, call: "open", path: path, root: root)) }
        }
        var fd: Int32
        repeat { fd = posixOpen(full, O_RDWR | O_CLOEXEC) } while fd < 0 && errno == EINTR
        if fd < 0 { return .failure(POSIXErrno.error(POSIXErrno.current, call: "open", path: path, root: root)) }
        var info = stat()
        if fstat(fd, &info) != 0 || (info.st_mode & S_IFMT) != S_IFREG {
            _ = posixClose(fd)
            return .failure(.ioError(path: path, detail: "open: not a regular file"))
        }
        return .success(POSIXFileDescriptor(fd: fd, path: path))
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

    /// fsyncs a directory so the names in it are durable.
    private static func syncDirectory(_ directory: String, path: String, root: String) -> Result<Void, DiskError> {
        let fd = posixOpen(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { return .failure(POSIXErrno.error(POSIXErrno.current, call: "open directory", path: path, root: root)) }
        defer { _ = posixClose(fd) }
        var rc: Int32
        repeat { rc = posixFsync(fd) } while rc != 0 && errno == EINTR
        if rc != 0 { return .failure(POSIXErrno.error(POSIXErrno.current, call: "fsync directory", path: path, root: root)) }
        return .success(())
    }

    private static func parent(of full: String) -> String {
        guard let slash = full.lastIndex(of: "/") else { return "." }
        return slash == full.startIndex ? "/" : String(full[..<slash])
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

// File-scope wrappers: inside `POSIXDisk`, `open` and `close` name the Disk methods.
private func posixOpen(_ path: String, _ flags: Int32, _ mode: mode_t = 0) -> Int32 { open(path, flags, mode) }
private func posixClose(_ fd: Int32) -> Int32 { close(fd) }
private func posixFsync(_ fd: Int32) -> Int32 { fsync(fd) }
