/// What the mount knows of the kernel's inodes: the paths each was reached by (the
/// metadata service is addressed by path) and how many lookups the kernel holds
/// (an inode is forgotten when the kernel says so). Inode numbers are the metadata
/// service's own, so the root is 1, FUSE's root too. Pure: the mount keeps it under
/// a lock and tests drive it directly.
public struct FUSEInodeTable: Sendable, Equatable {
    struct Entry: Sendable, Equatable {
        /// The paths this inode was reached by, newest last (a file has several hard
        /// links); at most `pathsMax`.
        var paths: [String]
        var lookups: UInt64
    }

    public static let rootInode: UInt64 = 1
    /// Paths remembered per inode (more hard links than this are looked up again).
    public static let pathsMax = 4

    private(set) var entries: [UInt64: Entry]
    /// The namespace path shown as the mount's root.
    public let rootPath: String

    public init(rootPath: String = "/") {
        self.rootPath = rootPath
        entries = [Self.rootInode: Entry(paths: [rootPath], lookups: 1)]
    }

    public var count: Int { entries.count }

    /// A path that reaches `inode` now (the newest one remembered), or nil.
    public func path(_ inode: UInt64) -> String? { entries[inode]?.paths.last }

    public func lookups(_ inode: UInt64) -> UInt64 { entries[inode]?.lookups ?? 0 }

    /// The path of `name` in the directory at `directory`.
    public static func child(_ directory: String, _ name: String) -> String {
        directory == "/" ? "/" + name : directory + "/" + name
    }

    /// The kernel got `inode` for `path` (a lookup, create, mkdir, link ...): one
    /// more lookup to forget later.
    public mutating func remember(_ inode: UInt64, path: String) {
        var e = entries[inode] ?? Entry(paths: [], lookups: 0)
        e.paths.removeAll { $0 == path }
        e.paths.append(path)
        if e.paths.count > Self.pathsMax { e.paths.removeFirst(e.paths.count - Self.pathsMax) }
        e.lookups += 1
        entries[inode] = e
    }

    /// The kernel dropped `n` lookups of `inode`; at zero it is forgotten (never the root).
    public mutating func forget(_ inode: UInt64, _ n: UInt64) {
        guard inode != Self.rootInode, var e = entries[inode] else { return }
        e.lookups = e.lookups > n ? e.lookups - n : 0
        entries[inode] = e.lookups == 0 ? nil : e
    }

    /// `path` was removed (unlink, rmdir, or replaced by a rename): no inode is
    /// reached by it, or by anything under it, any more.
    public mutating func removed(path: String) {
        let under = path == "/" ? "/" : path + "/"
        for (inode, e) in entries where e.paths.contains(where: { $0 == path || $0.hasPrefix(under) }) {
            entries[inode]?.paths.removeAll { $0 == path || $0.hasPrefix(under) }
        }
    }

    /// `from` was renamed to `to`: what was reached through `from` (and under it) is
    /// now reached through `to`; what was at `to` before is gone.
    public mutating func renamed(from: String, to: String) {
        guard from != to else { return }
        let moving = entries.filter { $0.value.paths.contains { $0 == from || $0.hasPrefix(from + "/") } }
        removed(path: to)
        for (inode, e) in moving {
            entries[inode]?.paths = e.paths.map { p in
                if p == from { return to }
                if p.hasPrefix(from + "/") { return to + p.dropFirst(from.count) }
                return p
            }
        }
    }
}
