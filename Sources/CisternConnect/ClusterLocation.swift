import CisternCore
import Foundation
import Yams

extension ServerConfig.Cluster {
    /// Finds a cluster from what a user passes to a client: a path to a `cluster.yaml`,
    /// a data directory holding one (what `cistern up --data-dir DIR` writes), or the
    /// addresses inline as `mgmtd=ID@HOST:PORT[,ID@HOST:PORT...][;meta=ID@HOST:PORT,...]`.
    public static func locate(_ text: String) throws(ConfigError) -> ServerConfig.Cluster {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed.isEmpty {
            throw .malformed(path: "<cluster>", detail: "empty; pass a cluster.yaml path, a data directory, or mgmtd=ID@HOST:PORT;meta=ID@HOST:PORT")
        }
        var isDirectory: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: trimmed, isDirectory: &isDirectory)
        if !exists && trimmed.contains("=") { return try parse(spec: trimmed) }
        guard exists else {
            throw .unreadable(path: trimmed, reason: "no such file or directory; pass a cluster.yaml path, a data directory of `cistern up`, or mgmtd=ID@HOST:PORT;meta=ID@HOST:PORT")
        }
        let path = isDirectory.boolValue ? trimmed + "/cluster.yaml" : trimmed
        let yaml: String
        do {
            yaml = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            let hint = isDirectory.boolValue ? "; is a cluster running from \(trimmed) (cistern up --data-dir \(trimmed))?" : ""
            throw .unreadable(path: path, reason: "cannot read it\(hint)")
        }
        return try parse(yaml: yaml, path: path)
    }

    /// Parses a cluster file's YAML (`mgmtd:` and `meta:` lists of `{id, address}`).
    public static func parse(yaml: String, path: String) throws(ConfigError) -> ServerConfig.Cluster {
        let cluster: ServerConfig.Cluster
        do {
            cluster = try YAMLDecoder().decode(ServerConfig.Cluster.self, from: yaml)
        } catch let error as DecodingError {
            throw .malformed(path: path, detail: describeDecodingError(error))
        } catch {
            throw .malformed(path: path, detail: "not valid YAML: \(error)")
        }
        try cluster.validate(path: path)
        return cluster
    }

    /// Parses `mgmtd=1@127.0.0.1:9001,2@10.0.0.2:9001;meta=10@127.0.0.1:9010`.
    public static func parse(spec: String) throws(ConfigError) -> ServerConfig.Cluster {
        var mgmtd: [ServerConfig.Peer] = []
        var meta: [ServerConfig.Peer] = []
        for part in spec.split(separator: ";", omittingEmptySubsequences: true) {
            guard let eq = part.firstIndex(of: "=") else {
                throw .malformed(path: spec, detail: "'\(part)' is not ROLE=ID@HOST:PORT,...")
            }
            let role = part[..<eq].trimmingCharacters(in: .whitespaces)
            var peers: [ServerConfig.Peer] = []
            for item in part[part.index(after: eq)...].split(separator: ",") {
                let t = item.trimmingCharacters(in: .whitespaces)
                guard let at = t.firstIndex(of: "@"), let id = UInt32(t[..<at]), id > 0 else {
                    throw .malformed(path: spec, detail: "'\(t)' is not ID@HOST:PORT with a positive node id")
                }
                let address = String(t[t.index(after: at)...])
                _ = try ServerConfig.address(address)
                peers.append(ServerConfig.Peer(id: id, address: address))
            }
            switch role {
            case "mgmtd": mgmtd += peers
            case "meta": meta += peers
            default: throw .malformed(path: spec, detail: "unknown role '\(role)'; expected mgmtd or meta")
            }
        }
        let cluster = ServerConfig.Cluster(mgmtd: mgmtd, meta: meta.isEmpty ? nil : meta)
        try cluster.validate(path: spec)
        return cluster
    }

    func validate(path: String) throws(ConfigError) {
        var problems: [String] = []
        if mgmtd.isEmpty { problems.append("mgmtd: name at least one cluster manager") }
        if (meta ?? []).isEmpty { problems.append("meta: name at least one metadata server (the KV index runs there)") }
        for p in mgmtd + (meta ?? []) where (try? ServerConfig.address(p.address)) == nil {
            problems.append("'\(p.address)' (node \(p.id)) is not host:port")
        }
        if !problems.isEmpty { throw .invalid(path: path, problems: problems) }
    }
}

/// Where a client finds its tenant token.
public enum ClientToken {
    /// The token for a client of the cluster named by `clusterText` (what `locate`
    /// takes), in this order: `tokenFile` (a caller's explicit choice), `CISTERN_TOKEN`,
    /// `CISTERN_TOKEN_FILE`, then `admin.token` beside the cluster file (a data dir of
    /// `cistern up`). Nil when there is none: the cluster must then run without
    /// authentication.
    public static func locate(_ clusterText: String, tokenFile: String? = nil,
                              environment: [String: String] = ProcessInfo.processInfo.environment) throws(ConfigError) -> String? {
        if let tokenFile { return try read(tokenFile) }
        if let t = environment["CISTERN_TOKEN"]?.trimmingCharacters(in: .whitespacesAndNewlines), !t.isEmpty { return t }
        if let f = environment["CISTERN_TOKEN_FILE"], !f.isEmpty { return try read(f) }
        let trimmed = clusterText.trimmingCharacters(in: .whitespaces)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: trimmed, isDirectory: &isDirectory) else { return nil }
        let dir = isDirectory.boolValue ? trimmed : (trimmed as NSString).deletingLastPathComponent
        let beside = (dir.isEmpty ? "." : dir) + "/admin.token"
        return FileManager.default.fileExists(atPath: beside) ? try read(beside) : nil
    }

    static func read(_ path: String) throws(ConfigError) -> String {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw .unreadable(path: path, reason: "the token file: \((error as NSError).localizedDescription)")
        }
        let t = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !t.isEmpty, !t.contains(where: { $0.isNewline || $0 == " " }), t.utf8.count <= 256 else {
            throw .invalid(path: path, problems: ["a token file holds one token (one line, no spaces, at most 256 bytes)"])
        }
        return t
    }
}
