import CFuse
import Cistern
import CisternCore
import CisternMeta
import Glibc
import Synchronization

/// How a mount behaves (`cistern mount` options).
public struct MountOptions: Sendable {
    /// Refuse every change with EROFS.
    public var readOnly = false
    /// How long the kernel may keep attributes and names without asking again.
    /// Longer is faster; other clients' changes show up that much later.
    public var attributeTimeoutSeconds: Double = 1
    public var entryTimeoutSeconds: Double = 1
    /// How long one operation may take before the program gets EIO (the cluster is
    /// unreachable); the kernel is never left waiting longer.
    public var operationTimeoutSeconds: Double = 60
    /// Threads reading requests from the kernel.
    public var threads = 4
    /// The largest write the kernel sends in one request, and the write-behind
    /// buffer of each open file (a chunk at most).
    public var maxWriteBytes = 1 << 20
    /// Let users other than the one who mounted use the mount.
    public var allowOther = false
    /// The owner of everything created through a mount that does not use the
    /// caller's identity (nil: the calling process's user and group).
    public var owner: Owner?
    public init() {}
}

/// The FUSE low-level file system over a Cistern client: every kernel request is
/// answered from a task (many in flight at once), within `operationTimeoutSeconds`.
/// Production-only: it reads the real clock for its deadlines.
public final class FUSEFileSystem: Sendable {
    let client: CisternClient
    let runtime: any Runtime
    let options: MountOptions
    /// The namespace directory shown as the mount's root, and its inode. The kernel
    /// calls the root 1: that number and the root's are swapped both ways.
    public let rootPath: String
    let rootID: UInt64

    private struct State {
        var inodes: FUSEInodeTable
        var files: [UInt64: OpenFile] = [:]
        var nextHandle: UInt64 = 1
        /// Directory listings taken at opendir, by handle.
        var listings: [UInt64: [Dentry]] = [:]
        /// Per inode: the length this mount knows (its own writes included) and its
        /// open files.
        var lengths: [UInt64: UInt64] = [:]
        var openByInode: [UInt64: Set<UInt64>] = [:]
        /// Requests not yet answered, with their deadlines.
        var pending: [UInt64: (request: Request, deadline: UInt64)] = [:]
        var nextRequest: UInt64 = 0
        var timedOut = 0
    }
    private let state: Mutex<State>

    /// A file system showing the directory `root` (looked up now; it must exist).
    public init(client: CisternClient, runtime: any Runtime, options: MountOptions, root: String = "/") async throws(CisternError) {
        let dir = try await client.stat(root)
        guard dir.type == .directory else { throw .invalidArgument("\(root) is a \(dir.type), not a directory to mount") }
        self.client = client
        self.runtime = runtime
        self.options = options
        self.rootPath = root
        self.rootID = dir.id.rawValue
        self.state = Mutex(State(inodes: FUSEInodeTable(rootPath: root)))
    }

    /// The metadata service's inode for the kernel's `ino`.
    func id(_ ino: fuse_ino_t) -> InodeID {
        let n = UInt64(ino)
        return InodeID(n == FUSEInodeTable.rootInode ? rootID : (n == rootID ? FUSEInodeTable.rootInode : n))
    }

    /// The kernel's number for the metadata service's inode `id`.
    func ino(_ id: InodeID) -> fuse_ino_t {
        let n = id.rawValue
        return fuse_ino_t(n == rootID ? FUSEInodeTable.rootInode : (n == FUSEInodeTable.rootInode ? rootID : n))
    }

    /// Requests answered with EIO because they outlived `operationTimeoutSeconds`.
    public var timedOutRequests: Int { state.withLock { $0.timedOut } }

    // MARK: Requests

    /// A kernel request (answered exactly once, by its task or by the watchdog).
    struct Request: @unchecked Sendable {
        let raw: fuse_req_t
    }

    /// A claimed request: the right to answer it.
    struct Reply: @unchecked Sendable {
        let raw: fuse_req_t
        func error(_ errno: Int32) { fuse_reply_err(raw, errno) }
    }

    /// Runs `body` for `req` in a task; its error becomes the answer's errno.
    func run(_ req: fuse_req_t?, _ body: @escaping @Sendable () async throws -> (@Sendable (Reply) -> Void)) {
        guard let req else { return }
        let deadline = monotonicNanoseconds() + UInt64(options.operationTimeoutSeconds * 1e9)
        let id = state.withLock { s -> UInt64 in
            s.nextRequest += 1
            s.pending[s.nextRequest] = (Request(raw: req), deadline)
            return s.nextRequest
        }
        runtime.spawn("fuse.request") { [self] in
            let answer: @Sendable (Reply) -> Void
            do {
                answer = try await body()
            } catch {
                let code = FUSEErrno.of(error)
                answer = { $0.error(code) }
            }
            if let r = claim(id) { answer(r) }
        }
    }

    private func claim(_ id: UInt64) -> Reply? {
        state.withLock { s in s.pending.removeValue(forKey: id).map { Reply(raw: $0.request.raw) } }
    }

    /// Answers EIO to every request past its deadline; runs until the mount ends.
    func watchdog(isRunning: @escaping @Sendable () -> Bool) {
        runtime.spawn("fuse.watchdog") { [self] in
            while isRunning() {
                try? await runtime.sleep(nanoseconds: 250_000_000)
                let now = monotonicNanoseconds()
                let late = state.withLock { s -> [Reply] in
                    let ids = s.pending.filter { $0.value.deadline <= now }.map(\.key)
                    s.timedOut += ids.count
                    return ids.compactMap { s.pending.removeValue(forKey: $0).map { Reply(raw: $0.request.raw) } }
                }
                for r in late { r.error(EIO) }
            }
        }
    }

    func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    // MARK: Paths and attributes

    func path(_ ino: fuse_ino_t) throws -> String {
        guard let p = state.withLock({ $0.inodes.path(UInt64(ino)) }) else {
            throw FUSEFailure(ESTALE, "inode \(ino) is no longer reachable by a known path")
        }
        return p
    }

    func childPath(_ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) throws -> String {
        guard let name else { throw FUSEFailure(EINVAL, "no name") }
        let n = String(cString: name)
        guard n.utf8.count <= Namespace.nameBytesMax else { throw FUSEFailure(ENAMETOOLONG, "name longer than \(Namespace.nameBytesMax) bytes") }
        return FUSEInodeTable.child(try path(parent), n)
    }

    func writable() throws {
        if options.readOnly { throw FUSEFailure(EROFS, "the mount is read-only") }
    }

    /// The length to show for `inode`: the metadata service's, or longer by what
    /// this mount wrote and has not reported yet.
    func shownLength(_ i: Inode) -> UInt64 {
        let key = UInt64(ino(i.id))
        return state.withLock { s -> UInt64 in
            guard let files = s.openByInode[key], !files.isEmpty else { return i.length }
            var n = max(i.length, s.lengths[key] ?? 0)
            for h in files { n = max(n, s.files[h]?.bufferedEnd ?? 0) }
            s.lengths[key] = n
            return n
        }
    }

    func attributes(_ i: Inode) -> stat {
        var st = stat()
        st.st_ino = ino_t(ino(i.id))
        let type: mode_t
        switch i.type {
        case .directory: type = S_IFDIR
        case .symlink: type = S_IFLNK
        case .file: type = S_IFREG
        }
        st.st_mode = type | mode_t(i.mode & 0o7777)
        st.st_nlink = nlink_t(i.nlink)
        st.st_uid = i.owner.uid
        st.st_gid = i.owner.gid
        let length = i.type == .file ? shownLength(i) : (i.type == .symlink ? i.length : 4096)
        st.st_size = off_t(clamping: length)
        st.st_blksize = blksize_t(min(Int(i.layout?.chunkBytes ?? 4096), 1 << 20))
        st.st_blocks = blkcnt_t(clamping: (length + 511) / 512)
        st.st_atim = Self.time(i.atimeNanoseconds)
        st.st_mtim = Self.time(i.mtimeNanoseconds)
        st.st_ctim = Self.time(i.ctimeNanoseconds)
        return st
    }

    static func time(_ ns: UInt64) -> Glibc.timespec {
        Glibc.timespec(tv_sec: Int(ns / 1_000_000_000), tv_nsec: Int(ns % 1_000_000_000))
    }

    func entry(_ i: Inode, path: String) -> fuse_entry_param {
        state.withLock { $0.inodes.remember(UInt64(ino(i.id)), path: path) }
        var e = fuse_entry_param()
        e.ino = ino(i.id)
        e.generation = 1
        e.attr = attributes(i)
        e.attr_timeout = options.attributeTimeoutSeconds
        e.entry_timeout = options.entryTimeoutSeconds
        return e
    }

    /// The inode the kernel calls `ino`: by its path when this mount knows one (a
    /// tenant may look up paths in its tree, while inode-addressed requests need a
    /// capability, which only files have), else by number.
    func inode(_ ino: fuse_ino_t) async throws -> Inode {
        let want = id(ino)
        if let path = state.withLock({ $0.inodes.path(UInt64(ino)) }), let i = try? await client.stat(path), i.id == want { return i }
        guard let i = try await client.inodes([want]).first ?? nil else { throw FUSEFailure(ENOENT, "inode \(ino) is gone") }
        return i
    }

    /// The inodes of a listing's entries: one batched request, or (for a tenant,
    /// whose directories have no capabilities) one lookup per path.
    func inodes(_ ids: [InodeID], paths: [String]) async throws -> [Inode?] {
        do throws(CisternError) {
            return try await client.inodes(ids)
        } catch where error.isPermissionDenied {
            let client = self.client
            return await runtime.concurrentMap(paths, limit: 16) { p in try? await client.stat(p) }
        }
    }

    func owner(_ req: fuse_req_t?) -> Owner {
        if let o = options.owner { return o }
        guard let req, let ctx = fuse_req_ctx(req) else { return .root }
        return Owner(uid: ctx.pointee.uid, gid: ctx.pointee.gid)
    }

    func umask(_ req: fuse_req_t?) -> UInt32 {
        guard let req, let ctx = fuse_req_ctx(req) else { return 0o022 }
        return UInt32(ctx.pointee.umask)
    }

    static func replyEntry(_ e: fuse_entry_param) -> @Sendable (Reply) -> Void {
        let box = SendableBox(e)
        return { r in
            var e = box.value
            fuse_reply_entry(r.raw, &e)
        }
    }

    // MARK: Operations

    func lookup(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
        let p = Result { try childPath(parent, name) }
        run(req) { [self] in
            let path = try p.get()
            let i = try await client.stat(path)
            return Self.replyEntry(entry(i, path: path))
        }
    }

    func forget(_ ino: fuse_ino_t, _ n: UInt64) {
        state.withLock { $0.inodes.forget(UInt64(ino), n) }
    }

    func getattr(_ req: fuse_req_t?, _ ino: fuse_ino_t) {
        run(req) { [self] in
            let i = try await inode(ino)
            let st = SendableBox(attributes(i))
            let timeout = options.attributeTimeoutSeconds
            return { r in
                var a = st.value
                fuse_reply_attr(r.raw, &a, timeout)
            }
        }
    }

    func setattr(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ attr: UnsafeMutablePointer<stat>?, _ toSet: Int32, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
        guard let attr else { return run(req) { throw FUSEFailure(EINVAL, "no attributes") } }
        let a = attr.pointee
        let p = Result { try path(ino) }
        run(req) { [self] in
            try writable()
            let path = try p.get()
            let now = runtime.wallClockNanoseconds()
            var change = AttributeChange()
            if toSet & FUSE_SET_ATTR_MODE != 0 { change.mode = UInt32(a.st_mode) & 0o7777 }
            if toSet & FUSE_SET_ATTR_UID != 0 { change.uid = a.st_uid }
            if toSet & FUSE_SET_ATTR_GID != 0 { change.gid = a.st_gid }
            if toSet & FUSE_SET_ATTR_ATIME_NOW != 0 { change.atimeNanoseconds = now } else if toSet & FUSE_SET_ATTR_ATIME != 0 { change.atimeNanoseconds = Self.nanoseconds(a.st_atim) }
            if toSet & FUSE_SET_ATTR_MTIME_NOW != 0 { change.mtimeNanoseconds = now } else if toSet & FUSE_SET_ATTR_MTIME != 0 { change.mtimeNanoseconds = Self.nanoseconds(a.st_mtim) }
            var i: Inode
            if toSet & FUSE_SET_ATTR_SIZE != 0 {
                let size = UInt64(max(0, a.st_size))
                // Everything this mount wrote to the file goes first, then the cut.
                try await drainAll(UInt64(ino), truncatingTo: size)
                i = try await client.truncate(path, length: size)
                state.withLock { $0.lengths[UInt64(ino)] = size }
            } else {
                i = try await client.stat(path)
            }
            if change != AttributeChange() { i = try await client.setattr(path, change) }
            let st = SendableBox(attributes(i))
            let timeout = options.attributeTimeoutSeconds
            return { r in
                var s = st.value
                fuse_reply_attr(r.raw, &s, timeout)
            }
        }
    }

    static func nanoseconds(_ t: Glibc.timespec) -> UInt64 {
        UInt64(max(0, t.tv_sec)) * 1_000_000_000 + UInt64(max(0, t.tv_nsec))
    }

    func readlink(_ req: fuse_req_t?, _ ino: fuse_ino_t) {
        run(req) { [self] in
            let i = try await inode(ino)
            guard i.type == .symlink, let target = i.symlinkTarget else { throw FUSEFailure(EINVAL, "not a symlink") }
            return { r in _ = target.withCString { fuse_reply_readlink(r.raw, $0) } }
        }
    }

    func mknod(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ mode: mode_t) {
        let p = Result { try childPath(parent, name) }
        let owner = owner(req)
        run(req) { [self] in
            try writable()
            guard mode & S_IFMT == S_IFREG || mode & S_IFMT == 0 else { throw FUSEFailure(EPERM, "only regular files can be made (no devices, FIFOs or sockets)") }
            let path = try p.get()
            let i = try await client.create(path, mode: UInt32(mode) & 0o7777, exclusive: true, owner: owner)
            return Self.replyEntry(entry(i, path: path))
        }
    }

    func mkdir(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ mode: mode_t) {
        let p = Result { try childPath(parent, name) }
        let owner = owner(req)
        run(req) { [self] in
            try writable()
            let path = try p.get()
            let i = try await client.mkdir(path, mode: UInt32(mode) & 0o7777, owner: owner)
            return Self.replyEntry(entry(i, path: path))
        }
    }

    /// unlink and rmdir: the metadata service refuses a directory for unlink's
    /// path only through the type check here.
    func remove(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?, directory: Bool) {
        let p = Result { try childPath(parent, name) }
        run(req) { [self] in
            try writable()
            let path = try p.get()
            let i = try await client.stat(path)
            if directory && i.type != .directory { throw FUSEFailure(ENOTDIR, "\(path) is not a directory") }
            if !directory && i.type == .directory { throw FUSEFailure(EISDIR, "\(path) is a directory") }
            try await client.remove(path, recursive: false)
            state.withLock { $0.inodes.removed(path: path) }
            return { $0.error(0) }
        }
    }

    func symlink(_ req: fuse_req_t?, _ target: UnsafePointer<CChar>?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
        let p = Result { try childPath(parent, name) }
        let t = target.map { String(cString: $0) } ?? ""
        let owner = owner(req)
        run(req) { [self] in
            try writable()
            let path = try p.get()
            let i = try await client.symlink(path, target: t, owner: owner)
            return Self.replyEntry(entry(i, path: path))
        }
    }

    func rename(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ newParent: fuse_ino_t, _ newName: UnsafePointer<CChar>?, _ flags: UInt32) {
        let from = Result { try childPath(parent, name) }
        let to = Result { try childPath(newParent, newName) }
        run(req) { [self] in
            try writable()
            // RENAME_NOREPLACE and RENAME_EXCHANGE are not offered.
            guard flags == 0 else { throw FUSEFailure(EINVAL, "rename flags are not supported") }
            let (a, b) = (try from.get(), try to.get())
            try await client.rename(a, b)
            state.withLock { $0.inodes.renamed(from: a, to: b) }
            return { $0.error(0) }
        }
    }

    func link(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ newParent: fuse_ino_t, _ newName: UnsafePointer<CChar>?) {
        let existing = Result { try path(ino) }
        let to = Result { try childPath(newParent, newName) }
        run(req) { [self] in
            try writable()
            let path = try to.get()
            let i = try await client.link(try existing.get(), path)
            return Self.replyEntry(entry(i, path: path))
        }
    }

    // MARK: Files

    func open(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
        let flags = fi?.pointee.flags ?? 0
        let p = Result { try path(ino) }
        run(req) { [self] in
            let write = flags & O_ACCMODE != O_RDONLY
            if write || flags & O_TRUNC != 0 { try writable() }
            let path = try p.get()
            // libfuse asks for atomic O_TRUNC: the cut happens here, not in a setattr.
            let truncate = write && flags & O_TRUNC != 0
            if truncate {
                try await drainAll(UInt64(ino), truncatingTo: 0)
                _ = try await client.truncate(path, length: 0)
            }
            let h = try await client.open(path, write: write)
            let fh = register(h, ino: ino, append: flags & O_APPEND != 0)
            if truncate { state.withLock { $0.lengths[UInt64(ino)] = 0 } }
            return Self.replyOpen(fh, entry: nil)
        }
    }

    func create(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ mode: mode_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
        let flags = fi?.pointee.flags ?? 0
        let p = Result { try childPath(parent, name) }
        let owner = owner(req)
        run(req) { [self] in
            try writable()
            let path = try p.get()
            let i = try await client.create(path, mode: UInt32(mode) & 0o7777, exclusive: flags & O_EXCL != 0, owner: owner)
            let h = try await client.open(path, write: true)
            let fh = register(h, ino: self.ino(i.id), append: flags & O_APPEND != 0)
            return Self.replyOpen(fh, entry: entry(i, path: path))
        }
    }

    /// Answers an open (or a create, with its entry) with handle `fh`.
    static func replyOpen(_ fh: UInt64, entry: fuse_entry_param?) -> @Sendable (Reply) -> Void {
        let box = SendableBox(entry)
        return { r in
            var info = fuse_file_info()
            info.fh = fh
            if var e = box.value {
                fuse_reply_create(r.raw, &e, &info)
            } else {
                fuse_reply_open(r.raw, &info)
            }
        }
    }

    func register(_ h: FileHandle, ino: fuse_ino_t, append: Bool) -> UInt64 {
        let file = OpenFile(handle: h, append: append, bufferBytes: options.maxWriteBytes)
        let key = UInt64(ino)
        return state.withLock { s -> UInt64 in
            let fh = s.nextHandle
            s.nextHandle += 1
            s.files[fh] = file
            // The first open of an inode takes the service's length; later ones keep
            // what this mount already knows (its own unreported writes).
            if s.openByInode[key]?.isEmpty ?? true { s.lengths[key] = h.lengthAtOpen }
            s.openByInode[key, default: []].insert(fh)
            return fh
        }
    }

    func file(_ fi: UnsafeMutablePointer<fuse_file_info>?) throws -> OpenFile {
        guard let fh = fi?.pointee.fh, let f = state.withLock({ $0.files[fh] }) else { throw FUSEFailure(EBADF, "unknown file handle") }
        return f
    }

    /// Writes out what every open file of `inode` holds (before a read, a
    /// truncation or a length report), dropping bytes past `truncatingTo`.
    func drainAll(_ inode: UInt64, truncatingTo length: UInt64? = nil) async throws {
        let files = state.withLock { s in (s.openByInode[inode] ?? []).compactMap { s.files[$0] } }
        for f in files {
            await f.lock.lock()
            if let length { f.truncateBuffer(to: length) }
            do throws(CisternError) {
                try await f.drain(client: client, runtime: runtime)
            } catch {
                f.lock.unlock()
                throw error
            }
            f.lock.unlock()
        }
    }

    func read(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ size: Int, _ offset: off_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
        let f = Result { try file(fi) }
        run(req) { [self] in
            let file = try f.get()
            try await drainAll(UInt64(ino))
            let length = state.withLock { $0.lengths[UInt64(ino)] } ?? file.handle.lengthAtOpen
            let data = try await client.read(file.handle, at: UInt64(max(0, offset)), length: size, fileLength: length)
            return { r in _ = data.withUnsafeBytes { fuse_reply_buf(r.raw, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) } }
        }
    }

    func write(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ buf: UnsafePointer<CChar>?, _ size: Int, _ offset: off_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
        let f = Result { try file(fi) }
        let data = buf.map { [UInt8](UnsafeRawBufferPointer(start: $0, count: size)) } ?? []
        run(req) { [self] in
            try writable()
            let file = try f.get()
            await file.lock.lock()
            do {
                // O_APPEND: at the end this mount knows (the kernel's may be stale).
                let at = file.append ? state.withLock { $0.lengths[UInt64(ino)] ?? 0 } : UInt64(max(0, offset))
                try await file.write(at: at, data, client: client, runtime: runtime)
                state.withLock { s in s.lengths[UInt64(ino)] = max(s.lengths[UInt64(ino)] ?? 0, at + UInt64(data.count)) }
            } catch {
                file.lock.unlock()
                throw error
            }
            file.lock.unlock()
            let n = data.count
            return { r in fuse_reply_write(r.raw, n) }
        }
    }

    /// Writes out the file's buffered bytes and reports its length to the metadata
    /// service (flush on every close(2), and fsync).
    func commit(_ fh: UInt64, ino: fuse_ino_t) async throws {
        guard let file = state.withLock({ $0.files[fh] }) else { throw FUSEFailure(EBADF, "unknown file handle") }
        await file.lock.lock()
        do {
            try await file.drain(client: client, runtime: runtime)
            if file.handle.writable && file.takeWrote() {
                let length = state.withLock { $0.lengths[UInt64(ino)] } ?? 0
                _ = try await client.sync(file.handle, length: length)
            }
        } catch {
            file.lock.unlock()
            throw error
        }
        file.lock.unlock()
    }

    func flush(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
        // `fi` lives only during this call: take the handle number now.
        let fh = fi?.pointee.fh ?? 0
        run(req) { [self] in
            try await commit(fh, ino: ino)
            return { $0.error(0) }
        }
    }

    func fsync(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
        flush(req, ino, fi)
    }

    func release(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
        let fh = fi?.pointee.fh ?? 0
        run(req) { [self] in
            guard let file = state.withLock({ $0.files[fh] }) else { return { $0.error(0) } }
            await file.lock.lock()
            var failure: (any Error)?
            do throws(CisternError) {
                try await file.drain(client: client, runtime: runtime)
            } catch {
                failure = error
            }
            let length = state.withLock { $0.lengths[UInt64(ino)] } ?? 0
            let wrote = file.takeWrote()
            // The write session ends either way (a failed write was reported to the
            // program by its flush; the length covers what was written).
            try? await client.close(file.handle, length: file.handle.writable && wrote ? length : nil)
            file.lock.unlock()
            state.withLock { s in
                s.files[fh] = nil
                s.openByInode[UInt64(ino)]?.remove(fh)
                if s.openByInode[UInt64(ino)]?.isEmpty ?? false {
                    s.openByInode[UInt64(ino)] = nil
                    s.lengths[UInt64(ino)] = nil
                }
            }
            if let failure { throw failure }
            return { $0.error(0) }
        }
    }

    // MARK: Directories

    func opendir(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
        let p = Result { try path(ino) }
        run(req) { [self] in
            let entries = try await client.list(try p.get())
            let fh = state.withLock { s -> UInt64 in
                let fh = s.nextHandle
                s.nextHandle += 1
                s.listings[fh] = entries
                return fh
            }
            return Self.replyOpen(fh, entry: nil)
        }
    }

    func releasedir(_ req: fuse_req_t?, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
        let fh = fi?.pointee.fh ?? 0
        state.withLock { _ = $0.listings.removeValue(forKey: fh) }
        if let req { fuse_reply_err(req, 0) }
    }

    /// readdir and readdirplus: entries from offset `offset` of the listing taken at
    /// opendir ("." and ".." first), as many as fit in `size` bytes.
    func readdir(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ size: Int, _ offset: off_t, _ fi: UnsafeMutablePointer<fuse_file_info>?, plus: Bool) {
        let fh = fi?.pointee.fh ?? 0
        let dirPath = Result { try path(ino) }
        let reqBox = SendableBox(req)
        run(req) { [self] in
            guard let listing = state.withLock({ $0.listings[fh] }) else { throw FUSEFailure(EBADF, "unknown directory handle") }
            let dir = try dirPath.get()
            // Offsets: 0 and 1 are "." and ".."; 2 + k is listing[k].
            var names: [(name: String, ino: UInt64, type: InodeType, next: off_t)] = []
            var used = 0
            var k = Int(max(0, offset))
            while k < listing.count + 2 {
                let (name, inode, type): (String, UInt64, InodeType) = k == 0 ? (".", UInt64(ino), .directory) : k == 1 ? ("..", 1, .directory)
                    : (listing[k - 2].name, UInt64(self.ino(listing[k - 2].inode)), listing[k - 2].type)
                let need = name.withCString { n in
                    plus ? fuse_add_direntry_plus(reqBox.value, nil, 0, n, nil, 0) : fuse_add_direntry(reqBox.value, nil, 0, n, nil, 0)
                }
                if used + need > size { break }
                used += need
                names.append((name, inode, type, off_t(k + 1)))
                k += 1
            }
            var inodes: [UInt64: Inode] = [:]
            if plus {
                let entries = names.filter { $0.name != "." && $0.name != ".." }
                if !entries.isEmpty {
                    let got = try await self.inodes(entries.map { id(fuse_ino_t($0.ino)) }, paths: entries.map { FUSEInodeTable.child(dir, $0.name) })
                    for case let i? in got { inodes[UInt64(self.ino(i.id))] = i }
                }
            }
            var buffer = [CChar](repeating: 0, count: max(used, 1))
            var filled = 0
            for n in names {
                var e = fuse_entry_param()
                var st = stat()
                st.st_ino = ino_t(n.ino)
                st.st_mode = n.type == .directory ? S_IFDIR : n.type == .symlink ? S_IFLNK : S_IFREG
                if plus, n.name != ".", n.name != ".." {
                    // A vanished entry gets inode 0: the kernel skips it without a lookup.
                    if let i = inodes[n.ino] { e = entry(i, path: FUSEInodeTable.child(dir, n.name)) }
                } else if plus {
                    e.attr = st
                }
                let added = buffer.withUnsafeMutableBufferPointer { b in
                    n.name.withCString { name in
                        plus ? fuse_add_direntry_plus(reqBox.value, b.baseAddress! + filled, b.count - filled, name, &e, n.next)
                            : fuse_add_direntry(reqBox.value, b.baseAddress! + filled, b.count - filled, name, &st, n.next)
                    }
                }
                filled += added
            }
            let out = Array(buffer.prefix(filled))
            return { r in _ = out.withUnsafeBufferPointer { fuse_reply_buf(r.raw, $0.baseAddress, $0.count) } }
        }
    }

    func statfs(_ req: fuse_req_t?) {
        run(req) { [self] in
            let (inodes, _) = try await client.statfs()
            let capacity = await client.capacity()
            var st = statvfs()
            let block: UInt = 1 << 20
            st.f_bsize = block
            st.f_frsize = block
            st.f_blocks = fsblkcnt_t(capacity.totalBytes / UInt64(block))
            st.f_bfree = fsblkcnt_t(capacity.freeBytes / UInt64(block))
            st.f_bavail = st.f_bfree
            st.f_files = fsfilcnt_t(inodes) + 1_000_000_000
            st.f_ffree = 1_000_000_000
            st.f_favail = st.f_ffree
            st.f_namemax = UInt(Namespace.nameBytesMax)
            let box = SendableBox(st)
            return { r in
                var s = box.value
                fuse_reply_statfs(r.raw, &s)
            }
        }
    }
}

/// Carries a C value (a pointer or a struct with pointers) into a task; the kernel
/// request it belongs to keeps it alive until answered.
struct SendableBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
