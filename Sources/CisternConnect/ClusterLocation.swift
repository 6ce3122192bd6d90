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
