import ArgumentParser
import Cistern
import CisternAuth
import CisternConnect
import CisternFUSE
import CisternServer
import Foundation
import Glibc

/// `cistern mount`: the cluster's files as a FUSE file system.
struct Mount: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Mount a cluster's files at MOUNTPOINT (FUSE); returns once mounted (see --foreground).",
        discussion: """
        The mount acts as one tenant: its token comes from --token-file, CISTERN_TOKEN, \
        CISTERN_TOKEN_FILE or admin.token beside the cluster file. A tenant other than \
        the admin mounts its own tree (/tenants/NAME) unless --root says otherwise. \
        Unmount with cistern umount MOUNTPOINT. See docs/operations.md, "The FUSE mount".
        """)

    @Argument(help: "An existing empty directory") var mountpoint: String
    @Option(help: "The data dir of a cluster that cistern up started (default: the last one)") var dataDir: String?
    @Option(help: "A cluster.yaml (or mgmtd=ID@HOST:PORT;meta=ID@HOST:PORT) of any cluster") var config: String?
    @Option(help: "A file holding the tenant token") var tokenFile: String?
    @Option(help: "The directory of the cluster's namespace to show as the mount's root") var root: String?
    @Flag(help: "Refuse every change (EROFS)") var readOnly = false
    @Flag(help: "Let other users use the mount (needs user_allow_other in /etc/fuse.conf unless root)") var allowOther = false
    @Option(help: "Seconds the kernel caches attributes and names") var cacheSeconds: Double = 1
    @Option(help: "Seconds an operation may take before the program gets EIO (the cluster is unreachable)") var timeoutSeconds: Double = 60
    @Option(help: "Threads reading kernel requests") var threads = 4
    @Flag(help: "Stay in the foreground until unmounted (logs to standard error)") var foreground = false
    @Option(help: "Where a background mount logs (default: /tmp/cistern-mount-<pid>.log)") var log: String?

    func validate() throws {
        guard cacheSeconds >= 0, cacheSeconds <= 3600 else { throw ValidationError("--cache-seconds must be within 0...3600") }
        guard timeoutSeconds >= 1, timeoutSeconds <= 86_400 else { throw ValidationError("--timeout-seconds must be within 1...86400") }
        guard (1...64).contains(threads) else { throw ValidationError("--threads must be within 1...64") }
        if dataDir != nil && config != nil { throw ValidationError("pass --data-dir or --config, not both") }
    }

    func run() async throws {
        if let why = FUSEMount.available() { throw fail(why) }
        let mp = MountTable.absolute(mountpoint)
        if !foreground { return try background(mountpoint: mp) }
        // A background mount is its own session: a closing terminal does not end it.
        if ProcessInfo.processInfo.environment["CISTERN_MOUNT_CHILD"] != nil { _ = setsid() }
        let (cluster, token) = try locateCluster()
        var client = ClientOptions()
        client.chunkAttemptsMax = 60
        client.chunkTimeoutNanoseconds = 5_000_000_000
        let session: ClientSession
        do {
            session = try await ClientSession.connect(cluster, name: "mount", options: client, token: token)
        } catch {
            throw fail("cannot reach the cluster: \(error)")
        }
        var options = MountOptions()
        options.readOnly = readOnly
        options.allowOther = allowOther
        options.attributeTimeoutSeconds = cacheSeconds
        options.entryTimeoutSeconds = cacheSeconds
        options.operationTimeoutSeconds = timeoutSeconds
        options.threads = threads
        let mount: FUSEMount
        do {
            let shown = try await Self.shownRoot(root, session)
            let fs = try await FUSEFileSystem(client: session.client, runtime: session.client.runtime, options: options, root: shown)
            mount = try FUSEMount(fs, at: mp)
            FileHandle.standardError.write(Data("cistern mount: \(shown) mounted at \(mp)\(readOnly ? " (read-only)" : "")\n".utf8))
        } catch {
            await session.close()
            throw fail("\(error)")
        }
        await mount.serveOnThread()
        FileHandle.standardError.write(Data("cistern mount: \(mp) unmounted\n".utf8))
        await session.close()
    }

    /// The cluster (from --config, or a local cluster's data dir) and the token.
    func locateCluster() throws -> (ServerConfig.Cluster, String?) {
        do {
            let text = try config ?? LocalCluster.resolve(dataDir).dataDir
            return (try ServerConfig.Cluster.locate(text), try ClientToken.locate(text, tokenFile: tokenFile))
        } catch {
            throw fail("\(error)")
        }
    }

    /// The admin sees the whole namespace; another tenant its own tree.
    static func shownRoot(_ root: String?, _ session: ClientSession) async throws -> String {
        if let root {
            // A tenant's tree exists once it has stored something: make it if not.
            do {
                _ = try await session.client.stat(root)
            } catch .meta(.refused(.notFound, _)) {
                try await session.client.mkdir(root, parents: true)
            }
            return root
        }
        do {
            _ = try await session.client.list("/")
            return "/"
        } catch {
            guard error.isPermissionDenied else { throw error }
            throw CisternError.invalidArgument("this token's tenant may not use / (\(error)): pass --root \(Access.tenantsRoot)/TENANT, its own tree")
        }
    }

    /// Starts this command again in the foreground, detached, and returns when the
    /// mount is there (or says why not).
    func background(mountpoint mp: String) throws {
        let logPath = log ?? "/tmp/cistern-mount-\(getpid()).log"
        guard FileManager.default.createFile(atPath: logPath, contents: nil), let logHandle = FileHandle(forWritingAtPath: logPath) else {
            throw fail("cannot write the mount's log \(logPath): pass --log FILE")
        }
        var args = CommandLine.arguments.dropFirst().filter { $0 != "--foreground" }
        args.append("--foreground")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: selfExecutable())
        p.arguments = Array(args)
        var env = ProcessInfo.processInfo.environment
        env["CISTERN_MOUNT_CHILD"] = "1"
        p.environment = env
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = logHandle
        p.standardError = logHandle
        do {
            try p.run()
        } catch {
            throw fail("cannot start the mount process: \(error)")
        }
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline {
            if MountTable.isMounted(mp) {
                print("mounted \(mp) (process \(p.processIdentifier), log \(logPath)); unmount with: cistern umount \(mp)")
                return
            }
            if !p.isRunning {
                let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
                throw fail("the mount process exited (status \(p.terminationStatus)): \(text.trimmingCharacters(in: .whitespacesAndNewlines).suffix(2000))")
            }
            usleep(50_000)
        }
        p.terminate()
        throw fail("\(mp) was not mounted within 120 s; see \(logPath)")
    }
}

/// `cistern umount`: ends a mount (its process exits once the kernel lets go).
struct Umount: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Unmount a cistern mount.")
    @Argument(help: "The mount point") var mountpoint: String
    @Flag(help: "Detach now even if the mount is busy (it goes when no longer used)") var lazy = false

    func run() throws {
        // Never stat the mount point: on a mount whose cluster is gone that waits.
        let mp = MountTable.absolute(mountpoint)
        guard MountTable.isMounted(mp) else { throw fail("\(mp) is not a cistern mount (see /proc/self/mountinfo)") }
        if geteuid() == 0 {
            if umount2(mp, lazy ? Int32(MNT_DETACH) : 0) != 0 {
                let e = errno
                throw fail("cannot unmount \(mp): \(String(cString: strerror(e)))\(e == EBUSY ? " (files are open on it: close them, or pass --lazy)" : "")")
            }
        } else {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/fusermount3")
            p.arguments = lazy ? ["-u", "-z", mp] : ["-u", mp]
            do {
                try p.run()
            } catch {
                throw fail("cannot run fusermount3 (install the fuse3 package): \(error)")
            }
            p.waitUntilExit()
            guard p.terminationStatus == 0 else { throw fail("fusermount3 -u \(mp) failed (status \(p.terminationStatus))") }
        }
        print("unmounted \(mp)")
    }
}

/// The kernel's mount table.
enum MountTable {
    /// `path` made absolute and without trailing slashes, by text alone.
    static func absolute(_ path: String) -> String {
        var p = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        return p
    }

    /// Whether a cistern FUSE file system is mounted at `path`.
    static func isMounted(_ path: String) -> Bool {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return false }
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count > 4, let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count else { continue }
            let point = fields[4].replacingOccurrences(of: "\\040", with: " ")
            if point == path && fields[dash + 1] == "fuse.cistern" { return true }
        }
        return false
    }
}
