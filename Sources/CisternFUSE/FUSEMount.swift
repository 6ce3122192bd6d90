import CFuse
import Cistern
import CisternCore
import Foundation
import Glibc
import Synchronization

/// Why a mount could not start.
public struct FUSEMountError: Error, CustomStringConvertible {
    public let description: String
}

/// A mounted file system: the FUSE session on `/dev/fuse`, serving `FUSEFileSystem`
/// on its own threads until the mount point is unmounted (`cistern umount`,
/// `fusermount3 -u`) or the process gets SIGINT/SIGTERM/SIGHUP.
public final class FUSEMount: @unchecked Sendable {
    let fs: FUSEFileSystem
    let mountpoint: String
    private let session: OpaquePointer
    private let userdata: Unmanaged<FUSEFileSystem>
    private let running = Atomic<Bool>(true)

    /// Whether the kernel offers FUSE here (`/dev/fuse` can be opened).
    public static func available() -> String? {
        let fd = Glibc.open("/dev/fuse", O_RDWR)
        if fd < 0 { return "cannot open /dev/fuse (\(String(cString: strerror(errno)))): load the fuse module (modprobe fuse) or run the container with --device /dev/fuse and CAP_SYS_ADMIN" }
        Glibc.close(fd)
        return nil
    }

    /// Mounts `fs` at `mountpoint` (an existing empty directory).
    public init(_ fs: FUSEFileSystem, at mountpoint: String, fsName: String = "cistern") throws {
        if let why = Self.available() { throw FUSEMountError(description: why) }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: mountpoint, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw FUSEMountError(description: "mount point \(mountpoint) is not a directory: create it first (mkdir -p \(mountpoint))")
        }
        self.fs = fs
        self.mountpoint = mountpoint
        var opts = ["fsname=\(fsName)", "subtype=cistern", "default_permissions"]
        if fs.options.allowOther { opts.append("allow_other") }
        if fs.options.readOnly { opts.append("ro") }
        let args = ["cistern", "-o", opts.joined(separator: ",")]
        var ops = Self.operations()
        let userdata = Unmanaged.passRetained(fs)
        var cArgs = args.map { strdup($0) }
        defer { for a in cArgs { free(a) } }
        let session = cArgs.withUnsafeMutableBufferPointer { argv in
            cistern_fuse_session_new(Int32(argv.count), argv.baseAddress, &ops, userdata.toOpaque())
        }
        guard let session else {
            userdata.release()
            throw FUSEMountError(description: "libfuse refused the session options \(args.dropFirst().joined(separator: " "))")
        }
        guard fuse_session_mount(session, mountpoint) == 0 else {
            fuse_session_destroy(session)
            userdata.release()
            throw FUSEMountError(description: "cannot mount at \(mountpoint): is something mounted there already (cistern umount \(mountpoint)), and may this user mount (root, or fusermount3 installed)?")
        }
        self.session = session
        self.userdata = userdata
    }

    /// Serves requests until the mount ends; then unmounts and frees the session.
    /// Blocks the calling thread (run it on a thread of its own).
    public func serve() {
        fs.watchdog { [self] in running.load(ordering: .relaxed) }
        _ = fuse_set_signal_handlers(session)
        _ = cistern_fuse_loop(session, UInt32(max(1, fs.options.threads)))
        running.store(false, ordering: .relaxed)
        fuse_remove_signal_handlers(session)
        fuse_session_unmount(session)
        fuse_session_destroy(session)
        userdata.release()
    }

    /// `serve()` on a thread of its own (the FUSE loop blocks it); returns when the
    /// mount has ended.
    public func serveOnThread() async {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            let thread = Thread { [self] in
                serve()
                done.resume()
            }
            thread.name = "fuse-loop"
            thread.start()
        }
    }

    /// Asks the serving loop to end (it unmounts on its way out).
    public func stop() {
        fuse_session_exit(session)
    }

    /// The low-level operation table: each entry finds the file system from the
    /// request and hands over (C function pointers cannot capture).
    static func operations() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()
        ops.`init` = { userdata, conn in
            guard let conn, let userdata else { return }
            let fs = Unmanaged<FUSEFileSystem>.fromOpaque(userdata).takeUnretainedValue()
            conn.pointee.max_write = UInt32(fs.options.maxWriteBytes)
            conn.pointee.max_readahead = UInt32(1 << 20)
            conn.pointee.max_background = 64
            conn.pointee.congestion_threshold = 48
            cistern_fuse_want(conn, UInt32(FUSE_CAP_ASYNC_READ | FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO | FUSE_CAP_PARALLEL_DIROPS | FUSE_CAP_ASYNC_DIO))
            // The mount decides the length and times: no kernel write-back cache.
            conn.pointee.want &= ~UInt32(FUSE_CAP_WRITEBACK_CACHE)
        }
        ops.lookup = { req, parent, name in fuseFileSystem(req)?.lookup(req, parent, name) }
        ops.forget = { req, ino, n in
            fuseFileSystem(req)?.forget(ino, n)
            fuse_reply_none(req)
        }
        ops.forget_multi = { req, count, forgets in
            if let f = fuseFileSystem(req), let forgets {
                for k in 0..<count { f.forget(forgets[k].ino, forgets[k].nlookup) }
            }
            fuse_reply_none(req)
        }
        ops.getattr = { req, ino, _ in fuseFileSystem(req)?.getattr(req, ino) }
        ops.setattr = { req, ino, attr, toSet, fi in fuseFileSystem(req)?.setattr(req, ino, attr, toSet, fi) }
        ops.readlink = { req, ino in fuseFileSystem(req)?.readlink(req, ino) }
        ops.mknod = { req, parent, name, mode, _ in fuseFileSystem(req)?.mknod(req, parent, name, mode) }
        ops.mkdir = { req, parent, name, mode in fuseFileSystem(req)?.mkdir(req, parent, name, mode) }
        ops.unlink = { req, parent, name in fuseFileSystem(req)?.remove(req, parent, name, directory: false) }
        ops.rmdir = { req, parent, name in fuseFileSystem(req)?.remove(req, parent, name, directory: true) }
        ops.symlink = { req, target, parent, name in fuseFileSystem(req)?.symlink(req, target, parent, name) }
        ops.rename = { req, parent, name, newParent, newName, flags in fuseFileSystem(req)?.rename(req, parent, name, newParent, newName, flags) }
        ops.link = { req, ino, newParent, newName in fuseFileSystem(req)?.link(req, ino, newParent, newName) }
        ops.open = { req, ino, fi in fuseFileSystem(req)?.open(req, ino, fi) }
        ops.read = { req, ino, size, off, fi in fuseFileSystem(req)?.read(req, ino, size, off, fi) }
        ops.write = { req, ino, buf, size, off, fi in fuseFileSystem(req)?.write(req, ino, buf, size, off, fi) }
        ops.flush = { req, ino, fi in fuseFileSystem(req)?.flush(req, ino, fi) }
        ops.release = { req, ino, fi in fuseFileSystem(req)?.release(req, ino, fi) }
        ops.fsync = { req, ino, _, fi in fuseFileSystem(req)?.fsync(req, ino, fi) }
        ops.opendir = { req, ino, fi in fuseFileSystem(req)?.opendir(req, ino, fi) }
        ops.readdir = { req, ino, size, off, fi in fuseFileSystem(req)?.readdir(req, ino, size, off, fi, plus: false) }
        ops.readdirplus = { req, ino, size, off, fi in fuseFileSystem(req)?.readdir(req, ino, size, off, fi, plus: true) }
        ops.releasedir = { req, _, fi in fuseFileSystem(req)?.releasedir(req, fi) }
        ops.fsyncdir = { req, _, _, _ in fuse_reply_err(req, 0) }
        ops.statfs = { req, _ in fuseFileSystem(req)?.statfs(req) }
        ops.create = { req, parent, name, mode, fi in fuseFileSystem(req)?.create(req, parent, name, mode, fi) }
        return ops
    }
}

/// The file system a request belongs to (the session's user data).
private func fuseFileSystem(_ req: fuse_req_t?) -> FUSEFileSystem? {
    guard let req, let p = fuse_req_userdata(req) else { return nil }
    return Unmanaged<FUSEFileSystem>.fromOpaque(p).takeUnretainedValue()
}
