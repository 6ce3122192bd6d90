import CisternCore
import CisternRouting
import CisternWire

/// An inode number. The root directory is 1.
public struct InodeID: Hashable, Comparable, Sendable, WireCodable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public static let root = InodeID(1)
    public static func < (a: InodeID, b: InodeID) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "inode#\(rawValue)" }
    public func encode(to writer: inout WireWriter) { writer.writeVarint(rawValue) }
    public init(from reader: inout WireReader) throws(WireError) { rawValue = try reader.readVarint("InodeID") }
}

public enum InodeType: UInt8, Sendable, WireEnum, CustomStringConvertible {
    case file = 1, directory, symlink
    public var description: String {
        switch self {
        case .file: return "file"
        case .directory: return "directory"
        case .symlink: return "symlink"
        }
    }
}

/// Where a file's chunks go: `chunkBytes` per chunk; chunk `k` lives on
/// `chains[k % chains.count]`, a slice of chain table `table` (at `tableVersion`)
/// chosen round robin and shuffled with `seed` (see `ChainAllocator`).
public struct Layout: Hashable, Sendable, WireCodable {
    public var chunkBytes: UInt32
    public var table: UInt32
    public var tableVersion: UInt32
    public var chains: [ChainID]
    public var seed: UInt64
    public init(chunkBytes: UInt32, table: UInt32, tableVersion: UInt32, chains: [ChainID], seed: UInt64) {
        self.chunkBytes = chunkBytes
        self.table = table
        self.tableVersion = tableVersion
        self.chains = chains
        self.seed = seed
    }
    public func chain(ofChunk k: UInt64) -> ChainID? { chains.isEmpty ? nil : chains[Int(k % UInt64(chains.count))] }
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.write(chunkBytes)
            w.write(table)
            w.write(tableVersion)
            w.write(chains)
            w.writeVarint(seed)
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        (chunkBytes, table, tableVersion, chains, seed) = try reader.readMessage("Layout") { r throws(WireError) in
            (try r.read(UInt32.self), try r.read(UInt32.self), try r.read(UInt32.self), try r.read([ChainID].self), try r.readVarint())
        }
    }
}

/// Who owns an inode: POSIX user and group ids.
public struct Owner: Hashable, Sendable, WireCodable {
    public var uid: UInt32
    public var gid: UInt32
    public init(uid: UInt32, gid: UInt32) {
        self.uid = uid
        self.gid = gid
    }
    public static let root = Owner(uid: 0, gid: 0)
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.write(uid)
            w.write(gid)
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        (uid, gid) = try reader.readMessage("Owner") { r throws(WireError) in (try r.read(UInt32.self), try r.read(UInt32.self)) }
    }
}

/// An inode: a file (with its length and layout), a directory (with its parent, for
/// cycle checks and `..`), or a symlink (with its target). Owner, access time and
/// change time were appended to the record later: older records read as owned by
/// root with both times equal to the modification time.
public struct Inode: Hashable, Sendable, WireCodable {
    public var id: InodeID
    public var type: InodeType
    public var nlink: UInt32
    public var mode: UInt32
    public var length: UInt64
    public var mtimeNanoseconds: UInt64
    public var parent: InodeID?
    public var layout: Layout?
    public var symlinkTarget: String?
    public var owner: Owner
    public var atimeNanoseconds: UInt64
    /// When the inode itself last changed (attributes, links, length).
    public var ctimeNanoseconds: UInt64

    public init(id: InodeID, type: InodeType, nlink: UInt32 = 1, mode: UInt32 = 0o644, length: UInt64 = 0, mtimeNanoseconds: UInt64 = 0, parent: InodeID? = nil, layout: Layout? = nil, symlinkTarget: String? = nil,
                owner: Owner = .root, atimeNanoseconds: UInt64? = nil, ctimeNanoseconds: UInt64? = nil) {
        self.id = id
        self.type = type
        self.nlink = nlink
        self.mode = mode
        self.length = length
        self.mtimeNanoseconds = mtimeNanoseconds
        self.parent = parent
        self.layout = layout
        self.symlinkTarget = symlinkTarget
        self.owner = owner
        self.atimeNanoseconds = atimeNanoseconds ?? mtimeNanoseconds
        self.ctimeNanoseconds = ctimeNanoseconds ?? mtimeNanoseconds
    }

    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.write(id)
            w.write(type)
            w.write(nlink)
            w.write(mode)
            w.writeVarint(length)
            w.writeVarint(mtimeNanoseconds)
            w.write(parent)
            w.write(layout)
            w.write(symlinkTarget)
            // Appended: owner and times.
            w.write(owner)
            w.writeVarint(atimeNanoseconds)
            w.writeVarint(ctimeNanoseconds)
        }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        self = try reader.readMessage("Inode") { r throws(WireError) in
            var i = Inode(id: try r.read(InodeID.self), type: try r.read(InodeType.self), nlink: try r.read(UInt32.self), mode: try r.read(UInt32.self),
                          length: try r.readVarint(), mtimeNanoseconds: try r.readVarint(), parent: try r.read(InodeID?.self),
                          layout: try r.read(Layout?.self), symlinkTarget: try r.read(String?.self))
            if r.remaining > 0 {
                i.owner = try r.read(Owner.self)
                i.atimeNanoseconds = try r.readVarint("atime")
                i.ctimeNanoseconds = try r.readVarint("ctime")
            }
            return i
        }
    }
}

/// Changes to an inode's attributes (`setattr`); nil leaves one as it is. The change
/// time is always set to the operation's time.
public struct AttributeChange: Hashable, Sendable {
    /// Permission bits (the type bits are the inode's own).
    public var mode: UInt32?
    public var uid: UInt32?
    public var gid: UInt32?
    public var atimeNanoseconds: UInt64?
    public var mtimeNanoseconds: UInt64?
    public init(mode: UInt32? = nil, uid: UInt32? = nil, gid: UInt32? = nil, atimeNanoseconds: UInt64? = nil, mtimeNanoseconds: UInt64? = nil) {
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.atimeNanoseconds = atimeNanoseconds
        self.mtimeNanoseconds = mtimeNanoseconds
    }
}

/// A directory entry: a name in a directory pointing at an inode.
public struct Dentry: Hashable, Sendable, WireCodable {
    public var name: String
    public var inode: InodeID
    public var type: InodeType
    public init(name: String, inode: InodeID, type: InodeType) {
        self.name = name
        self.inode = inode
        self.type = type
    }
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.writeString(name)
            w.write(inode)
            w.write(type)
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        (name, inode, type) = try reader.readMessage("Dentry") { r throws(WireError) in
            (try r.readString(), try r.read(InodeID.self), try r.read(InodeType.self))
        }
    }
}

/// Why a metadata operation failed. Each names the path and what to do.
public enum MetaError: Error, Equatable, Sendable, CustomStringConvertible {
    case notFound(String)
    case exists(String)
    case notADirectory(String)
    case isADirectory(String)
    case notEmpty(String)
    case invalidPath(String, reason: String)
    /// The rename would move a directory into its own subtree.
    case cycle(from: String, to: String)
    case tooLarge(String)
    case store(String)
    /// The metadata store's volume is full (the text names it and the fix).
    case noSpace(String)

    public var description: String {
        switch self {
        case .notFound(let p): return "\(p): no such file or directory"
        case .exists(let p): return "\(p): already exists"
        case .notADirectory(let p): return "\(p): not a directory"
        case .isADirectory(let p): return "\(p): is a directory (use a recursive remove, or rmdir an empty one)"
        case .notEmpty(let p): return "\(p): directory not empty (remove recursively to delete its contents)"
        case .invalidPath(let p, let r): return "invalid path '\(p)': \(r)"
        case .cycle(let f, let t): return "cannot move \(f) into its own subtree (\(t))"
        case .tooLarge(let what): return "\(what) is too large"
        case .store(let d): return "metadata store: \(d)"
        case .noSpace(let d): return "metadata store out of space: \(d)"
        }
    }
}

extension MetaError: WireCodable {
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            switch self {
            case .notFound(let p): w.writeVarint(1); w.writeString(p)
            case .exists(let p): w.writeVarint(2); w.writeString(p)
            case .notADirectory(let p): w.writeVarint(3); w.writeString(p)
            case .isADirectory(let p): w.writeVarint(4); w.writeString(p)
            case .notEmpty(let p): w.writeVarint(5); w.writeString(p)
            case .invalidPath(let p, let r): w.writeVarint(6); w.writeString(p); w.writeString(r)
            case .cycle(let f, let t): w.writeVarint(7); w.writeString(f); w.writeString(t)
            case .tooLarge(let what): w.writeVarint(8); w.writeString(what)
            case .store(let d): w.writeVarint(9); w.writeString(d)
            case .noSpace(let d): w.writeVarint(10); w.writeString(d)
            }
        }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        self = try reader.readMessage("MetaError") { r throws(WireError) -> MetaError in
            let tag = try r.readVarint()
            switch tag {
            case 1: return .notFound(try r.readString())
            case 2: return .exists(try r.readString())
            case 3: return .notADirectory(try r.readString())
            case 4: return .isADirectory(try r.readString())
            case 5: return .notEmpty(try r.readString())
            case 6: return .invalidPath(try r.readString(), reason: try r.readString())
            case 7: return .cycle(from: try r.readString(), to: try r.readString())
            case 8: return .tooLarge(try r.readString())
            case 9: return .store(try r.readString())
            case 10: return .noSpace(try r.readString())
            default: throw .unknownTag(type: "MetaError", tag: tag)
            }
        }
    }
}
