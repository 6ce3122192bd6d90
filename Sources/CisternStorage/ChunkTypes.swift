import CisternCore
import CisternWire
import CisternRouting

/// Block sizes of the chunk engine: powers of two from 64 KiB to 64 MiB (11 classes,
/// as in 3FS). A chunk lives in the smallest block that holds it.
public struct SizeClass: Hashable, Comparable, Sendable, WireCodable, CustomStringConvertible {
    public let index: Int
    public static let count = 11
    public static let smallestBytes = 64 << 10
    public static let largestBytes = 64 << 20

    public init?(index: Int) {
        guard (0..<Self.count).contains(index) else { return nil }
        self.index = index
    }

    /// The smallest class holding `length` bytes, or nil when it exceeds 64 MiB.
    public static func fitting(_ length: Int) -> SizeClass? {
        guard length >= 0, length <= largestBytes else { return nil }
        var i = 0
        while (smallestBytes << i) < length { i += 1 }
        return SizeClass(index: i)
    }

    public var blockBytes: Int { Self.smallestBytes << index }
    public static func < (a: SizeClass, b: SizeClass) -> Bool { a.index < b.index }
    public var description: String { "\(blockBytes >> 10)KiB" }
    public func encode(to writer: inout WireWriter) { writer.writeVarint(UInt64(index)) }
    public init(from reader: inout WireReader) throws(WireError) {
        let v = try reader.readVarint("size class")
        guard v < UInt64(Self.count) else { throw .invalidValue(what: "size class", detail: "\(v) is not in 0..<\(Self.count)") }
        index = Int(v)
    }
}

/// Where a block lives: size class, file number within the class, block number within
/// the file. The file is `chunks/<class KiB>-<file>.data`; the block starts at
/// `block * blockBytes`.
public struct BlockAddress: Hashable, Comparable, Sendable, WireCodable, CustomStringConvertible {
    public var sizeClass: SizeClass
    public var file: UInt32
    public var block: UInt32
    public init(sizeClass: SizeClass, file: UInt32, block: UInt32) {
        self.sizeClass = sizeClass
        self.file = file
        self.block = block
    }
    public static func < (a: BlockAddress, b: BlockAddress) -> Bool { (a.sizeClass.index, a.file, a.block) < (b.sizeClass.index, b.file, b.block) }
    public var path: String { Self.path(sizeClass, file) }
    public static func path(_ c: SizeClass, _ file: UInt32) -> String { "chunks/\(c.blockBytes >> 10)k-\(file).data" }
    public var offset: UInt64 { UInt64(block) * UInt64(sizeClass.blockBytes) }
    public var description: String { "\(path)#\(block)" }
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.write(sizeClass)
            w.write(file)
            w.write(block)
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        (sizeClass, file, block) = try reader.readMessage("BlockAddress") { r throws(WireError) in
            (try r.read(SizeClass.self), try r.read(UInt32.self), try r.read(UInt32.self))
        }
    }
}

/// One stored version of a chunk: its number, the chain version it was written
/// under, its length and checksum, and the block holding it.
public struct ChunkVersion: Hashable, Sendable, WireCodable {
    public var version: UInt64
    public var chainVersion: UInt64
    public var length: Int
    public var checksum: UInt32
    public var block: BlockAddress
    public init(version: UInt64, chainVersion: UInt64, length: Int, checksum: UInt32, block: BlockAddress) {
        self.version = version
        self.chainVersion = chainVersion
        self.length = length
        self.checksum = checksum
        self.block = block
    }
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.writeVarint(version)
            w.writeVarint(chainVersion)
            w.write(length)
            w.writeUInt32LE(checksum)
            w.write(block)
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        (version, chainVersion, length, checksum, block) = try reader.readMessage("ChunkVersion") { r throws(WireError) in
            (try r.readVarint(), try r.readVarint(), try r.read(Int.self), try r.readUInt32LE(), try r.read(BlockAddress.self))
        }
    }
}

/// A chunk's metadata: the committed version readers get, and at most one pending
/// version (CRAQ: written, not yet committed by the tail; `pending.version ==
/// committed.version + 1`).
public struct ChunkMeta: Hashable, Sendable, WireCodable {
    public var id: ChunkID
    public var committed: ChunkVersion?
    public var pending: ChunkVersion?
    public init(id: ChunkID, committed: ChunkVersion? = nil, pending: ChunkVersion? = nil) {
        self.id = id
        self.committed = committed
        self.pending = pending
    }
    public var blocks: [BlockAddress] { [committed?.block, pending?.block].compactMap { $0 } }
    /// The pending version when one is staged, else the committed one.
    public var newest: ChunkVersion? { pending ?? committed }
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.write(id)
            w.write(committed)
            w.write(pending)
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        (id, committed, pending) = try reader.readMessage("ChunkMeta") { r throws(WireError) in
            (try r.read(ChunkID.self), try r.read(ChunkVersion?.self), try r.read(ChunkVersion?.self))
        }
    }
}
