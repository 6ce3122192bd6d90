/// An open file of a `Disk`.
public struct DiskFile: Hashable, Sendable, CustomStringConvertible {
    public let id: UInt64
    public let path: String
    public init(id: UInt64, path: String) {
        self.id = id
        self.path = path
    }
    public var description: String { "\(path)#\(id)" }
}

/// One operation of a batch submitted to a `Disk`.
public enum DiskOp: Sendable, Equatable {
    /// Reads up to `length` bytes; fewer at end of file.
    case read(DiskFile, offset: UInt64, length: Int)
    case write(DiskFile, offset: UInt64, bytes: [UInt8])
    /// Makes every earlier completed write to the file durable.
    case fsync(DiskFile)
    /// Reserves space so later writes in the range cannot fail for lack of space.
    case fallocate(DiskFile, offset: UInt64, length: UInt64)
    case truncate(DiskFile, length: UInt64)
}

/// Space on the device holding a disk.
public struct DiskSpace: Sendable, Equatable {
    public var totalBytes: UInt64
    /// Bytes this process may still allocate.
    public var freeBytes: UInt64
    public init(totalBytes: UInt64, freeBytes: UInt64) {
        self.totalBytes = totalBytes
        self.freeBytes = freeBytes
    }
}

/// What a successful operation returns.
public enum DiskCompletion: Sendable, Equatable {
    case read([UInt8])
    case done
}

/// Why a disk operation failed, with what to do about it.
public enum DiskError: Error, Equatable, Sendable, CustomStringConvertible {
    case notFound(path: String)
    case alreadyExists(path: String)
    case invalidPath(path: String, reason: String)
    case noSpace(path: String, neededBytes: UInt64, freeBytes: UInt64)
    case ioError(path: String, detail: String)
    case badHandle(DiskFile)
    case tooLarge(what: String, bytes: Int, limitBytes: Int)
    case unavailable(reason: String)

    public var description: String {
        switch self {
        case .notFound(let p): return "\(p): no such file"
        case .alreadyExists(let p): return "\(p): already exists"
        case .invalidPath(let p, let r): return "invalid path '\(p)': \(r)"
        case .noSpace(let p, let need, let free):
            return "\(p): no space left (\(need) bytes needed, \(free) free); free space on the target or add targets"
        case .ioError(let p, let d): return "\(p): I/O error: \(d); the device may be failing"
        case .badHandle(let f): return "\(f) is not open (closed, or opened before a restart)"
        case .tooLarge(let what, let b, let l): return "\(what) of \(b) bytes exceeds the \(l)-byte limit; split it"
        case .unavailable(let r): return "disk unavailable: \(r)"
        }
    }
}

public enum DiskLimits {
    /// Largest single read or write, in bytes.
    public static let ioBytesMax = 64 << 20
    /// Most operations in one submitted batch.
    public static let batchOpsMax = 4096
}

/// The files of one target, under one root. Paths are relative, with no `..`.
/// Implementations: simulated (with faults), POSIX, io_uring.
public protocol Disk: Sendable {
    /// Opens `path`, creating it (empty) when `create` is true and it does not exist.
    func open(_ path: String, create: Bool) async throws(DiskError) -> DiskFile
    func close(_ file: DiskFile) async
    /// Removes a file (closed or not); durable on return.
    func remove(_ path: String) async throws(DiskError)
    /// The names of the files under the root, sorted.
    func list() async throws(DiskError) -> [String]
    func size(_ file: DiskFile) async throws(DiskError) -> UInt64
    /// Total and free space of the device (shared by everything on it).
    func space() async throws(DiskError) -> DiskSpace
    /// Runs a batch. Results come back in order, one per operation; operations on
    /// the same file apply in order.
    func submit(_ ops: [DiskOp]) async -> [Result<DiskCompletion, DiskError>]
    /// Where the disk's root is, for messages an operator acts on (an absolute
    /// directory for real disks; empty when there is nothing to name).
    var location: String { get }
}

extension Disk {
    public var location: String { "" }

    /// `path` (relative to the root) as an operator finds it: under `location`.
    public func locate(_ path: String) -> String {
        location.isEmpty ? path : (location.hasSuffix("/") ? location + path : location + "/" + path)
    }

    public func read(_ file: DiskFile, offset: UInt64, length: Int) async throws(DiskError) -> [UInt8] {
        let r = await submit([.read(file, offset: offset, length: length)])
        switch r[0] {
        case .success(.read(let bytes)): return bytes
        case .success(.done): return []
        case .failure(let e): throw e
        }
    }

    public func write(_ file: DiskFile, offset: UInt64, _ bytes: [UInt8]) async throws(DiskError) {
        try await single(.write(file, offset: offset, bytes: bytes))
    }

    public func fsync(_ file: DiskFile) async throws(DiskError) { try await single(.fsync(file)) }

    public func fallocate(_ file: DiskFile, offset: UInt64, length: UInt64) async throws(DiskError) {
        try await single(.fallocate(file, offset: offset, length: length))
    }

    public func truncate(_ file: DiskFile, length: UInt64) async throws(DiskError) {
        try await single(.truncate(file, length: length))
    }

    private func single(_ op: DiskOp) async throws(DiskError) {
        if case .failure(let e) = await submit([op])[0] { throw e }
    }
}

/// Path rules every Disk implementation applies the same way.
public enum DiskPath {
    public static func validate(_ path: String) throws(DiskError) {
        if path.isEmpty { throw .invalidPath(path: path, reason: "empty") }
        if path.hasPrefix("/") { throw .invalidPath(path: path, reason: "absolute; paths are relative to the target root") }
        if path.utf8.count > 255 { throw .invalidPath(path: path, reason: "longer than 255 bytes") }
        for part in path.split(separator: "/", omittingEmptySubsequences: false) {
            if part.isEmpty || part == "." || part == ".." {
                throw .invalidPath(path: path, reason: "components may not be empty, '.' or '..'")
            }
        }
        if path.utf8.contains(0) { throw .invalidPath(path: path, reason: "contains a NUL byte") }
    }
}
