import Cistern
import CisternAuth
import CisternCore
import CisternMaster
import CisternNIO
import Foundation
import Yams

#if canImport(Glibc)
import Glibc
#endif

/// Why a local-cluster command failed; each names the fix.
public enum LocalClusterError: Error, CustomStringConvertible {
    case alreadyRunning(String)
    case notRunning(String)
    case startFailed(String)
    case io(String)

    public var description: String {
        switch self {
        case .alreadyRunning(let d): return "a cluster is already running from \(d); stop it first: cistern down --data-dir \(d)"
        case .notRunning(let d): return "no cluster found in \(d): start one with cistern up --data-dir \(d)"
        case .startFailed(let why): return "the cluster did not start: \(why)"
        case .io(let why): return why
        }
    }
}

/// A real cluster on loopback, one process per node (`cistern up`/`cistern down`):
/// one cluster manager, one metadata server (SQLite), N storage nodes with two
/// targets each in DIR, and a chain table. Its layout under DIR:
/// `cluster.yaml` (how clients find it), `config/NODE.yaml`, `logs/NODE.log`,
/// `pids/NODE.pid`, `data/NODE/` (targets), `kv/` (SQLite files: the manager's,
/// and the metadata servers' in `kv/meta/`, a volume of its own if you like).
public struct LocalCluster: Sendable {
    public let dataDir: String

    public init(dataDir: String) {
        self.dataDir = (dataDir as NSString).standardizingPath.hasPrefix("/") ? (dataDir as NSString).standardizingPath
            : FileManager.default.currentDirectoryPath + "/" + dataDir
    }

    /// Where `cistern up` records the last cluster it started.
    public static var lastClusterFile: String { (NSHomeDirectory() as NSString).appendingPathComponent(".cistern/last-cluster") }

    /// The data dir given, or the last cluster `cistern up` started.
    public static func resolve(_ dataDir: String?) throws -> LocalCluster {
        if let dataDir { return LocalCluster(dataDir: dataDir) }
        guard let last = try? String(contentsOfFile: lastClusterFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines), !last.isEmpty else {
            throw LocalClusterError.notRunning("(no --data-dir and no cluster started by cistern up)")
        }
        return LocalCluster(dataDir: last)
    }

    func path(_ parts: String...) -> String { ([dataDir] + parts).joined(separator: "/") }

    /// Node names with a pid file whose process is alive.
    public func runningNodes() -> [String: Int32] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path("pids"))) ?? []
        var out: [String: Int32] = [:]
        for n in names where n.hasSuffix(".pid") {
            guard let text = try? String(contentsOfFile: path("pids", n), encoding: .utf8), let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) else { continue }
            if kill(pid, 0) == 0 { out[String(n.dropLast(4))] = pid }
        }
        return out
    }

    /// A free TCP port on 127.0.0.1 (bound and released), drawn below the kernel's
    /// ephemeral range when there is room: a port from that range can be taken by
    /// any outgoing connection between now and the server's bind ("Address already
    /// in use"), which made clusters on a busy machine fail to start now and then.
    public static func freePort() throws -> UInt16 {
        let range = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8))?
            .split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).compactMap { Int($0) } ?? []
        let ephemeralLow = range.first ?? 32768
        if ephemeralLow > 12_000 {
            var rng = SystemRandomNumberGenerator()
            for _ in 0..<64 {
                let port = UInt16(Int.random(in: 10_000..<ephemeralLow, using: &rng))
                // A port handed out earlier may not be bound yet (its server is still
                // starting): never hand it out twice.
                if try bindable(port), issuedPorts.claim(port) { return port }
            }
        }
        for _ in 0..<64 {
            let port = try bound(port: 0)
            if issuedPorts.claim(port) { return port }
        }
        return try bound(port: 0)
    }

    /// Ports `freePort` handed out in this process.
    static let issuedPorts = IssuedPorts()

    final class IssuedPorts: @unchecked Sendable {
        private let lock = NSLock()
        private var ports: Set<UInt16> = []
        /// True the first time `port` is claimed.
        func claim(_ port: UInt16) -> Bool { lock.withLock { ports.insert(port).inserted } }
    }

    static func bindable(_ port: UInt16) throws -> Bool {
        do {
            return try bound(port: port) == port
        } catch LocalClusterError.io {
            return false
        }
    }

    /// Binds 127.0.0.1:`port` (0: any), releases it, and returns the port.
    static func bound(port: UInt16) throws -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw LocalClusterError.io("socket: errno \(errno)") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = port.bigEndian
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0 else { throw LocalClusterError.io("bind: errno \(errno)") }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return UInt16(bigEndian: addr.sin_port)
    }

    /// The configurations of every node of a cluster of `storageNodes` storage nodes
    /// and `metaServers` metadata servers (1...9, sharing one SQLite file; `meta`: their
    /// background-work settings).
    func configs(storageNodes: Int, targetsPerNode: Int = 2, metaServers: Int = 1, meta settings: ServerConfig.Meta? = nil) throws -> [ServerConfig] {
        let mgmtd = ServerConfig.Peer(id: 1, address: "127.0.0.1:\(try Self.freePort())")
        let metas = try (0..<max(1, min(metaServers, 9))).map { ServerConfig.Peer(id: UInt32(10 + $0), address: "127.0.0.1:\(try Self.freePort())") }
        let cluster = ServerConfig.Cluster(mgmtd: [mgmtd], meta: metas)
        let storageAuth = ServerConfig.Auth(clusterKeyFile: clusterKeyFile)
        let metaAuth = ServerConfig.Auth(clusterKeyFile: clusterKeyFile, adminTokenFile: adminTokenFile)
        var out = [
            ServerConfig(node: .init(id: 1, name: "mgmtd1", role: .mgmtd, listen: mgmtd.address), cluster: cluster,
                         kv: .init(kind: "sqlite", path: path("kv", "mgmtd.sqlite")), metrics: .init(listen: "127.0.0.1:\(try Self.freePort())"), auth: storageAuth),
        ]
        for (i, m) in metas.enumerated() {
            out.append(ServerConfig(node: .init(id: m.id, name: "meta\(i + 1)", role: .meta, listen: m.address), cluster: cluster,
                                    kv: .init(kind: "sqlite", path: path("kv", "meta", "meta.sqlite")), meta: settings,
                                    metrics: .init(listen: "127.0.0.1:\(try Self.freePort())"), auth: metaAuth))
        }
        for i in 1...storageNodes {
            let id = UInt32(100 + i)
            out.append(ServerConfig(node: .init(id: id, name: "storage\(i)", role: .storage, listen: "127.0.0.1:\(try Self.freePort())"), cluster: cluster,
                                    storage: .init(dataDir: path("data", "storage\(i)"), targets: (1...max(1, min(targetsPerNode, 99))).map { UInt64(id) * 100 + UInt64($0) }),
                                    metrics: .init(listen: "127.0.0.1:\(try Self.freePort())"), auth: storageAuth))
        }
        return out
    }

    /// The master's configuration: HTTP on a free port, the admin token in `admin.token`.
    func masterConfig(cluster: ServerConfig.Cluster) throws -> ServerConfig {
        ServerConfig(node: .init(id: 90, name: "master1", role: .master, listen: "127.0.0.1:\(try Self.freePort())"), cluster: cluster,
                     master: .init(adminTokenFile: adminTokenFile))
    }

    /// Where `cistern up` keeps the admin tenant's token (mode 0600).
    public var adminTokenFile: String { path("admin.token") }

    /// The admin token, made on first use.
    public func adminToken() throws -> String {
        if let t = try? String(contentsOfFile: adminTokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines), !t.isEmpty { return t }
        let token = MasterServer.newToken()
        guard FileManager.default.createFile(atPath: adminTokenFile, contents: Data((token + "\n").utf8), attributes: [.posixPermissions: 0o600]) else {
            throw LocalClusterError.io("cannot write \(adminTokenFile)")
        }
        return token
    }

    /// Where `cistern up` keeps the cluster key that metadata and storage servers
    /// share (mode 0600).
    public var clusterKeyFile: String { path("cluster.key") }

    /// The cluster key, if this data dir has one (the administrator's: it lets
    /// `cistern admin` change routing).
    public func clusterKey() -> CapabilityKey? {
        guard let text = try? String(contentsOfFile: clusterKeyFile, encoding: .utf8) else { return nil }
        return try? CapabilityKey(hex: text)
    }

    /// Makes the cluster key if there is none.
    func ensureClusterKey() throws {
        if FileManager.default.fileExists(atPath: clusterKeyFile) { return }
        guard FileManager.default.createFile(atPath: clusterKeyFile, contents: Data((CapabilityKey.generateHex() + "\n").utf8), attributes: [.posixPermissions: 0o600]) else {
            throw LocalClusterError.io("cannot write \(clusterKeyFile)")
        }
    }

    /// The master's base URL (`http://127.0.0.1:PORT`), if this cluster has one.
    public func masterURL() -> String? {
        guard let text = try? String(contentsOfFile: path("config", "master1.yaml"), encoding: .utf8),
              let c = try? ServerConfig.parse(text) else { return nil }
        return "http://\(c.node.listen)"
    }

    /// Starts the processes (`binary server --config …`) and waits until the cluster
    /// serves: every storage node registered, chains created, files creatable.
    /// `targetsPerNode` (1...99, default 2): each a chunk engine of its own; chains of
    /// the table = storage nodes x targets per node / replicas.
    /// With `master`, a master HTTP service starts once the cluster serves.
    public func up(storageNodes: Int, targetsPerNode: Int = 2, metaServers: Int = 1, meta: ServerConfig.Meta? = nil, master: Bool = false, binary: String,
                   progress: @Sendable (String) -> Void = { _ in }) async throws {
        guard storageNodes >= 1 else { throw LocalClusterError.startFailed("--storage-nodes must be at least 1") }
        if !runningNodes().isEmpty { throw LocalClusterError.alreadyRunning(dataDir) }
        let fm = FileManager.default
        for d in ["config", "logs", "pids", "data", "kv"] { try fm.createDirectory(atPath: path(d), withIntermediateDirectories: true) }
        _ = try adminToken()
        try ensureClusterKey()
        let configs = try configs(storageNodes: storageNodes, targetsPerNode: targetsPerNode, metaServers: metaServers, meta: meta)
        let encoder = YAMLEncoder()
        for c in configs { try encoder.encode(c).write(toFile: path("config", "\(c.node.name).yaml"), atomically: true, encoding: .utf8) }
        try encoder.encode(configs[0].cluster).write(toFile: path("cluster.yaml"), atomically: true, encoding: .utf8)
        for c in configs { try start(c.node.name, role: c.node.role.rawValue, binary: binary) }
        do {
            for c in configs { try await waitForPID(c.node.name) }
        } catch {
            try? await down()
            throw error
        }
        progress("started \(configs.count) processes (logs in \(path("logs")))")
        do {
            let session = try await ClientSession.connect(self)
            try await session.waitUntilServing(storageNodes: storageNodes, replicas: min(3, storageNodes), progress: progress)
            await session.close()
            if master {
                let m = try masterConfig(cluster: configs[0].cluster)
                try encoder.encode(m).write(toFile: path("config", "\(m.node.name).yaml"), atomically: true, encoding: .utf8)
                try start(m.node.name, role: m.node.role.rawValue, binary: binary)
                try await waitForPID(m.node.name, timeoutSeconds: 60)
                progress("master HTTP service on http://\(m.node.listen) (admin token in \(adminTokenFile))")
            }
        } catch {
            try? await down()
            throw LocalClusterError.startFailed("\(error); see the logs in \(path("logs"))")
        }
        try fm.createDirectory(atPath: (Self.lastClusterFile as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try dataDir.write(toFile: Self.lastClusterFile, atomically: true, encoding: .utf8)
    }

    /// Starts (or restarts) one node's process from its configuration.
    public func start(_ name: String, role: String, binary: String) throws {
        let p = Process()
        let setsid = "/usr/bin/setsid"
        if FileManager.default.isExecutableFile(atPath: setsid) {
            p.executableURL = URL(fileURLWithPath: setsid)
            p.arguments = [binary, "server", "--role", role, "--config", path("config", "\(name).yaml"), "--pid-file", path("pids", "\(name).pid")]
        } else {
            p.executableURL = URL(fileURLWithPath: binary)
            p.arguments = ["server", "--role", role, "--config", path("config", "\(name).yaml"), "--pid-file", path("pids", "\(name).pid")]
        }
        _ = FileManager.default.createFile(atPath: path("logs", "\(name).log"), contents: nil)
        guard let log = FileHandle(forWritingAtPath: path("logs", "\(name).log")) else { throw LocalClusterError.io("cannot open \(path("logs", "\(name).log"))") }
        log.seekToEndOfFile()
        p.standardOutput = log
        p.standardError = log
        p.standardInput = FileHandle.nullDevice
        try? FileManager.default.removeItem(atPath: path("pids", "\(name).pid"))
        try p.run()
    }

    /// Waits until `name`'s process has written its pid file (it serves then).
    public func waitForPID(_ name: String, timeoutSeconds: Double = 30) async throws {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while runningNodes()[name] == nil {
            guard Date() < deadline else { throw LocalClusterError.startFailed("\(name) did not start within \(Int(timeoutSeconds)) s; see \(path("logs", "\(name).log"))") }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
    }

    /// Stops every process: SIGTERM, then SIGKILL after `graceSeconds`.
    public func down(graceSeconds: Double = 10) async throws {
        let running = runningNodes()
        for (_, pid) in running { kill(pid, SIGTERM) }
        let deadline = Date().addingTimeInterval(graceSeconds)
        while Date() < deadline, !runningNodes().isEmpty { try? await Task.sleep(nanoseconds: 100_000_000) }
        for (_, pid) in runningNodes() { kill(pid, SIGKILL) }
        for n in (try? FileManager.default.contentsOfDirectory(atPath: path("pids"))) ?? [] { try? FileManager.default.removeItem(atPath: path("pids", n)) }
    }

    /// Kills one node's process with SIGKILL (for failure tests).
    public func kill9(_ name: String) {
        if let pid = runningNodes()[name] { kill(pid, SIGKILL) }
    }

    public func clusterConfig() throws -> ServerConfig.Cluster {
        guard let text = try? String(contentsOfFile: path("cluster.yaml"), encoding: .utf8) else { throw LocalClusterError.notRunning(dataDir) }
        return try YAMLDecoder().decode(ServerConfig.Cluster.self, from: text)
    }
}

extension ClientSession {
    /// Connects to the cluster described by `cluster.yaml` in the data dir.
    /// Requests carry the token `ClientToken.locate` finds (`CISTERN_TOKEN`, or the
    /// data dir's admin token).
    public static func connect(_ cluster: LocalCluster, name: String = "cli") async throws -> ClientSession {
        try await connect(cluster.clusterConfig(), name: name, token: ClientToken.locate(cluster.dataDir), clusterKey: cluster.clusterKey())
    }
}
