import ArgumentParser
import Cistern
import CisternServer
import Foundation

/// Prints an error the way every command does, and exits 1.
func fail(_ message: String) -> ExitCode {
    FileHandle.standardError.write(Data("error: \(message)\n".utf8))
    return ExitCode(1)
}

/// The path of this executable (to start server processes with).
func selfExecutable() -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
}

struct Server: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one server process (mgmtd, meta, storage or master) until SIGTERM.",
        discussion: "The configuration is YAML; see docs/operations.md for every key. Logs go to standard error; Prometheus metrics to metrics.listen.")

    @Option(help: "mgmtd, meta, storage or master (must match node.role in the config)") var role: String
    @Option(help: "The YAML configuration file") var config: String
    @Option(help: "Write this process's id to FILE once serving (removed on a clean exit)") var pidFile: String?

    func run() async throws {
        let c: ServerConfig
        do {
            c = try ServerConfig.load(path: config)
        } catch {
            throw fail("\(error)")
        }
        guard c.node.role.rawValue == role else {
            throw fail("--role \(role) does not match node.role '\(c.node.role.rawValue)' in \(config)")
        }
        do {
            try await ServerProcess.runUntilSignalled(c, pidFile: pidFile)
        } catch {
            throw fail("\(c.node.name): \(error)")
        }
    }
}

struct Up: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start a local cluster on loopback (one process per node) and return once it serves.")
    @Option(help: "Where the cluster keeps its configs, logs, pids and data") var dataDir: String
    @Option(help: "Storage nodes") var storageNodes = 3
    @Option(help: "Storage targets (disks) per node; more targets give more chains") var targetsPerNode = 2
    @Flag(help: "Start no master HTTP service") var noMaster = false

    func run() async throws {
        guard (1...16).contains(targetsPerNode) else { throw fail("--targets-per-node \(targetsPerNode) is outside 1...16") }
        let cluster = LocalCluster(dataDir: dataDir)
        do {
            try await cluster.up(storageNodes: storageNodes, targetsPerNode: targetsPerNode, master: !noMaster, binary: selfExecutable()) { print("up: \($0)") }
        } catch {
            throw fail("\(error)")
        }
        print("cluster serving from \(cluster.dataDir): cistern admin nodes, cistern kv put NS KEY FILE, cistern fs ls /, cistern down")
        if let url = cluster.masterURL() {
            print("master: \(url) (curl -H \"Authorization: Bearer $(cat \(cluster.adminTokenFile))\" \(url)/v1/tenants)")
        }
    }
}

struct Down: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stop a local cluster started by cistern up.")
    @Option(help: "The cluster's data dir (default: the last one cistern up started)") var dataDir: String?

    func run() async throws {
        do {
            let cluster = try LocalCluster.resolve(dataDir)
            let n = cluster.runningNodes().count
            try await cluster.down()
            print("stopped \(n) process(es) of \(cluster.dataDir)")
        } catch {
            throw fail("\(error)")
        }
    }
}

/// Runs `body` with a session to the cluster named by `--data-dir` (or the last one
/// `cistern up` started), closes the session, and turns any error into the
/// command's one-line error and exit status 1.
func withSession(_ dataDir: String?, _ body: (ClientSession) async throws -> Void) async throws {
    let s: ClientSession
    do {
        s = try await ClientSession.connect(try LocalCluster.resolve(dataDir))
    } catch {
        throw fail("\(error)")
    }
    do {
        try await body(s)
        await s.close()
    } catch let e as ExitCode {
        await s.close()
        throw e
    } catch {
        await s.close()
        throw fail("\(error)")
    }
}

struct Admin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Inspect and manage a running cluster.",
        discussion: "WHAT: nodes, targets, chains, tables, create-chains.")
    @Argument(help: "nodes | targets | chains | tables | create-chains") var what: String
    @Option(help: "Replicas per chain (create-chains)") var replicas = 3
    @Option(help: "The cluster's data dir (default: the last one cistern up started)") var dataDir: String?

    func run() async throws {
        try await withSession(dataDir) { s in
            await s.client.mgmtd.refreshRouting()
            guard let r = await s.client.mgmtd.routing else { throw fail("no routing from the cluster manager") }
            switch what {
            case "nodes":
                print("routing version \(r.version)")
                for n in r.nodes { print("\(n.id)\t\(n.role)\t\(n.name)\t\(n.status)\t\(n.addresses.joined(separator: ","))") }
            case "targets":
                for t in r.targets {
                    print("\(t.id)\tnode \(t.node)\t\(t.chain.map { "\($0)" } ?? "-")\t\(t.localState)\tused \(t.usedBytes) of \(t.capacityBytes) bytes\(t.spaceError.isEmpty ? "" : "\tNO SPACE: \(t.spaceError)")")
                }
            case "chains":
                for c in r.chains { print("\(c)") }
            case "tables":
                for t in r.tables { print("table \(t.id) v\(t.version): \(t.chains.count) chains: \(t.chains.map(\.description).joined(separator: " "))") }
            case "create-chains":
                print("\(try await s.client.mgmtd.call(.createChains(replicas: replicas)))")
            default:
                throw fail("unknown admin command '\(what)'; use nodes, targets, chains, tables or create-chains")
            }
        }
    }
}

struct KV: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kv",
        abstract: "Put, get, check and delete KV cache pages.",
        discussion: """
        cistern kv put NAMESPACE KEY [FILE]      (stdin without FILE; creates the namespace if missing)
        cistern kv get NAMESPACE KEY [FILE]      (stdout without FILE)
        cistern kv exists NAMESPACE KEY...       (each key, then the consecutive hits)
        cistern kv delete NAMESPACE KEY...
        cistern kv usage NAMESPACE
        """)
    @Argument(help: "put | get | exists | delete | usage") var op: String
    @Argument(help: "The namespace") var namespace: String
    @Argument(help: "Keys (and for put/get an optional file)") var rest: [String] = []
    @Option(help: "Page size of a namespace created by put") var pageBytes = 1 << 20
    @Option(help: "Capacity in pages of a namespace created by put") var capacityPages = 4_096
    @Option(help: "Durability of a namespace created by put: cache (acknowledged when every replica holds the page; a crash of a whole chain may lose recent pages) or durable (fsynced on every replica first)") var durability = "cache"
    @Option(help: "The cluster's data dir (default: the last one cistern up started)") var dataDir: String?

    func run() async throws {
        try await withSession(dataDir) { s in
            switch op {
            case "put":
                guard let key = rest.first else { throw fail("kv put needs a KEY") }
                let bytes = try rest.count > 1 ? [UInt8](Data(contentsOf: URL(fileURLWithPath: rest[1]))) : [UInt8](FileHandle.standardInput.readDataToEndOfFile())
                guard let d = KVDurability(durability) else { throw fail("unknown durability '\(durability)'; use cache or durable") }
                let ns = try await s.client.kvNamespace(namespace, pageBytes: pageBytes, capacityPages: UInt64(capacityPages), durability: d)
                let outcome = try await ns.put([(key, bytes)])
                print("\(key): \(outcome[0])")
                if !outcome[0].isStored { throw ExitCode(1) }
            case "get":
                guard let key = rest.first else { throw fail("kv get needs a KEY") }
                let ns = try await s.client.kvNamespace(namespace)
                switch try await ns.get([key])[0] {
                case .found(let bytes):
                    if rest.count > 1 {
                        try Data(bytes).write(to: URL(fileURLWithPath: rest[1]))
                    } else {
                        FileHandle.standardOutput.write(Data(bytes))
                    }
                case .missing: throw fail("\(key): not in \(namespace)")
                case .failed(let why): throw fail("\(key): \(why)")
                }
            case "exists":
                let ns = try await s.client.kvNamespace(namespace)
                let e = try await ns.exists(rest)
                for (k, p) in zip(rest, e.present) { print("\(k)\t\(p ? "present" : "missing")") }
                print("consecutive hits: \(e.consecutiveHits)")
            case "delete":
                let ns = try await s.client.kvNamespace(namespace)
                print("deleted \(try await ns.delete(rest)) of \(rest.count)")
            case "usage":
                let ns = try await s.client.kvNamespace(namespace)
                print("\(ns.config)\n\(try await ns.usage())")
            default:
                throw fail("unknown kv command '\(op)'; use put, get, exists, delete or usage")
            }
        }
    }
}

struct FS: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fs",
        abstract: "Files in a running cluster.",
        discussion: """
        cistern fs ls PATH | mkdir PATH | put LOCAL PATH | get PATH [LOCAL] | rm PATH [--recursive]
        """)
    @Argument(help: "ls | mkdir | put | get | rm") var op: String
    @Argument(help: "Paths") var paths: [String]
    @Flag(help: "rm: remove a directory and its contents") var recursive = false
    @Option(help: "The cluster's data dir (default: the last one cistern up started)") var dataDir: String?

    func run() async throws {
        try await withSession(dataDir) { s in
            let c = s.client
            switch (op, paths.count) {
            case ("ls", 1):
                for e in try await c.list(paths[0]) {
                    let size = e.type == .file ? (try? await c.stat(paths[0] == "/" ? "/\(e.name)" : "\(paths[0])/\(e.name)").length).map { "\($0)" } ?? "?" : "-"
                    print("\(e.type)\t\(size)\t\(e.name)")
                }
            case ("mkdir", 1): try await c.mkdir(paths[0])
            case ("put", 2): try await c.writeFile(paths[1], [UInt8](try Data(contentsOf: URL(fileURLWithPath: paths[0]))))
            case ("get", 1): FileHandle.standardOutput.write(Data(try await c.readFile(paths[0])))
            case ("get", 2): try Data(try await c.readFile(paths[0])).write(to: URL(fileURLWithPath: paths[1]))
            case ("rm", 1): try await c.remove(paths[0], recursive: recursive)
            default: throw fail("usage: cistern fs ls PATH | mkdir PATH | put LOCAL PATH | get PATH [LOCAL] | rm PATH")
            }
        }
    }
}
