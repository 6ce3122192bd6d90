import CisternCore
import CisternMeta
import CisternSim
import Testing

/// A namespace operation of the model check.
enum Op: CustomStringConvertible, Sendable {
    case create(String), mkdir(String), remove(String, recursive: Bool), rename(String, String)
    var description: String {
        switch self {
        case .create(let p): return "create \(p)"
        case .mkdir(let p): return "mkdir \(p)"
        case .remove(let p, let r): return "remove\(r ? " -r" : "") \(p)"
        case .rename(let a, let b): return "rename \(a) \(b)"
        }
    }
}

/// The sequential model: absolute path to type.
struct NamespaceModel {
    var entries: [String: InodeType] = ["/": .directory]

    static func parent(_ p: String) -> String {
        let parts = p.split(separator: "/")
        return parts.count <= 1 ? "/" : "/" + parts.dropLast().joined(separator: "/")
    }

    func isDir(_ p: String) -> Bool { entries[p] == .directory }
    func children(_ p: String) -> [String] {
        let prefix = p == "/" ? "/" : p + "/"
        return entries.keys.filter { $0 != p && $0.hasPrefix(prefix) && !$0.dropFirst(prefix.count).contains("/") }
    }
    func subtree(_ p: String) -> [String] { entries.keys.filter { $0 == p || $0.hasPrefix(p + "/") } }

    /// Applies `op` as the namespace would; returns whether it succeeds.
    mutating func apply(_ op: Op) -> Bool {
        switch op {
        case .create(let p), .mkdir(let p):
            guard isDir(Self.parent(p)), entries[p] == nil else { return false }
            if case .create = op { entries[p] = .file } else { entries[p] = .directory }
            return true
        case .remove(let p, let recursive):
            guard let t = entries[p] else { return false }
            if t == .directory && !children(p).isEmpty && !recursive { return false }
            for q in subtree(p) { entries[q] = nil }
            return true
        case .rename(let a, let b):
            guard let moving = entries[a], isDir(Self.parent(b)) else { return false }
            if a == b { return true }
            if moving == .directory && b.hasPrefix(a + "/") { return false }
            if let existing = entries[b] {
                if existing == .directory {
                    guard moving == .directory, children(b).isEmpty else { return false }
                } else if moving == .directory {
                    return false
                }
                entries[b] = nil
            }
            let moved = subtree(a).sorted()
            let types = moved.map { entries[$0]! }
            for q in moved { entries[q] = nil }
            for (q, t) in zip(moved, types) { entries[b + q.dropFirst(a.count)] = t }
            return true
        }
    }
}

final class ModelRun: @unchecked Sendable {
    var committed: [Op] = []
    var rejected = 0
    var storeErrors: [String] = []
    var real: [String: InodeType] = [:]
    var inodeCount = 0
    var problems: [String] = []
    var done = false
}

/// Walks the real tree from the root, and checks every inode is reachable, every
/// entry points at an inode, and directory parents lead back to the root.
func inspect(_ ns: Namespace, into run: ModelRun) async throws {
    var reachable: Set<InodeID> = [.root]
    var queue: [(String, InodeID)] = [("/", .root)]
    run.real["/"] = .directory
    while let (path, id) = queue.popLast() {
        for d in try await ns.list(path, limit: 10_000) {
            let child = path == "/" ? "/" + d.name : path + "/" + d.name
            guard let inode = try await ns.inode(d.inode) else {
                run.problems.append("lost entry: \(child) points at missing \(d.inode)")
                continue
            }
            run.real[child] = inode.type
            reachable.insert(inode.id)
            if inode.type == .directory {
                if inode.parent != id { run.problems.append("\(child): parent pointer \(String(describing: inode.parent)) is not \(id)") }
                queue.append((child, inode.id))
            }
        }
    }
    let all = try await ns.tx.getRange(.prefix(Array("i/".utf8)), limit: 100_000, reverse: false)
    run.inodeCount = all.count
    for pair in all {
        let inode = try Inode(wireBytes: pair.value)
        if !reachable.contains(inode.id) { run.problems.append("orphaned \(inode.id) (\(inode.type))") }
        // Directory parents must reach the root without a cycle.
        var cursor = inode.parent
        var steps = 0
        while let c = cursor, c != .root {
            steps += 1
            if steps > 64 { run.problems.append("cycle through \(inode.id)"); break }
            cursor = try await ns.inode(c)?.parent
        }
    }
}

@Suite struct NamespaceModelCheckTests {
    @Test(arguments: [UInt64(1), 2, 3, 4, 5, 6])
    func concurrentOperationsThroughTwoServersMatchTheSequentialModel(seed: UInt64) {
        var kv = KVConfig()
        kv.conflictProbability = 0.1
        let run = SimWorld.simulate(seed: seed, kv: kv) { world -> ModelRun in
            let run = ModelRun()
            let servers = (1...2).map { i -> MetaService in
                let n = world.addNode(name: "meta\(i)", host: "10.0.0.\(i)")
                let p = world.start(n)
                return MetaService(kv: p.kv, runtime: p.runtime, policy: LayoutPolicy(table: 1, tableVersion: 1, chains: []))
            }
            let names = ["a", "b", "c"]
            var finished = 0
            for c in 0..<4 {
                let n = world.addNode(name: "client\(c)", host: "10.0.1.\(c)")
                let p = world.start(n)
                world.spawn {
                    var rng = p.runtime.random("ops")
                    func path() -> String {
                        let roll = rng.unit()
                        let depth = roll < 0.4 ? 1 : (roll < 0.8 ? 2 : 3)
                        return "/" + (0..<depth).map { _ in names[Int.random(in: 0..<names.count, using: &rng)] }.joined(separator: "/")
                    }
                    for i in 0..<60 {
                        let server = servers[(c + i) % 2]
                        let op: Op
                        switch Int.random(in: 0..<10, using: &rng) {
                        case 0...2: op = .create(path())
                        case 3...5: op = .mkdir(path())
                        case 6...7: op = .rename(path(), path())
                        default: op = .remove(path(), recursive: rng.chance(0.5))
                        }
                        do {
                            switch op {
                            case .create(let q): _ = try await server.create(q)
                            case .mkdir(let q): _ = try await server.mkdir(q)
                            case .remove(let q, let r): try await server.remove(q, recursive: r)
                            case .rename(let a, let b): try await server.rename(a, b)
                            }
                            // In the simulator a transaction returns right after it
                            // commits, so this order is the commit order.
                            run.committed.append(op)
                        } catch is MetaError {
                            run.rejected += 1
                        } catch {
                            run.storeErrors.append("\(op): \(error)")
                        }
                    }
                    finished += 1
                    if finished == 4 {
                        _ = try? await servers[0].read { ns in
                            run.real = [:]
                            run.problems = []
                            try await inspect(ns, into: run)
                        }
                        run.done = true
                    }
                }
            }
            world.run(untilNanoseconds: 3_600_000_000_000)
            return run
        }
        #expect(run.done)
        #expect(run.storeErrors.isEmpty, "\(run.storeErrors.prefix(3))")
        var model = NamespaceModel()
        for (i, op) in run.committed.enumerated() {
            let applied = model.apply(op)
            #expect(applied, "seed \(seed): committed op #\(i) (\(op)) is impossible in the sequential model")
        }
        #expect(run.real == model.entries, "seed \(seed): final tree differs from the model")
        #expect(run.problems.isEmpty, "seed \(seed): \(run.problems.prefix(5))")
        #expect(run.inodeCount == run.real.count, "seed \(seed): \(run.inodeCount) inodes but \(run.real.count) reachable names (no hard links here)")
        #expect(run.committed.count > 30 && run.rejected > 10, "seed \(seed): the workload did too little (\(run.committed.count) committed, \(run.rejected) rejected)")
    }
}
