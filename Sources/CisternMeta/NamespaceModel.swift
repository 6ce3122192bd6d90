/// A namespace operation, as the reference model sees it.
public enum NamespaceOp: CustomStringConvertible, Sendable, Equatable {
    case create(String), mkdir(String), remove(String, recursive: Bool), rename(String, String)
    public var description: String {
        switch self {
        case .create(let p): return "create \(p)"
        case .mkdir(let p): return "mkdir \(p)"
        case .remove(let p, let r): return "remove\(r ? " -r" : "") \(p)"
        case .rename(let a, let b): return "rename \(a) \(b)"
        }
    }
}

/// The namespace as a sequential reference model: absolute path to type, with the
/// same rules as `Namespace` (exclusive create, parents must exist, non-recursive
/// remove of a non-empty directory refused, rename replacing a file or an empty
/// directory and never moving a directory into its own subtree). Tests and scenario
/// checkers replay committed operations through it.
public struct NamespaceModel: Sendable, Equatable {
    public var entries: [String: InodeType] = ["/": .directory]

    public init() {}

    public static func parent(_ p: String) -> String {
        let parts = p.split(separator: "/")
        return parts.count <= 1 ? "/" : "/" + parts.dropLast().joined(separator: "/")
    }

    public func isDir(_ p: String) -> Bool { entries[p] == .directory }
    public func children(_ p: String) -> [String] {
        let prefix = p == "/" ? "/" : p + "/"
        return entries.keys.filter { $0 != p && $0.hasPrefix(prefix) && !$0.dropFirst(prefix.count).contains("/") }
    }
    public func subtree(_ p: String) -> [String] { entries.keys.filter { $0 == p || $0.hasPrefix(p + "/") } }

    /// Applies `op`; returns whether a sequential namespace would accept it.
    public mutating func apply(_ op: NamespaceOp) -> Bool {
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
