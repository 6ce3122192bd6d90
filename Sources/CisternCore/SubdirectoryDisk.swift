/// A `Disk` scoped to one folder of another disk: paths are prefixed on the way in and
/// the prefix is stripped from listings. A storage node gives each of its targets one,
/// so targets share the node's disk without seeing each other's files.
public struct SubdirectoryDisk: Disk {
    public let base: any Disk
    public let prefix: String

    /// `folder` must be a valid relative path (see `DiskPath.validate`).
    public init(_ base: any Disk, folder: String) throws(DiskError) {
        try DiskPath.validate(folder)
        self.base = base
        self.prefix = folder + "/"
    }

    public var location: String { base.locate(String(prefix.dropLast())) }

    private func inner(_ path: String) throws(DiskError) -> String {
        try DiskPath.validate(path)
        return prefix + path
    }

    private func outer(_ file: DiskFile) -> DiskFile {
        DiskFile(id: file.id, path: String(file.path.dropFirst(prefix.count)))
    }

    private func innerFile(_ file: DiskFile) -> DiskFile {
        DiskFile(id: file.id, path: prefix + file.path)
    }

    public func open(_ path: String, create: Bool) async throws(DiskError) -> DiskFile {
        outer(try await base.open(try inner(path), create: create))
    }

    public func close(_ file: DiskFile) async { await base.close(innerFile(file)) }

    public func remove(_ path: String) async throws(DiskError) {
        try await base.remove(try inner(path))
    }

    public func list() async throws(DiskError) -> [String] {
        try await base.list().filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }.sorted()
    }

    public func size(_ file: DiskFile) async throws(DiskError) -> UInt64 {
        try await base.size(innerFile(file))
    }

    public func space() async throws(DiskError) -> DiskSpace { try await base.space() }

    public func submit(_ ops: [DiskOp]) async -> [Result<DiskCompletion, DiskError>] {
        let mapped = ops.map { op -> DiskOp in
            switch op {
            case .read(let f, let o, let l): return .read(innerFile(f), offset: o, length: l)
            case .write(let f, let o, let b): return .write(innerFile(f), offset: o, bytes: b)
            case .fsync(let f): return .fsync(innerFile(f))
            case .fallocate(let f, let o, let l): return .fallocate(innerFile(f), offset: o, length: l)
            case .truncate(let f, let l): return .truncate(innerFile(f), length: l)
            }
        }
        let results = await base.submit(mapped)
        return results.map { r in
            r.mapError { e in
                switch e {
                case .badHandle(let f): return .badHandle(outer(f))
                default: return e
                }
            }
        }
    }
}
