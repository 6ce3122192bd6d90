import CisternCore

/// Walks a namespace from the root inside one transaction and reports what is wrong
/// with it: entries pointing at missing inodes, inodes no entry reaches (other than
/// files awaiting garbage collection, which have no inode), directories whose parent
/// pointer disagrees with their entry, and parent chains that loop.
public enum NamespaceAudit {
    public struct Report: Sendable {
        /// Every reachable path and its type ("/" is the root).
        public var tree: [String: InodeType] = [:]
        public var problems: [String] = []
        public var inodes = 0
    }

    public static func audit(_ ns: Namespace, limit: Int = 100_000) async throws -> Report {
        var report = Report()
        var reachable: Set<InodeID> = [.root]
        var queue: [(String, InodeID)] = [("/", .root)]
        report.tree["/"] = .directory
        while let (path, id) = queue.popLast() {
            for d in try await ns.list(path, limit: limit) {
                let child = path == "/" ? "/" + d.name : path + "/" + d.name
                guard let inode = try await ns.inode(d.inode) else {
                    report.problems.append("dangling entry: \(child) points at missing \(d.inode)")
                    continue
                }
                report.tree[child] = inode.type
                reachable.insert(inode.id)
                if inode.type == .directory {
                    if inode.parent != id { report.problems.append("\(child): parent pointer \(inode.parent.map(\.description) ?? "none") is not \(id)") }
                    queue.append((child, inode.id))
                }
            }
        }
        let all = try await ns.tx.getRange(.prefix(Array("i/".utf8)), limit: limit, reverse: false)
        report.inodes = all.count
        for pair in all {
            let inode = try Inode(wireBytes: pair.value)
            if !reachable.contains(inode.id) { report.problems.append("orphaned \(inode.id) (\(inode.type))") }
            var cursor = inode.parent
            var steps = 0
            while let c = cursor, c != .root {
                steps += 1
                if steps > Namespace.pathComponentsMax {
                    report.problems.append("cycle through \(inode.id)")
                    break
                }
                cursor = try await ns.inode(c)?.parent
            }
        }
        return report
    }
}
