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

// What the POSIX and io_uring disks share: their descriptors, their handle table, how
// they open and name files, and how they run blocking work.

/// Identifies the file behind a descriptor (device and inode), so that two handles on
/// the same file are ordered against each other within a batch.
package struct DiskFileKey: Hashable, Sendable {
    package let device: UInt64
    package let inode: UInt64
}

/// One open file descriptor of a disk, shared by the handle table and by the
/// operations in flight on it.
///
/// Promises: the descriptor is closed exactly once, when the last reference goes
/// away, so closing a handle while an operation still runs (on a pool thread or in a
/// ring) never lets it touch a recycled descriptor number. After an `fsync` fails the
/// descriptor is poisoned: Linux may drop the dirty pages and report success on the
/// next `fsync`, so every later operation on this handle fails instead.
package final class DiskFileDescriptor: Sendable {
    package let fd: Int32
    /// A second descriptor on the same file opened with `O_DIRECT` (-1: none, because
    /// the disk does not use direct I/O or the file system refused it). Transfers
    /// aligned to `DiskFileDescriptor.directAlignmentBytes` may use it.
    package let directFD: Int32
    package let path: String
    package let key: DiskFileKey
    private let poison = Mutex<String?>(nil)

    /// Offsets, lengths and buffer addresses of direct transfers are multiples of
    /// this (the largest logical block size of common devices).
    package static let directAlignmentBytes = 4096

    package init(fd: Int32, path: String, key: DiskFileKey, directFD: Int32 = -1) {
        self.fd = fd
        self.directFD = directFD
        self.path = path
        self.key = key
    }

    /// The reason this descriptor may no longer be used, if an earlier fsync failed.
    package var poisoned: String? { poison.withLock { $0 } }

    package func markPoisoned(_ reason: String) {
        poison.withLock { if $0 == nil { $0 = reason } }
    }

    deinit {
        _ = diskClose(fd)
        if directFD >= 0 { _ = diskClose(directFD) }
    }
}

/// A disk's open handles: numbers handed to callers, each naming a descriptor until
/// it is closed. Numbers are never reused.
package final class DiskHandleTable: Sendable {
    private struct Table: ~Copyable {
        var nextID: UInt64 = 1
        var open: [UInt64: DiskFileDescriptor] = [:]
    }

    private let table = Mutex(Table())

    package init() {}

    /// Registers `descriptor` under a new number.
    package func insert(_ descriptor: DiskFileDescriptor) -> DiskFile {
        let id = table.withLock { t in
            let id = t.nextID
            t.nextID += 1
            t.open[id] = descriptor
            return id
        }
        return DiskFile(id: id, path: descriptor.path)
    }

    /// Forgets the handle; its descriptor closes when the last operation holding it ends.
    package func remove(_ file: DiskFile) {
        _ = table.withLock { $0.open.removeValue(forKey: file.id) }
    }

    /// The descriptor behind `file`; `badHandle` when it is not open.
    package func lookup(_ file: DiskFile) throws(DiskError) -> DiskFileDescriptor {
        guard let descriptor = table.withLock({ $0.open[file.id] }) else { throw .badHandle(file) }
        return descriptor
    }

    /// The descriptors behind every operation's file, under one lock (nil: not open).
    /// Resolved on the caller's side: a handle closed after submission still completes
    /// the batch, as the caller submitted it while it was open.
    package func lookup(_ ops: [DiskOp]) -> [DiskFileDescriptor?] {
        table.withLock { t in ops.map { t.open[DiskNames.file(of: $0).id] } }
    }
}

/// Opening, creating and naming files under a disk's root (blocking: run on pool
/// threads, except `makeDirectories` at a disk's creation).
package enum DiskNames {
    package static func file(of op: DiskOp) -> DiskFile {
        switch op {
        case .read(let f, _, _), .write(let f, _, _), .fsync(let f), .fallocate(let f, _, _), .truncate(let f, _):
            return f
        }
    }

    /// `offset` as an `off_t` when `offset + count` still fits in one.
    package static func fileOffset(_ offset: UInt64, plus count: Int) -> off_t? {
        guard let start = Int64(exactly: offset), start <= Int64.max - Int64(count) else { return nil }
        return off_t(start)
    }

    /// Opens `root/path` for reading and writing; with `create`, creates it (and its
    /// directories, each made durable) when missing. Only regular files open. With
    /// `openDirect`, the file also gets a descriptor from it (given the full path; a
    /// negative result means none, and the file is used through the page cache alone).
    package static func openFile(
        root: String, path: String, create: Bool, openDirect: ((String) -> Int32)? = nil
    ) -> Result<DiskFileDescriptor, DiskError> {
        let full = root + "/" + path
        if create {
            if let error = makeParents(root: root, path: path) { return .failure(error) }
            var fd: Int32
            repeat { fd = diskOpen(full, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644) } while fd < 0 && errno == EINTR
            if fd >= 0 {
                var info = stat()
                guard fstat(fd, &info) == 0 else {
                    let code = POSIXErrno.current
                    _ = diskClose(fd)
                    return .failure(POSIXErrno.error(code, call: "fstat", path: path, root: root))
                }
                let descriptor = DiskFileDescriptor(fd: fd, path: path, key: key(of: info), directFD: openDirect?(full) ?? -1)
                if case .failure(let error) = syncDirectory(parent(of: full), path: path, root: root) {
                    return .failure(error)
                }
                return .success(descriptor)
            }
            let code = POSIXErrno.current
            if code != EEXIST { return .failure(POSIXErrno.error(code, call: "open", path: path, root: root)) }
        }
        var fd: Int32
        repeat { fd = diskOpen(full, O_RDWR | O_CLOEXEC) } while fd < 0 && errno == EINTR
        if fd < 0 { return .failure(POSIXErrno.error(POSIXErrno.current, call: "open", path: path, root: root)) }
        var info = stat()
        if fstat(fd, &info) != 0 || (info.st_mode & S_IFMT) != S_IFREG {
            _ = diskClose(fd)
            return .failure(.ioError(path: path, detail: "open: not a regular file"))
        }
        return .success(DiskFileDescriptor(fd: fd, path: path, key: key(of: info), directFD: openDirect?(full) ?? -1))
    }

    private static func key(of info: stat) -> DiskFileKey {
        DiskFileKey(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
    }

    /// Creates the directories on the way to `path` under `root`, fsyncing the parent of
    /// each one created.
    package static func makeParents(root: String, path: String) -> DiskError? {
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
    package static func syncDirectory(_ directory: String, path: String, root: String) -> Result<Void, DiskError> {
        let fd = diskOpen(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { return .failure(POSIXErrno.error(POSIXErrno.current, call: "open directory", path: path, root: root)) }
        defer { _ = diskClose(fd) }
        var rc: Int32
        repeat { rc = fsync(fd) } while rc != 0 && errno == EINTR
        if rc != 0 { return .failure(POSIXErrno.error(POSIXErrno.current, call: "fsync directory", path: path, root: root)) }
        return .success(())
    }

    package static func parent(of full: String) -> String {
        guard let slash = full.lastIndex(of: "/") else { return "." }
        return slash == full.startIndex ? "/" : String(full[..<slash])
    }
}

extension NIOThreadPool {
    /// Runs `body` on one of the pool's threads. Fails with `unavailable` only when the
    /// pool has been shut down.
    package func runDiskJob<T: Sendable>(
        _ body: @escaping @Sendable () -> Result<T, DiskError>
    ) async -> Result<T, DiskError> {
        await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, DiskError>, Never>) in
            submit { state in
                switch state {
                case .active: continuation.resume(returning: body())
                case .cancelled:
                    continuation.resume(returning: .failure(.unavailable(reason: "the disk's thread pool has been shut down")))
                }
            }
        }
    }
    /// Runs `body`, which cannot fail, on one of the pool's threads.
    package func runDiskJob<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> Result<T, DiskError> {
        await runDiskJob { () -> Result<T, DiskError> in .success(body()) }
    }
}

// File-scope wrappers, so that a disk's own `open` and `close` methods do not hide them.
private func diskOpen(_ path: String, _ flags: Int32, _ mode: mode_t = 0) -> Int32 { open(path, flags, mode) }
private func diskClose(_ fd: Int32) -> Int32 { close(fd) }
