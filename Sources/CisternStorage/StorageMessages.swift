import CisternAuth
import CisternCore
import CisternRouting
import CisternWire

/// The storage service's number on the wire.
public let storageService = ServiceID(4)

/// Identifies a client request for retry deduplication: a client numbers its
/// requests per channel.
public struct ClientTag: Hashable, Sendable, WireCodable {
    public var client: UInt32
    public var channel: UInt32
    public var sequence: UInt64
    public init(client: UInt32, channel: UInt32, sequence: UInt64) {
        self.client = client
        self.channel = channel
        self.sequence = sequence
    }
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.write(client)
            w.write(channel)
            w.writeVarint(sequence)
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        (client, channel, sequence) = try reader.readMessage("ClientTag") { r throws(WireError) in
            (try r.read(UInt32.self), try r.read(UInt32.self), try r.readVarint())
        }
    }
}

/// A write of one chunk. From a client (`version == 0`): `bulk` holds the bytes to
/// write at `offset`; the head turns them into the chunk's full new content and
/// assigns the version. Along the chain (`version > 0`): `bulk` is the full content.
public struct WriteArgs: Hashable, Sendable, WireCodable {
    public var target: TargetID
    public var chain: ChainID
    public var chainVersion: UInt64
    public var chunk: ChunkID
    public var offset: Int
    public var version: UInt64
    public var checksum: UInt32
    /// Replace whatever the receiver has (resync, or forwarding to a SYNCING target).
    public var fullReplace: Bool
    public var tag: ClientTag
    /// Acknowledged only once every replica has fsynced it (`true`), or once every
    /// replica holds it in memory and page cache (`false`: `cache` durability, see
    /// `ChunkEngine`). Added after version 1 of the format: absent means `true`.
    public var durable: Bool

    public init(target: TargetID, chain: ChainID, chainVersion: UInt64, chunk: ChunkID, offset: Int = 0, version: UInt64 = 0, checksum: UInt32 = 0, fullReplace: Bool = false, tag: ClientTag, durable: Bool = true) {
        self.target = target
        self.chain = chain
        self.chainVersion = chainVersion
        self.chunk = chunk
        self.offset = offset
        self.version = version
        self.checksum = checksum
        self.fullReplace = fullReplace
        self.tag = tag
        self.durable = durable
    }

    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.write(target)
            w.write(chain)
            w.writeVarint(chainVersion)
            w.write(chunk)
            w.write(offset)
            w.writeVarint(version)
            w.writeUInt32LE(checksum)
            w.writeBool(fullReplace)
            w.write(tag)
            w.writeBool(durable)
        }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        self = try reader.readMessage("WriteArgs") { r throws(WireError) in
            WriteArgs(
                target: try r.read(TargetID.self), chain: try r.read(ChainID.self), chainVersion: try r.readVarint(),
                chunk: try r.read(ChunkID.self), offset: try r.read(Int.self), version: try r.readVarint(),
                checksum: try r.readUInt32LE(), fullReplace: try r.readBool(), tag: try r.read(ClientTag.self),
                durable: r.isAtEnd ? true : try r.readBool())
        }
    }
}

/// One chunk of a batched write: its whole new content is the next `length` bytes of
/// the request's bulk. From a client `version` is 0 (the head assigns it); along the
/// chain it is the version the head assigned, with the content's `checksum`.
public struct WriteBatchItem: Hashable, Sendable, WireCodable {
    public var chunk: ChunkID
    public var length: Int
    public var version: UInt64
    public var checksum: UInt32
    /// Replace whatever the receiver has (forwarding to a SYNCING target).
    public var fullReplace: Bool

    public init(chunk: ChunkID, length: Int, version: UInt64 = 0, checksum: UInt32 = 0, fullReplace: Bool = false) {
        self.chunk = chunk
        self.length = length
        self.version = version
        self.checksum = checksum
        self.fullReplace = fullReplace
    }

    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.write(chunk)
            w.write(length)
            w.writeVarint(version)
            w.writeUInt32LE(checksum)
            w.writeBool(fullReplace)
        }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        self = try reader.readMessage("WriteBatchItem") { r throws(WireError) in
            WriteBatchItem(chunk: try r.read(ChunkID.self), length: try r.read(Int.self), version: try r.readVarint(),
                           checksum: try r.readUInt32LE(), fullReplace: try r.readBool())
        }
    }
}

/// A replicated write of several chunks of one chain as one request (and, along the
/// chain, one forward): each item replaces its chunk's whole content. Every item of
/// a request from a client has version 0; along the chain every item has its version.
public struct WriteBatchArgs: Hashable, Sendable, WireCodable {
    public var target: TargetID
    public var chain: ChainID
    public var chainVersion: UInt64
    public var tag: ClientTag
    /// As `WriteArgs.durable`.
    public var durable: Bool
    public var items: [WriteBatchItem]

    public init(target: TargetID, chain: ChainID, chainVersion: UInt64, tag: ClientTag, durable: Bool, items: [WriteBatchItem]) {
        self.target = target
        self.chain = chain
        self.chainVersion = chainVersion
        self.tag = tag
        self.durable = durable
        self.items = items
    }

    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.write(target)
            w.write(chain)
            w.writeVarint(chainVersion)
            w.write(tag)
            w.writeBool(durable)
            w.write(items)
        }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        self = try reader.readMessage("WriteBatchArgs") { r throws(WireError) in
            WriteBatchArgs(target: try r.read(TargetID.self), chain: try r.read(ChainID.self), chainVersion: try r.readVarint(),
                           tag: try r.read(ClientTag.self), durable: try r.readBool(), items: try r.read([WriteBatchItem].self))
        }
    }
}

/// Requests the storage service serves. The method number is the wire tag.
public enum StorageRequest: Sendable, Equatable {
    case write(WriteArgs)
    /// The committed content of `chunk` on `target`.
    case read(target: TargetID, chain: ChainID, chainVersion: UInt64, chunk: ChunkID)
    /// Every chunk's metadata on `target` (a predecessor starting a resync asks).
    case dumpMeta(target: TargetID, chainVersion: UInt64)
    /// Removes `chunk` from `target` (resync of a chunk the predecessor does not have).
    case removeChunk(target: TargetID, chainVersion: UInt64, chunk: ChunkID)
    /// The predecessor finished resyncing `target`: it is up to date.
    case syncDone(target: TargetID, chainVersion: UInt64)
    /// The committed content of several chunks of one chain on `target` (at most
    /// `StorageLimits.batchChunksMax`); the reply's bulk holds their bytes in order.
    case readBatch(target: TargetID, chain: ChainID, chainVersion: UInt64, chunks: [ChunkID])
    /// The committed version and length of `chunk` on `target`, without its data.
    case statChunk(target: TargetID, chain: ChainID, chainVersion: UInt64, chunk: ChunkID)
    /// Several whole-chunk writes of one chain (at most `StorageLimits.writeBatchItemsMax`,
    /// `StorageLimits.writeBatchBytesMax` bytes); answered with `batchWritten`.
    case writeBatch(WriteBatchArgs)
    /// One page of the chunk metadata on `target`: at most `limit` chunks (capped at
    /// `StorageLimits.dumpPageEntriesMax`) whose ids follow `after`, answered with
    /// `metaPage`. A resync reads a target of any size in bounded messages.
    case dumpMetaPage(target: TargetID, chainVersion: UInt64, after: ChunkID?, limit: UInt32)
    /// `length` bytes at `offset` of the committed content of `chunk` (fewer at its
    /// end). The replica verifies the whole chunk's checksum first; the reply's
    /// checksum covers the bytes sent. For small reads: a 4 KiB read moves 4 KiB.
    case readRange(target: TargetID, chain: ChainID, chainVersion: UInt64, chunk: ChunkID, offset: UInt32, length: UInt32)

    public var method: UInt16 {
        switch self {
        case .write: return 1
        case .read: return 2
        case .dumpMeta: return 3
        case .removeChunk: return 4
        case .syncDone: return 5
        case .readBatch: return 6
        case .statChunk: return 7
        case .writeBatch: return 8
        case .dumpMetaPage: return 9
        case .readRange: return 10
        }
    }

    /// The files (inodes) whose chunks the request names.
    public var inodes: [UInt64] {
        switch self {
        case .write(let a): return [a.chunk.inode]
        case .writeBatch(let b): return b.items.map(\.chunk.inode)
        case .read(_, _, _, let c), .statChunk(_, _, _, let c), .readRange(_, _, _, let c, _, _): return [c.inode]
        case .readBatch(_, _, _, let chunks): return chunks.map(\.inode)
        case .dumpMeta, .syncDone, .dumpMetaPage, .removeChunk: return []
        }
    }

    /// What a capability must allow for this request: clients read and write; the
    /// resync and garbage-collection requests are for servers only.
    public var neededRights: Rights {
        switch self {
        case .write, .writeBatch: return .write
        case .read, .readBatch, .statChunk, .readRange: return .read
        case .dumpMeta, .syncDone, .dumpMetaPage, .removeChunk: return .service
        }
    }

    /// The request as a message, with `trailer` (token, capabilities) behind it.
    public func message(bulk: [UInt8] = [], trailer: AuthTrailer?) -> Message {
        var m = message(bulk: bulk)
        if let trailer { m.header = trailer.appended(to: m.header) }
        return m
    }

    /// The request and its trailer (nil if it has none).
    public static func decode(_ message: Message) throws(WireError) -> (StorageRequest, AuthTrailer?) {
        var r = WireReader(message.header)
        let request = try StorageRequest(reading: &r, method: message.method)
        return (request, try AuthTrailer.read(after: &r))
    }

    public func message(bulk: [UInt8] = []) -> Message {
        var w = WireWriter()
        w.writeMessage { m in
            switch self {
            case .write(let a): m.write(a)
            case .writeBatch(let a): m.write(a)
            case .read(let t, let c, let v, let chunk), .statChunk(let t, let c, let v, let chunk):
                m.write(t)
                m.write(c)
                m.writeVarint(v)
                m.write(chunk)
            case .dumpMeta(let t, let v), .syncDone(let t, let v):
                m.write(t)
                m.writeVarint(v)
            case .removeChunk(let t, let v, let chunk):
                m.write(t)
                m.writeVarint(v)
                m.write(chunk)
            case .readBatch(let t, let c, let v, let chunks):
                m.write(t)
                m.write(c)
                m.writeVarint(v)
                m.write(chunks)
            case .dumpMetaPage(let t, let v, let after, let limit):
                m.write(t)
                m.writeVarint(v)
                m.write(after)
                m.writeVarint(UInt64(limit))
            case .readRange(let t, let c, let v, let chunk, let offset, let length):
                m.write(t)
                m.write(c)
                m.writeVarint(v)
                m.write(chunk)
                m.write(offset)
                m.write(length)
            }
        }
        return Message(method: method, header: w.bytes, bulk: bulk)
    }

    public init(_ message: Message) throws(WireError) {
        var r = WireReader(message.header)
        try self.init(reading: &r, method: message.method)
    }

    init(reading r: inout WireReader, method: UInt16) throws(WireError) {
        self = try r.readMessage("StorageRequest") { m throws(WireError) -> StorageRequest in
            switch method {
            case 1: return .write(try m.read(WriteArgs.self))
            case 2: return .read(target: try m.read(TargetID.self), chain: try m.read(ChainID.self), chainVersion: try m.readVarint(), chunk: try m.read(ChunkID.self))
            case 3: return .dumpMeta(target: try m.read(TargetID.self), chainVersion: try m.readVarint())
            case 4: return .removeChunk(target: try m.read(TargetID.self), chainVersion: try m.readVarint(), chunk: try m.read(ChunkID.self))
            case 5: return .syncDone(target: try m.read(TargetID.self), chainVersion: try m.readVarint())
            case 7: return .statChunk(target: try m.read(TargetID.self), chain: try m.read(ChainID.self), chainVersion: try m.readVarint(), chunk: try m.read(ChunkID.self))
            case 8: return .writeBatch(try m.read(WriteBatchArgs.self))
            case 9:
                let t = try m.read(TargetID.self), v = try m.readVarint(), after = try m.read(ChunkID?.self)
                guard let limit = UInt32(exactly: try m.readVarint()) else { throw .invalidValue(what: "dumpMetaPage limit", detail: "beyond 2^32-1 entries") }
                return .dumpMetaPage(target: t, chainVersion: v, after: after, limit: limit)
            case 6:
                return .readBatch(target: try m.read(TargetID.self), chain: try m.read(ChainID.self), chainVersion: try m.readVarint(), chunks: try m.read([ChunkID].self))
            case 10:
                return .readRange(target: try m.read(TargetID.self), chain: try m.read(ChainID.self), chainVersion: try m.readVarint(), chunk: try m.read(ChunkID.self),
                                  offset: try m.read(UInt32.self), length: try m.read(UInt32.self))
            default: throw .unknownTag(type: "StorageRequest", tag: UInt64(method))
            }
        }
    }
}

public enum StorageLimits {
    /// Most chunks one batched read may ask for.
    public static let batchChunksMax = 1_024
    /// Most chunks one batched write may carry.
    public static let writeBatchItemsMax = 1_024
    /// Most bulk bytes one batched write may carry (far below the transport's message
    /// limit, so a forward never nears it).
    public static let writeBatchBytesMax = 32 << 20
    /// Bytes a client puts in one batched write or asks for in one batched read: big
    /// enough to amortize a request, small enough that several are in flight at once.
    public static let subBatchBytesTarget = 1 << 20
    /// Most chunks one page of a metadata dump carries (about 400 KiB of metadata).
    public static let dumpPageEntriesMax = 8_192
}

/// One chunk's result in a batched read; data of `.data` items is in the reply's
/// bulk, in order, `length` bytes each.
public struct BatchReadItem: Hashable, Sendable, WireCodable {
    public enum Status: UInt8, Sendable, WireEnum {
        case data = 1, notFound, notCommitted, corrupt, failed
    }
    public var chunk: ChunkID
    public var status: Status
    public var version: UInt64
    public var checksum: UInt32
    public var length: Int
    public init(chunk: ChunkID, status: Status, version: UInt64 = 0, checksum: UInt32 = 0, length: Int = 0) {
        self.chunk = chunk
        self.status = status
        self.version = version
        self.checksum = checksum
        self.length = length
    }
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.write(chunk)
            w.write(status)
            w.writeVarint(version)
            w.writeUInt32LE(checksum)
            w.write(length)
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        (chunk, status, version, checksum, length) = try reader.readMessage("BatchReadItem") { r throws(WireError) in
            (try r.read(ChunkID.self), try r.read(Status.self), try r.readVarint(), try r.readUInt32LE(), try r.read(Int.self))
        }
    }
}

/// The storage service's answers. Data travels in the message's bulk part.
public enum StorageReply: Sendable, Equatable, WireCodable {
    case written(version: UInt64)
    case data(version: UInt64, checksum: UInt32)
    /// A write of this chunk is in flight: retry shortly (3FS does not ask the tail).
    case notCommitted
    case notFound
    /// The sender's chain version is not ours: refresh routing and retry.
    case chainVersionMismatch(current: UInt64)
    /// This target does not serve this request now (not in the chain, not SERVING, or
    /// its node is recovering); the text says which.
    case notServing(String)
    /// This replica's copy failed its checksum; read another replica (this one is
    /// being repaired).
    case corrupt
    case meta([ChunkMeta])
    case done
    case failed(String)
    case batch([BatchReadItem])
    case chunkStat(version: UInt64, length: Int)
    /// One answer per item of a `writeBatch`, in order (`written` or why not).
    case batchWritten([StorageReply])
    /// A replica's disk has no room for the write; the text names the target, its
    /// node and path, and the fix. Retrying does not help until space is freed.
    case noSpace(String)
    /// One page of a target's chunk metadata, sorted by id; `more` when chunks with
    /// larger ids follow (ask again after the last one).
    case metaPage([ChunkMeta], more: Bool)
    /// The request carried no valid capability for a chunk it names (or a server-only
    /// request came from a client); the text says which. Not retried.
    case forbidden(String)

    public func encode(to writer: inout WireWriter) {
        switch self {
        case .written(let v):
            writer.writeVarint(1)
            writer.writeMessage { $0.writeVarint(v) }
        case .data(let v, let c):
            writer.writeVarint(2)
            writer.writeMessage { w in
                w.writeVarint(v)
                w.writeUInt32LE(c)
            }
        case .notCommitted: writer.writeVarint(3); writer.writeMessage { _ in }
        case .notFound: writer.writeVarint(4); writer.writeMessage { _ in }
        case .chainVersionMismatch(let v):
            writer.writeVarint(5)
            writer.writeMessage { $0.writeVarint(v) }
        case .notServing(let why):
            writer.writeVarint(6)
            writer.writeMessage { $0.writeString(why) }
        case .corrupt: writer.writeVarint(7); writer.writeMessage { _ in }
        case .meta(let metas):
            writer.writeVarint(8)
            writer.writeMessage { $0.write(metas) }
        case .done: writer.writeVarint(9); writer.writeMessage { _ in }
        case .failed(let why):
            writer.writeVarint(10)
            writer.writeMessage { $0.writeString(why) }
        case .batch(let items):
            writer.writeVarint(11)
            writer.writeMessage { $0.write(items) }
        case .chunkStat(let v, let l):
            writer.writeVarint(12)
            writer.writeMessage { w in
                w.writeVarint(v)
                w.write(l)
            }
        case .batchWritten(let replies):
            writer.writeVarint(13)
            writer.writeMessage { $0.write(replies) }
        case .noSpace(let why):
            writer.writeVarint(14)
            writer.writeMessage { $0.writeString(why) }
        case .metaPage(let metas, let more):
            writer.writeVarint(15)
            writer.writeMessage { w in
                w.write(metas)
                w.write(more)
            }
        case .forbidden(let why):
            writer.writeVarint(16)
            writer.writeMessage { $0.writeString(why) }
        }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let tag = try reader.readVarint("StorageReply tag")
        self = try reader.readMessage("StorageReply") { m throws(WireError) -> StorageReply in
            switch tag {
            case 1: return .written(version: try m.readVarint())
            case 2: return .data(version: try m.readVarint(), checksum: try m.readUInt32LE())
            case 3: return .notCommitted
            case 4: return .notFound
            case 5: return .chainVersionMismatch(current: try m.readVarint())
            case 6: return .notServing(try m.readString())
            case 7: return .corrupt
            case 8: return .meta(try m.read([ChunkMeta].self))
            case 9: return .done
            case 10: return .failed(try m.readString())
            case 11: return .batch(try m.read([BatchReadItem].self))
            case 12: return .chunkStat(version: try m.readVarint(), length: try m.read(Int.self))
            case 13:
                // Item answers are never batches themselves: refusing a nested tag
                // before decoding it bounds the recursion a crafted message could force.
                let count = try m.readVarint("batchWritten count")
                guard count <= UInt64(m.remaining) else { throw .truncated(what: "batchWritten of \(count) replies", offset: m.offset, needed: Int(clamping: count) - m.remaining) }
                var replies: [StorageReply] = []
                for _ in 0..<count {
                    var peek = m
                    if try peek.readVarint("StorageReply tag") == 13 { throw .invalidValue(what: "StorageReply", detail: "a batchWritten item is itself a batchWritten") }
                    replies.append(try m.read(StorageReply.self))
                }
                return .batchWritten(replies)
            case 14: return .noSpace(try m.readString())
            case 15: return .metaPage(try m.read([ChunkMeta].self), more: try m.read(Bool.self))
            case 16: return .forbidden(try m.readString())
            default: throw .unknownTag(type: "StorageReply", tag: tag)
            }
        }
    }
}
