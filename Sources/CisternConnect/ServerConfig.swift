import CisternCore
import Foundation
import Yams

/// A server process's configuration (`cistern server --config FILE`), read strictly:
/// an unknown key, a missing field, a bad address or a role-specific section that is
/// missing is an error naming the place and the fix.
///
/// ```yaml
/// node: { id: 1, name: m1, role: mgmtd, listen: "127.0.0.1:9001" }
/// cluster:
///   mgmtd: [{ id: 1, address: "127.0.0.1:9001" }]
///   meta:  [{ id: 10, address: "127.0.0.1:9010" }]
/// kv: { kind: sqlite, path: /var/lib/cistern/mgmtd.sqlite }      # mgmtd and meta
/// storage: { data_dir: /var/lib/cistern/s1, targets: [101, 102] } # storage
/// meta: { session_timeout_seconds: 60, gc_delay_seconds: 30 }     # meta, optional
/// metrics: { listen: "127.0.0.1:9101" }                           # optional
/// log_level: info                                                 # optional
/// ```
public struct ServerConfig: Codable, Sendable, Equatable {
    public enum Role: String, Codable, Sendable, CaseIterable { case mgmtd, meta, storage, master }

    public struct Node: Codable, Sendable, Equatable {
        public var id: UInt32
        public var name: String
        public var role: Role
        /// "host:port" to listen on.
        public var listen: String
        /// "host:port" addresses others use to reach this node (default: `listen`).
        public var advertise: [String]?
        enum CodingKeys: String, CodingKey, CaseIterable { case id, name, role, listen, advertise }
        public init(from decoder: any Decoder) throws {
            try rejectUnknownKeys(decoder, CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            id = try c.decode(UInt32.self, forKey: .id)
            name = try c.decode(String.self, forKey: .name)
            let text = try c.decode(String.self, forKey: .role)
            guard let r = Role(rawValue: text) else {
                throw DecodingError.dataCorruptedError(forKey: .role, in: c, debugDescription: "unknown role '\(text)'; expected one of: mgmtd, meta, storage, master")
            }
            role = r
            listen = try c.decode(String.self, forKey: .listen)
            advertise = try c.decodeIfPresent([String].self, forKey: .advertise)
        }
        public init(id: UInt32, name: String, role: Role, listen: String, advertise: [String]? = nil) {
            self.id = id
            self.name = name
            self.role = role
            self.listen = listen
            self.advertise = advertise
        }
    }

    public struct Peer: Codable, Sendable, Equatable {
        public var id: UInt32
        public var address: String
        enum CodingKeys: String, CodingKey, CaseIterable { case id, address }
        public init(from decoder: any Decoder) throws {
            try rejectUnknownKeys(decoder, CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            id = try c.decode(UInt32.self, forKey: .id)
            address = try c.decode(String.self, forKey: .address)
        }
        public init(id: UInt32, address: String) {
            self.id = id
            self.address = address
        }
    }

    public struct Cluster: Codable, Sendable, Equatable {
        public var mgmtd: [Peer]
        public var meta: [Peer]?
        enum CodingKeys: String, CodingKey, CaseIterable { case mgmtd, meta }
        public init(from decoder: any Decoder) throws {
            try rejectUnknownKeys(decoder, CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            mgmtd = try c.decode([Peer].self, forKey: .mgmtd)
            meta = try c.decodeIfPresent([Peer].self, forKey: .meta)
        }
        public init(mgmtd: [Peer], meta: [Peer]?) {
            self.mgmtd = mgmtd
            self.meta = meta
        }
    }

    public struct KV: Codable, Sendable, Equatable {
        /// `sqlite` (a file, the default) or `postgres` (a libpq connection string).
        public var kind: String
        public var path: String?
        public var conninfo: String?
        /// A file holding the libpq connection string (a mounted Secret: the password
        /// stays out of the config); read at start, instead of `conninfo`.
        public var conninfoFile: String?
        enum CodingKeys: String, CodingKey, CaseIterable {
            case kind, path, conninfo
            case conninfoFile = "conninfo_file"
        }
        public init(from decoder: any Decoder) throws {
            try rejectUnknownKeys(decoder, CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            kind = try c.decodeIfPresent(String.self, forKey: .kind) ?? "sqlite"
            path = try c.decodeIfPresent(String.self, forKey: .path)
            conninfo = try c.decodeIfPresent(String.self, forKey: .conninfo)
            conninfoFile = try c.decodeIfPresent(String.self, forKey: .conninfoFile)
        }
        public init(kind: String, path: String? = nil, conninfo: String? = nil, conninfoFile: String? = nil) {
            self.conninfoFile = conninfoFile
            self.kind = kind
            self.path = path
            self.conninfo = conninfo
        }
    }

    public struct Storage: Codable, Sendable, Equatable {
        public var dataDir: String
        public var targets: [UInt64]
        /// `auto` (io_uring when the kernel allows, else POSIX), `io_uring` or `posix`.
        public var disk: String?
        /// The node's memory tier in MiB (recently written and read chunks served from
        /// memory; `cache` writes written behind): absent for the default (1024), 0
        /// for none.
        public var memoryCacheMiB: Int?
        /// Most memory tier a node may ask for (MiB): a typo guard, not a policy.
        public static let memoryCacheMiBMax = 1 << 22
        enum CodingKeys: String, CodingKey, CaseIterable {
            case targets, disk
            case dataDir = "data_dir"
            case memoryCacheMiB = "memory_cache_mib"
        }
        public init(from decoder: any Decoder) throws {
            try rejectUnknownKeys(decoder, CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            dataDir = try c.decode(String.self, forKey: .dataDir)
            targets = try c.decode([UInt64].self, forKey: .targets)
            disk = try c.decodeIfPresent(String.self, forKey: .disk)
            memoryCacheMiB = try c.decodeIfPresent(Int.self, forKey: .memoryCacheMiB)
        }
        public init(dataDir: String, targets: [UInt64], disk: String? = nil, memoryCacheMiB: Int? = nil) {
            self.dataDir = dataDir
            self.targets = targets
            self.disk = disk
            self.memoryCacheMiB = memoryCacheMiB
        }
    }

    /// The metadata servers' background work; every field is optional.
    public struct Meta: Codable, Sendable, Equatable {
        /// How often the background work runs (default 5).
        public var maintenanceIntervalSeconds: Double?
        /// How long a removed file's chunks are kept before deletion (default 30).
        public var gcDelaySeconds: Double?
        /// How long a write session outlives its client's last keep-alive before the
        /// file's length is set from storage (default 60).
        public var sessionTimeoutSeconds: Double?
        /// How long retried requests are recognised as retries (default 3600).
        public var idempotencyRetentionSeconds: Double?
        enum CodingKeys: String, CodingKey, CaseIterable {
            case maintenanceIntervalSeconds = "maintenance_interval_seconds"
            case gcDelaySeconds = "gc_delay_seconds"
            case sessionTimeoutSeconds = "session_timeout_seconds"
            case idempotencyRetentionSeconds = "idempotency_retention_seconds"
        }
        public init(from decoder: any Decoder) throws {
            try rejectUnknownKeys(decoder, CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            maintenanceIntervalSeconds = try c.decodeIfPresent(Double.self, forKey: .maintenanceIntervalSeconds)
            gcDelaySeconds = try c.decodeIfPresent(Double.self, forKey: .gcDelaySeconds)
            sessionTimeoutSeconds = try c.decodeIfPresent(Double.self, forKey: .sessionTimeoutSeconds)
            idempotencyRetentionSeconds = try c.decodeIfPresent(Double.self, forKey: .idempotencyRetentionSeconds)
        }
        public init(maintenanceIntervalSeconds: Double? = nil, gcDelaySeconds: Double? = nil, sessionTimeoutSeconds: Double? = nil, idempotencyRetentionSeconds: Double? = nil) {
            self.maintenanceIntervalSeconds = maintenanceIntervalSeconds
            self.gcDelaySeconds = gcDelaySeconds
            self.sessionTimeoutSeconds = sessionTimeoutSeconds
            self.idempotencyRetentionSeconds = idempotencyRetentionSeconds
        }

        /// (YAML name, value) of every field that is set.
        var fields: [(String, Double)] {
            [("maintenance_interval_seconds", maintenanceIntervalSeconds), ("gc_delay_seconds", gcDelaySeconds),
             ("session_timeout_seconds", sessionTimeoutSeconds), ("idempotency_retention_seconds", idempotencyRetentionSeconds)]
                .compactMap { name, v in v.map { (name, $0) } }
        }
    }

    /// The master HTTP service (`role: master`; `node.listen` is its HTTP address).
    public struct Master: Codable, Sendable, Equatable {
        /// A file holding the admin tenant's token (one line).
        public var adminTokenFile: String
        /// Largest binary body in bytes (a batch of pages; default 64 MiB).
        public var bodyBytesMax: Int?
        /// Idle connections are closed after this long (default 30).
        public var idleTimeoutSeconds: Int?
        /// Connections served at once (default 512).
        public var connectionsMax: Int?
        enum CodingKeys: String, CodingKey, CaseIterable {
            case adminTokenFile = "admin_token_file"
            case bodyBytesMax = "body_bytes_max"
            case idleTimeoutSeconds = "idle_timeout_seconds"
            case connectionsMax = "connections_max"
        }
        public init(from decoder: any Decoder) throws {
            try rejectUnknownKeys(decoder, CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            adminTokenFile = try c.decode(String.self, forKey: .adminTokenFile)
            bodyBytesMax = try c.decodeIfPresent(Int.self, forKey: .bodyBytesMax)
            idleTimeoutSeconds = try c.decodeIfPresent(Int.self, forKey: .idleTimeoutSeconds)
            connectionsMax = try c.decodeIfPresent(Int.self, forKey: .connectionsMax)
        }
        public init(adminTokenFile: String, bodyBytesMax: Int? = nil, idleTimeoutSeconds: Int? = nil, connectionsMax: Int? = nil) {
            self.adminTokenFile = adminTokenFile
            self.bodyBytesMax = bodyBytesMax
            self.idleTimeoutSeconds = idleTimeoutSeconds
            self.connectionsMax = connectionsMax
        }
    }

    /// Tenants and capabilities (`auth:`; the meta and storage roles). Without it a
    /// node serves every caller (a cluster without authentication, said in its log).
    public struct Auth: Codable, Sendable, Equatable {
        /// The cluster key (64 hex digits, `cistern keygen`), the same file content on
        /// every metadata and storage server: metadata servers mint capabilities with
        /// it, storage servers check them.
        public var clusterKeyFile: String
        /// Metadata servers: a file holding the admin tenant's token, set up at start.
        public var adminTokenFile: String?
        /// Metadata servers: how long a token's tenant is remembered (default 1; a
        /// revoked token stops working within this time).
        public var tokenCacheSeconds: Double?
        enum CodingKeys: String, CodingKey, CaseIterable {
            case clusterKeyFile = "cluster_key_file"
            case adminTokenFile = "admin_token_file"
            case tokenCacheSeconds = "token_cache_seconds"
        }
        public init(from decoder: any Decoder) throws {
            try rejectUnknownKeys(decoder, CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            clusterKeyFile = try c.decode(String.self, forKey: .clusterKeyFile)
            adminTokenFile = try c.decodeIfPresent(String.self, forKey: .adminTokenFile)
            tokenCacheSeconds = try c.decodeIfPresent(Double.self, forKey: .tokenCacheSeconds)
        }
        public init(clusterKeyFile: String, adminTokenFile: String? = nil, tokenCacheSeconds: Double? = nil) {
            self.clusterKeyFile = clusterKeyFile
            self.adminTokenFile = adminTokenFile
            self.tokenCacheSeconds = tokenCacheSeconds
        }
    }

    public struct Metrics: Codable, Sendable, Equatable {
        public var listen: String
        enum CodingKeys: String, CodingKey, CaseIterable { case listen }
        public init(from decoder: any Decoder) throws {
            try rejectUnknownKeys(decoder, CodingKeys.self)
            listen = try decoder.container(keyedBy: CodingKeys.self).decode(String.self, forKey: .listen)
        }
        public init(listen: String) { self.listen = listen }
    }

    public var node: Node
    public var cluster: Cluster
    public var kv: KV?
    public var storage: Storage?
    public var meta: Meta?
    public var metrics: Metrics?
    public var master: Master?
    public var auth: Auth?
    public var logLevel: String?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case node, cluster, kv, storage, meta, metrics, master, auth
        case logLevel = "log_level"
    }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        node = try c.decode(Node.self, forKey: .node)
        cluster = try c.decode(Cluster.self, forKey: .cluster)
        kv = try c.decodeIfPresent(KV.self, forKey: .kv)
        storage = try c.decodeIfPresent(Storage.self, forKey: .storage)
        meta = try c.decodeIfPresent(Meta.self, forKey: .meta)
        metrics = try c.decodeIfPresent(Metrics.self, forKey: .metrics)
        master = try c.decodeIfPresent(Master.self, forKey: .master)
        auth = try c.decodeIfPresent(Auth.self, forKey: .auth)
        logLevel = try c.decodeIfPresent(String.self, forKey: .logLevel)
    }

    public init(node: Node, cluster: Cluster, kv: KV? = nil, storage: Storage? = nil, meta: Meta? = nil, metrics: Metrics? = nil, master: Master? = nil, auth: Auth? = nil, logLevel: String? = nil) {
        self.master = master
        self.auth = auth
        self.node = node
        self.cluster = cluster
        self.kv = kv
        self.storage = storage
        self.meta = meta
        self.metrics = metrics
        self.logLevel = logLevel
    }

    /// Parses and validates YAML text; `path` names the source in errors.
    public static func parse(_ text: String, path: String = "<config>") throws(ConfigError) -> ServerConfig {
        let config: ServerConfig
        do {
            config = try YAMLDecoder().decode(ServerConfig.self, from: text)
        } catch let error as DecodingError {
            throw .malformed(path: path, detail: describeDecodingError(error))
        } catch {
            throw .malformed(path: path, detail: "not valid YAML: \(error)")
        }
        let problems = config.problems()
        if !problems.isEmpty { throw .invalid(path: path, problems: problems) }
        return config
    }

    public static func load(path: String) throws(ConfigError) -> ServerConfig {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw .unreadable(path: path, reason: (error as NSError).localizedDescription)
        }
        return try parse(text, path: path)
    }

    /// What the YAML schema cannot see.
    public func problems() -> [String] {
        var out: [String] = []
        if node.id == 0 { out.append("node.id: 0 is reserved; use a positive number unique in the cluster") }
        if node.name.isEmpty { out.append("node.name: must not be empty") }
        if (try? Self.address(node.listen)) == nil { out.append("node.listen: '\(node.listen)' is not host:port (for example 127.0.0.1:9001)") }
        for (i, a) in (node.advertise ?? []).enumerated() where (try? Self.address(a)) == nil {
            out.append("node.advertise[\(i)]: '\(a)' is not host:port")
        }
        // A wildcard listen address says where to accept, not where others can reach
        // this node: advertised as is, every caller would dial itself.
        if let host = (try? Self.address(node.listen))?.host, ["0.0.0.0", "::", "[::]"].contains(host), (node.advertise ?? []).isEmpty,
           node.role != .master {
            out.append("node.advertise: node.listen '\(node.listen)' accepts on every address, so list how others reach this node (for example advertise: [\"\(node.name).example.com:\((try? Self.address(node.listen))?.port ?? 9000)\"])")
        }
        if cluster.mgmtd.isEmpty { out.append("cluster.mgmtd: list at least one cluster manager (id and address)") }
        for (i, p) in cluster.mgmtd.enumerated() where (try? Self.address(p.address)) == nil {
            out.append("cluster.mgmtd[\(i)].address: '\(p.address)' is not host:port")
        }
        for (i, p) in (cluster.meta ?? []).enumerated() where (try? Self.address(p.address)) == nil {
            out.append("cluster.meta[\(i)].address: '\(p.address)' is not host:port")
        }
        switch node.role {
        case .mgmtd, .meta:
            if let kv {
                switch kv.kind {
                case "sqlite": if kv.path?.isEmpty ?? true { out.append("kv.path: the sqlite KV needs a file path") }
                case "postgres":
                    if (kv.conninfo?.isEmpty ?? true) && (kv.conninfoFile?.isEmpty ?? true) {
                        out.append("kv.conninfo: the postgres KV needs a libpq connection string (conninfo, or conninfo_file naming a file holding it)")
                    } else if kv.conninfo != nil && kv.conninfoFile != nil {
                        out.append("kv.conninfo_file: give conninfo or conninfo_file, not both")
                    }
                default: out.append("kv.kind: unknown KV '\(kv.kind)'; expected sqlite or postgres")
                }
            } else {
                out.append("kv: the \(node.role.rawValue) role needs a kv section (kind: sqlite, path: FILE)")
            }
            if node.role == .mgmtd && !cluster.mgmtd.contains(where: { $0.id == node.id }) {
                out.append("cluster.mgmtd: this mgmtd (node.id \(node.id)) is not in the list of cluster managers")
            }
            if storage != nil { out.append("storage: only the storage role has a storage section") }
        case .storage:
            if let storage {
                if storage.dataDir.isEmpty { out.append("storage.data_dir: must not be empty") }
                if storage.targets.isEmpty { out.append("storage.targets: list at least one target id") }
                if Set(storage.targets).count != storage.targets.count { out.append("storage.targets: target ids must be unique") }
                if storage.targets.contains(0) { out.append("storage.targets: 0 is reserved") }
                if let d = storage.disk, !["auto", "io_uring", "posix"].contains(d) { out.append("storage.disk: unknown disk '\(d)'; expected auto, io_uring or posix") }
                if let m = storage.memoryCacheMiB, m < 0 || m > Storage.memoryCacheMiBMax {
                    out.append("storage.memory_cache_mib: \(m) is out of range; give 0 (no memory tier) to \(Storage.memoryCacheMiBMax) MiB")
                }
            } else {
                out.append("storage: the storage role needs a storage section (data_dir, targets)")
            }
            if kv != nil { out.append("kv: the storage role keeps no KV; remove the kv section") }
        case .master:
            if let m = master {
                if m.adminTokenFile.isEmpty { out.append("master.admin_token_file: name a file holding the admin token") }
                if let b = m.bodyBytesMax, !(1_024...(1 << 30)).contains(b) { out.append("master.body_bytes_max: \(b) is outside 1024...1073741824") }
                if let t = m.idleTimeoutSeconds, !(1...3_600).contains(t) { out.append("master.idle_timeout_seconds: \(t) is outside 1...3600") }
                if let c = m.connectionsMax, !(1...100_000).contains(c) { out.append("master.connections_max: \(c) is outside 1...100000") }
            } else {
                out.append("master: the master role needs a master section (admin_token_file: FILE)")
            }
            if kv != nil || storage != nil { out.append("kv, storage: the master keeps no state; remove these sections") }
            if cluster.meta?.isEmpty ?? true { out.append("cluster.meta: the master needs the metadata servers (id and address)") }
        }
        if master != nil && node.role != .master { out.append("master: only the master role has a master section") }
        if let a = auth {
            if node.role == .master { out.append("auth: the master has no auth section (it acts with master.admin_token_file)") }
            if a.clusterKeyFile.isEmpty { out.append("auth.cluster_key_file: name the cluster key file (make one with: cistern keygen > FILE)") }
            if a.adminTokenFile != nil && node.role != .meta { out.append("auth.admin_token_file: only metadata servers set up the admin token") }
            if a.adminTokenFile?.isEmpty == true { out.append("auth.admin_token_file: name a file holding the admin token, or remove the line") }
            if let t = a.tokenCacheSeconds, !(t >= 0 && t <= 3_600) { out.append("auth.token_cache_seconds: \(t) is outside 0...3600") }
        }
        if let m = meta {
            if node.role != .meta { out.append("meta: only the meta role has a meta section") }
            for (name, v) in m.fields where !(v > 0 && v <= 31_536_000) {
                out.append("meta.\(name): \(v) is not a number of seconds in (0, 31536000]")
            }
        }
        if let m = metrics, (try? Self.address(m.listen)) == nil { out.append("metrics.listen: '\(m.listen)' is not host:port") }
        if let l = logLevel, !["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(l) {
            out.append("log_level: unknown level '\(l)'; expected trace, debug, info, notice, warning, error or critical")
        }
        return out
    }

    /// Parses "host:port" (IPv6 in brackets).
    public static func address(_ text: String) throws(ConfigError) -> NodeAddress {
        var host = Substring(text)
        var portText: Substring
        if host.hasPrefix("["), let close = host.firstIndex(of: "]") {
            let rest = host[host.index(after: close)...]
            guard rest.hasPrefix(":") else { throw .malformed(path: text, detail: "expected [host]:port") }
            portText = rest.dropFirst()
            host = host[host.index(after: host.startIndex)..<close]
        } else {
            guard let colon = host.lastIndex(of: ":") else { throw .malformed(path: text, detail: "expected host:port") }
            portText = host[host.index(after: colon)...]
            host = host[..<colon]
        }
        guard !host.isEmpty, let port = UInt16(portText) else { throw .malformed(path: text, detail: "expected host:port with a port in 0...65535") }
        return NodeAddress(host: String(host), port: port)
    }
}

/// Why a configuration could not be used.
public enum ConfigError: Error, Equatable, Sendable, CustomStringConvertible {
    case unreadable(path: String, reason: String)
    case malformed(path: String, detail: String)
    case invalid(path: String, problems: [String])

    public var description: String {
        switch self {
        case .unreadable(let p, let r): return "\(p): cannot read the configuration: \(r)"
        case .malformed(let p, let d): return "\(p): \(d)"
        case .invalid(let p, let problems):
            return "\(p): \(problems.count) problem(s):\n" + problems.map { "  - \($0)" }.joined(separator: "\n")
        }
    }
}
