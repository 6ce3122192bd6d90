import CisternCore
import CisternRouting
import CisternWire

/// What a new file's layout is built from: the chain table to stripe over (from
/// routing), the chunk size and how many chains one file uses.
public struct LayoutPolicy: Sendable, Equatable {
    public var table: UInt32
    public var tableVersion: UInt32
    public var chains: [ChainID]
    public var chunkBytes: UInt32
    public var stripe: Int
    public init(table: UInt32, tableVersion: UInt32, chains: [ChainID], chunkBytes: UInt32 = 1 << 20, stripe: Int = 4) {
        self.table = table
        self.tableVersion = tableVersion
        self.chains = chains
        self.chunkBytes = chunkBytes
        self.stripe = stripe
    }
}

/// The file-system namespace as operations inside one transaction of the
/// transactional KV. Every operation reads what it decides on, so serializable
/// transactions make concurrent operations (from any number of metadata servers)
/// equivalent to some order of them. Paths are absolute; symlinks are not followed
/// (the client resolves them).
public struct Namespace: Sendable {
    public let tx: any KVTransaction
    /// The runtime's monotonic time: removal and session records (compared with
    /// later monotonic readings).
    public let now: UInt64
    /// The wall clock (`Runtime.wallClockNanoseconds`): inode times.
    public let wall: UInt64
    public init(_ tx: any KVTransaction, now: UInt64, wall: UInt64? = nil) {
        self.tx = tx
        self.now = now
        self.wall = wall ?? now
    }

    public static let nameBytesMax = 255
    public static let pathComponentsMax = 256
    /// Most entries a recursive remove deletes in one transaction.
    public static let recursiveRemoveMax = 10_000

    // MARK: Paths

    public static func components(_ path: String) throws(MetaError) -> [String] {
        guard path.hasPrefix("/") else { throw .invalidPath(path, reason: "paths are absolute (start with /)") }
        let parts = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        guard parts.count <= pathComponentsMax else { throw .invalidPath(path, reason: "more than \(pathComponentsMax) components") }
        for p in parts {
            if p == "." || p == ".." { throw .invalidPath(path, reason: "'.' and '..' are resolved by the client") }
            if p.utf8.count > nameBytesMax { throw .invalidPath(path, reason: "a name is longer than \(nameBytesMax) bytes") }
            if p.utf8.contains(0) { throw .invalidPath(path, reason: "contains a NUL byte") }
        }
        return parts
    }

    // MARK: Records

    public func inode(_ id: InodeID) async throws -> Inode? {
        guard let bytes = try await tx.get(MetaKeys.inode(id)) else { return nil }
        return try Inode(wireBytes: bytes)
    }

    /// Stores `inode` with its change time set to now (every stored change is one).
    func put(_ inode: Inode) async throws {
        var n = inode
        n.ctimeNanoseconds = wall
        try await tx.set(MetaKeys.inode(n.id), n.wireBytes())
    }

    public func lookup(_ dir: InodeID, _ name: String) async throws -> Dentry? {
        guard let bytes = try await tx.get(MetaKeys.dentry(dir, name)) else { return nil }
        return try Dentry(wireBytes: bytes)
    }

    func putEntry(_ dir: InodeID, _ d: Dentry) async throws { try await tx.set(MetaKeys.dentry(dir, d.name), d.wireBytes()) }

    /// The root directory, created on first use.
    public func root() async throws -> Inode {
        if let r = try await inode(.root) { return r }
        let r = Inode(id: .root, type: .directory, nlink: 2, mode: 0o755, mtimeNanoseconds: wall, parent: .root)
        try await put(r)
        return r
    }

    func allocateInode() async throws -> InodeID {
        let next = try await tx.get(MetaKeys.nextInode).flatMap(KeyCoding.bigEndianValue) ?? 2
        try await tx.set(MetaKeys.nextInode, KeyCoding.bigEndian(next + 1))
        return InodeID(next)
    }

    /// The inode at `path` (symlinks are not followed).
    public func resolve(_ path: String) async throws -> Inode {
        var current = try await root()
        var walked = ""
        for part in try Self.components(path) {
            walked += "/" + part
            guard current.type == .directory else { throw MetaError.notADirectory(walked) }
            guard let d = try await lookup(current.id, part), let next = try await inode(d.inode) else { throw MetaError.notFound(walked) }
            current = next
        }
        return current
    }

    /// The directory that holds `path`, and the last name.
    func parent(of path: String) async throws -> (Inode, String) {
        let parts = try Self.components(path)
        guard let name = parts.last else { throw MetaError.invalidPath(path, reason: "the root has no parent") }
        let dirPath = "/" + parts.dropLast().joined(separator: "/")
        let dir = try await resolve(dirPath)
        guard dir.type == .directory else { throw MetaError.notADirectory(dirPath) }
        return (dir, name)
    }

    // MARK: Operations

    public func stat(_ path: String) async throws -> Inode { try await resolve(path) }

    public func batchStat(_ ids: [InodeID]) async throws -> [Inode?] {
        var out: [Inode?] = []
        for id in ids { out.append(try await inode(id)) }
        return out
    }

    /// Creates a file. With `exclusive` false an existing file is returned as is.
    public func create(_ path: String, mode: UInt32 = 0o644, policy: LayoutPolicy, exclusive: Bool = true, owner: Owner = .root) async throws -> Inode {
        let (dir, name) = try await parent(of: path)
        if let existing = try await lookup(dir.id, name) {
            guard !exclusive, existing.type == .file, let inode = try await inode(existing.inode) else { throw MetaError.exists(path) }
            return inode
        }
        let id = try await allocateInode()
        let cursorKey = MetaKeys.chainCursor(dir.id)
        let start = try await tx.get(cursorKey).flatMap(KeyCoding.bigEndianValue) ?? UInt64(StableHash.fnv1a64("dir/\(dir.id.rawValue)") % UInt64(max(policy.chains.count, 1)))
        try await tx.set(cursorKey, KeyCoding.bigEndian(start + UInt64(max(policy.stripe, 1))))
        let seed = ChainAllocator.seed(for: id)
        let chains = ChainAllocator.chains(table: policy.chains, start: Int(start % UInt64(max(policy.chains.count, 1))), stripe: policy.stripe, seed: seed)
        let layout = Layout(chunkBytes: policy.chunkBytes, table: policy.table, tableVersion: policy.tableVersion, chains: chains, seed: seed)
        let file = Inode(id: id, type: .file, mode: mode & 0o7777, mtimeNanoseconds: wall, layout: layout, owner: owner)
        try await put(file)
        try await putEntry(dir.id, Dentry(name: name, inode: id, type: .file))
        return file
    }

    /// Creates a directory; with `parents`, missing ancestors too, and an existing
    /// directory is not an error.
    public func mkdir(_ path: String, mode: UInt32 = 0o755, parents: Bool = false, owner: Owner = .root) async throws -> Inode {
        if parents {
            var current = try await root()
            var walked = ""
            for part in try Self.components(path) {
                walked += "/" + part
                guard current.type == .directory else { throw MetaError.notADirectory(walked) }
                if let d = try await lookup(current.id, part), let next = try await inode(d.inode) {
                    current = next
                    continue
                }
                current = try await makeDirectory(in: current, name: part, mode: mode, owner: owner)
            }
            guard current.type == .directory else { throw MetaError.exists(path) }
            return current
        }
        let (dir, name) = try await parent(of: path)
        if try await lookup(dir.id, name) != nil { throw MetaError.exists(path) }
        return try await makeDirectory(in: dir, name: name, mode: mode, owner: owner)
    }

    func makeDirectory(in dir: Inode, name: String, mode: UInt32, owner: Owner) async throws -> Inode {
        let id = try await allocateInode()
        let d = Inode(id: id, type: .directory, nlink: 2, mode: mode & 0o7777, mtimeNanoseconds: wall, parent: dir.id, owner: owner)
        try await put(d)
        try await putEntry(dir.id, Dentry(name: name, inode: id, type: .directory))
        var parent = dir
        parent.nlink += 1
        try await put(parent)
        return d
    }

    public func symlink(_ path: String, target: String, owner: Owner = .root) async throws -> Inode {
        let (dir, name) = try await parent(of: path)
        if try await lookup(dir.id, name) != nil { throw MetaError.exists(path) }
        guard target.utf8.count <= 4096 else { throw MetaError.tooLarge("symlink target") }
        let id = try await allocateInode()
        let link = Inode(id: id, type: .symlink, mode: 0o777, length: UInt64(target.utf8.count), mtimeNanoseconds: wall, symlinkTarget: target, owner: owner)
        try await put(link)
        try await putEntry(dir.id, Dentry(name: name, inode: id, type: .symlink))
        return link
    }

    /// A hard link `newPath` to the file at `existing`.
    public func link(_ existing: String, _ newPath: String) async throws -> Inode {
        var file = try await resolve(existing)
        guard file.type != .directory else { throw MetaError.isADirectory(existing) }
        let (dir, name) = try await parent(of: newPath)
        if try await lookup(dir.id, name) != nil { throw MetaError.exists(newPath) }
        file.nlink += 1
        try await put(file)
        try await putEntry(dir.id, Dentry(name: name, inode: file.id, type: file.type))
        return file
    }

    /// Removes `path`; a directory only when empty, unless `recursive`. Files whose
    /// last link goes are queued for garbage collection of their chunks.
    @discardableResult
    public func remove(_ path: String, recursive: Bool = false) async throws -> [InodeID] {
        let (dir, name) = try await parent(of: path)
        guard let entry = try await lookup(dir.id, name), let target = try await inode(entry.inode) else { throw MetaError.notFound(path) }
        var removed: [InodeID] = []
        if target.type == .directory {
            let children = try await tx.getRange(.prefix(MetaKeys.dentryPrefix(target.id)), limit: 1, reverse: false)
            if !children.isEmpty {
                guard recursive else { throw MetaError.notEmpty(path) }
                var budget = Self.recursiveRemoveMax
                try await removeTree(target.id, removed: &removed, budget: &budget, path: path)
            }
            var parent = dir
            parent.nlink = max(2, parent.nlink) - 1
            try await put(parent)
        }
        try await tx.clear(MetaKeys.dentry(dir.id, name))
        try await unlink(target, removed: &removed)
        return removed
    }

    func removeTree(_ dirID: InodeID, removed: inout [InodeID], budget: inout Int, path: String) async throws {
        let entries = try await tx.getRange(.prefix(MetaKeys.dentryPrefix(dirID)), limit: KVLimits.rangeLimitMax, reverse: false)
        for pair in entries {
            budget -= 1
            guard budget >= 0 else { throw MetaError.tooLarge("recursive remove of \(path) (over \(Self.recursiveRemoveMax) entries; remove it in parts)") }
            let d = try Dentry(wireBytes: pair.value)
            guard let child = try await inode(d.inode) else { continue }
            if child.type == .directory { try await removeTree(child.id, removed: &removed, budget: &budget, path: path) }
            try await tx.clear(pair.key)
            try await unlink(child, removed: &removed)
        }
    }

    /// Drops one link of `node`; at zero the inode is deleted (a file's chunks are
    /// queued for garbage collection).
    func unlink(_ node: Inode, removed: inout [InodeID]) async throws {
        var n = node
        if n.type == .directory || n.nlink <= 1 {
            try await tx.clear(MetaKeys.inode(n.id))
            if n.type == .file {
                // The garbage entry records the removal time in `mtimeNanoseconds`.
                n.mtimeNanoseconds = now
                try await tx.set(MetaKeys.garbage(n.id), n.wireBytes())
            }
            removed.append(n.id)
        } else {
            n.nlink -= 1
            try await put(n)
        }
    }

    /// Moves `from` to `to` atomically, across directories. An existing file at `to`
    /// is replaced; an existing directory only if empty. A directory is never moved
    /// into its own subtree.
    public func rename(_ from: String, _ to: String) async throws {
        let (srcDir, srcName) = try await parent(of: from)
        guard let entry = try await lookup(srcDir.id, srcName), let moving = try await inode(entry.inode) else { throw MetaError.notFound(from) }
        let (dstDir, dstName) = try await parent(of: to)
        if srcDir.id == dstDir.id && srcName == dstName { return }
        if moving.type == .directory {
            // Walk up from the destination directory: meeting the moving directory
            // means the move would create a cycle.
            var cursor: InodeID? = dstDir.id
            var steps = 0
            while let c = cursor, c != .root, steps < Self.pathComponentsMax {
                if c == moving.id { throw MetaError.cycle(from: from, to: to) }
                cursor = try await inode(c)?.parent
                steps += 1
            }
            if dstDir.id == moving.id { throw MetaError.cycle(from: from, to: to) }
        }
        var removed: [InodeID] = []
        if let existing = try await lookup(dstDir.id, dstName), let old = try await inode(existing.inode) {
            if old.type == .directory {
                guard moving.type == .directory else { throw MetaError.isADirectory(to) }
                let children = try await tx.getRange(.prefix(MetaKeys.dentryPrefix(old.id)), limit: 1, reverse: false)
                guard children.isEmpty else { throw MetaError.notEmpty(to) }
            } else if moving.type == .directory {
                throw MetaError.notADirectory(to)
            }
            try await unlink(old, removed: &removed)
        }
        try await tx.clear(MetaKeys.dentry(srcDir.id, srcName))
        try await putEntry(dstDir.id, Dentry(name: dstName, inode: moving.id, type: moving.type))
        if moving.type == .directory && srcDir.id != dstDir.id {
            var m = moving
            m.parent = dstDir.id
            try await put(m)
            var s = try await inode(srcDir.id) ?? srcDir
            s.nlink = max(2, s.nlink) - 1
            try await put(s)
            var d = try await inode(dstDir.id) ?? dstDir
            d.nlink += 1
            try await put(d)
        }
    }

    /// Entries of the directory at `path`, in name order, after `after`, at most `limit`.
    public func list(_ path: String, after: String? = nil, limit: Int = 1_000) async throws -> [Dentry] {
        let dir = try await resolve(path)
        guard dir.type == .directory else { throw MetaError.notADirectory(path) }
        let prefix = MetaKeys.dentryPrefix(dir.id)
        var range = KVRange.prefix(prefix)
        if let after { range.begin = prefix + Array(after.utf8) + [0] }
        return try await tx.getRange(range, limit: min(limit, KVLimits.rangeLimitMax), reverse: false).map { try Dentry(wireBytes: $0.value) }
    }

    /// Changes attributes (each non-nil one); the change time becomes now.
    public func setattr(_ path: String, _ change: AttributeChange) async throws -> Inode {
        var n = try await resolve(path)
        if let mode = change.mode { n.mode = mode & 0o7777 }
        if let uid = change.uid { n.owner.uid = uid }
        if let gid = change.gid { n.owner.gid = gid }
        if let t = change.atimeNanoseconds { n.atimeNanoseconds = t }
        if let t = change.mtimeNanoseconds { n.mtimeNanoseconds = t }
        n.ctimeNanoseconds = wall
        try await put(n)
        return n
    }

    public func setattr(_ path: String, mode: UInt32) async throws -> Inode {
        try await setattr(path, AttributeChange(mode: mode))
    }

    /// Sets a file's length (the client deletes chunks past it).
    public func truncate(_ path: String, length: UInt64) async throws -> Inode {
        var n = try await resolve(path)
        guard n.type == .file else { throw MetaError.isADirectory(path) }
        n.length = length
        n.mtimeNanoseconds = wall
        n.ctimeNanoseconds = wall
        try await put(n)
        return n
    }

    /// Opens a file; for writing, records the session so its length is reconciled if
    /// the client goes away.
    public func open(_ path: String, write: Bool, session: UInt64) async throws -> Inode {
        let n = try await resolve(path)
        guard n.type == .file else { throw MetaError.isADirectory(path) }
        if write { try await tx.set(MetaKeys.session(n.id, session), KeyCoding.bigEndian(now)) }
        return n
    }

    /// Closes a write session; the file's length becomes at least `length` (the
    /// highest offset the client wrote).
    public func close(_ id: InodeID, session: UInt64, length: UInt64?) async throws -> Inode {
        try await tx.clear(MetaKeys.session(id, session))
        return try await sync(id, length: length)
    }

    /// Reports what a writer did: the length becomes at least `length`, and the
    /// modification time now (a writer reports a length only when it wrote).
    public func sync(_ id: InodeID, length: UInt64?) async throws -> Inode {
        guard var n = try await inode(id) else { throw MetaError.notFound("\(id)") }
        if let length {
            n.length = max(n.length, length)
            n.mtimeNanoseconds = wall
            n.ctimeNanoseconds = wall
            try await put(n)
        }
        return n
    }

    /// Counts of inodes and of files awaiting garbage collection (full scans, a page
    /// of range reads at a time, so counts past one range read's limit are exact).
    public func statfs(pagePairs: Int = KVLimits.rangeLimitMax) async throws -> (inodes: Int, garbage: Int) {
        let inodes = try await tx.count(.prefix(Array("i/".utf8)), pagePairs: pagePairs)
        let garbage = try await tx.count(.prefix(MetaKeys.garbagePrefix), pagePairs: pagePairs)
        return (inodes, garbage)
    }
}
