import CisternAuth
import CisternCore
import CisternWire

/// The metadata service's number on the wire.
public let metaService = ServiceID(5)

/// One namespace operation. The method number is the wire tag.
public enum MetaOp: Sendable, Equatable {
    case stat(String)
    case batchStat([InodeID])
    /// `owner` (appended): who owns the new file (nil: root, or the server's choice).
    case create(String, mode: UInt32, exclusive: Bool, owner: Owner? = nil)
    /// `mode` and `owner` (appended): the new directories' (nil: 0755, root).
    case mkdir(String, parents: Bool, mode: UInt32? = nil, owner: Owner? = nil)
    case symlink(String, target: String, owner: Owner? = nil)
    case link(String, String)
    case remove(String, recursive: Bool)
    case rename(String, String)
    case list(String, after: String?, limit: Int)
    case open(String, write: Bool, session: UInt64)
    case close(InodeID, session: UInt64, length: UInt64?)
    case sync(InodeID, length: UInt64?)
    /// Mode first (as first sent); owner and times appended.
    case setattr(String, AttributeChange)
    case truncate(String, length: UInt64)
    case statfs
    /// The client is alive: its write sessions stay open (sent while it has any).
    case keepAlive

    public var method: UInt16 {
        switch self {
        case .stat: return 1
        case .batchStat: return 2
        case .create: return 3
        case .mkdir: return 4
        case .symlink: return 5
        case .link: return 6
        case .remove: return 7
        case .rename: return 8
        case .list: return 9
        case .open: return 10
        case .close: return 11
        case .sync: return 12
        case .setattr: return 13
        case .truncate: return 14
        case .statfs: return 15
        case .keepAlive: return 16
        }
    }

    /// Whether the operation changes the namespace (and so is made idempotent).
    public var mutates: Bool {
        switch self {
        case .stat, .batchStat, .list, .statfs: return false
        default: return true
        }
    }
}

/// A request: the operation and the identity that makes a retry apply once.
public struct MetaRequest: Sendable, Equatable {
    public var client: UInt64
    public var request: UInt64
    public var op: MetaOp
    public init(client: UInt64, request: UInt64, op: MetaOp) {
        self.client = client
        self.request = request
        self.op = op
    }

    public func message() -> Message {
        var w = WireWriter()
        w.writeMessage { m in
            m.writeVarint(client)
            m.writeVarint(request)
            switch op {
            case .stat(let p): m.writeString(p)
            case .batchStat(let ids): m.write(ids)
            case .create(let p, let mode, let ex, let owner):
                m.writeString(p)
                m.write(mode)
                m.writeBool(ex)
                m.write(owner)
            case .mkdir(let p, let parents, let mode, let owner):
                m.writeString(p)
                m.writeBool(parents)
                m.write(mode)
                m.write(owner)
            case .symlink(let p, let t, let owner):
                m.writeString(p)
                m.writeString(t)
                m.write(owner)
            case .link(let p, let t), .rename(let p, let t):
                m.writeString(p)
                m.writeString(t)
            case .remove(let p, let r):
                m.writeString(p)
                m.writeBool(r)
            case .list(let p, let after, let limit):
                m.writeString(p)
                m.write(after)
                m.write(limit)
            case .open(let p, let wr, let s):
                m.writeString(p)
                m.writeBool(wr)
                m.writeVarint(s)
            case .close(let id, let s, let l):
                m.write(id)
                m.writeVarint(s)
                m.write(l)
            case .sync(let id, let l):
                m.write(id)
                m.write(l)
            case .setattr(let p, let change):
                m.writeString(p)
                m.write(change.mode)
                m.write(change.uid)
                m.write(change.gid)
                m.write(change.atimeNanoseconds)
                m.write(change.mtimeNanoseconds)
            case .truncate(let p, let l):
                m.writeString(p)
                m.writeVarint(l)
            case .statfs, .keepAlive:
                break
            }
        }
        return Message(method: op.method, header: w.bytes)
    }

    /// The request and its trailer (token, capabilities; nil if it has none).
    public static func decode(_ message: Message) throws(WireError) -> (MetaRequest, AuthTrailer?) {
        var r = WireReader(message.header)
        let request = try MetaRequest(reading: &r, method: message.method)
        return (request, try AuthTrailer.read(after: &r))
    }

    public init(_ message: Message) throws(WireError) {
        var r = WireReader(message.header)
        try self.init(reading: &r, method: message.method)
    }

    init(reading r: inout WireReader, method: UInt16) throws(WireError) {
        self = try r.readMessage("MetaRequest") { m throws(WireError) -> MetaRequest in
            let client = try m.readVarint("client")
            let request = try m.readVarint("request")
            let op: MetaOp
            switch method {
            case 1: op = .stat(try m.readString())
            case 2: op = .batchStat(try m.read([InodeID].self))
            case 3:
                let (p, mode, ex) = (try m.readString(), try m.read(UInt32.self), try m.readBool())
                op = .create(p, mode: mode, exclusive: ex, owner: m.remaining > 0 ? try m.read(Owner?.self) : nil)
            case 4:
                let (p, parents) = (try m.readString(), try m.readBool())
                let mode = m.remaining > 0 ? try m.read(UInt32?.self) : nil
                op = .mkdir(p, parents: parents, mode: mode, owner: m.remaining > 0 ? try m.read(Owner?.self) : nil)
            case 5:
                let (p, t) = (try m.readString(), try m.readString())
                op = .symlink(p, target: t, owner: m.remaining > 0 ? try m.read(Owner?.self) : nil)
            case 6: op = .link(try m.readString(), try m.readString())
            case 7: op = .remove(try m.readString(), recursive: try m.readBool())
            case 8: op = .rename(try m.readString(), try m.readString())
            case 9: op = .list(try m.readString(), after: try m.read(String?.self), limit: try m.read(Int.self))
            case 10: op = .open(try m.readString(), write: try m.readBool(), session: try m.readVarint())
            case 11: op = .close(try m.read(InodeID.self), session: try m.readVarint(), length: try m.read(UInt64?.self))
            case 12: op = .sync(try m.read(InodeID.self), length: try m.read(UInt64?.self))
            case 13:
                let p = try m.readString()
                var change = AttributeChange(mode: try m.read(UInt32?.self))
                if m.remaining > 0 {
                    change.uid = try m.read(UInt32?.self)
                    change.gid = try m.read(UInt32?.self)
                    change.atimeNanoseconds = try m.read(UInt64?.self)
                    change.mtimeNanoseconds = try m.read(UInt64?.self)
                }
                op = .setattr(p, change)
            case 14: op = .truncate(try m.readString(), length: try m.readVarint())
            case 15: op = .statfs
            case 16: op = .keepAlive
            default: throw .unknownTag(type: "MetaOp", tag: UInt64(method))
            }
            return MetaRequest(client: client, request: request, op: op)
        }
    }
}

/// The metadata service's answers.
public enum MetaReply: Sendable, Equatable, WireCodable {
    case inode(Inode?)
    case inodes([Inode?])
    case entries([Dentry])
    case statfs(inodes: Int, garbage: Int)
    /// The operation was refused; `MetaError`'s text says why.
    case refused(MetaErrorCode, String)
    /// The store failed or was unreachable; retry the same request (it is idempotent).
    case unavailable(String)

    public func encode(to writer: inout WireWriter) {
        switch self {
        case .inode(let i):
            writer.writeVarint(1)
            writer.writeMessage { $0.write(i) }
        case .inodes(let l):
            writer.writeVarint(2)
            writer.writeMessage { $0.write(l) }
        case .entries(let e):
            writer.writeVarint(3)
            writer.writeMessage { $0.write(e) }
        case .statfs(let i, let g):
            writer.writeVarint(4)
            writer.writeMessage { w in
                w.write(i)
                w.write(g)
            }
        case .refused(let code, let text):
            writer.writeVarint(5)
            writer.writeMessage { w in
                w.write(code)
                w.writeString(text)
            }
        case .unavailable(let text):
            writer.writeVarint(6)
            writer.writeMessage { $0.writeString(text) }
        }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let tag = try reader.readVarint("MetaReply tag")
        self = try reader.readMessage("MetaReply") { m throws(WireError) -> MetaReply in
            switch tag {
            case 1: return .inode(try m.read(Inode?.self))
            case 2: return .inodes(try m.read([Inode?].self))
            case 3: return .entries(try m.read([Dentry].self))
            case 4: return .statfs(inodes: try m.read(Int.self), garbage: try m.read(Int.self))
            case 5: return .refused(try m.read(MetaErrorCode.self), try m.readString())
            case 6: return .unavailable(try m.readString())
            default: throw .unknownTag(type: "MetaReply", tag: tag)
            }
        }
    }
}

/// The kind of a `MetaError`, carried on the wire beside its text.
public enum MetaErrorCode: UInt8, Sendable, WireEnum {
    case notFound = 1, exists, notADirectory, isADirectory, notEmpty, invalidPath, cycle, tooLarge, store
    /// The metadata store is full; retrying does not help until space is freed.
    case noSpace = 10
    /// The caller's token is missing, unknown or revoked, or its tenant may not use
    /// the path or inode (see `Access`).
    case permissionDenied = 11

    public init(_ e: MetaError) {
        switch e {
        case .notFound: self = .notFound
        case .exists: self = .exists
        case .notADirectory: self = .notADirectory
        case .isADirectory: self = .isADirectory
        case .notEmpty: self = .notEmpty
        case .invalidPath: self = .invalidPath
        case .cycle: self = .cycle
        case .tooLarge: self = .tooLarge
        case .store: self = .store
        case .noSpace: self = .noSpace
        }
    }
}
