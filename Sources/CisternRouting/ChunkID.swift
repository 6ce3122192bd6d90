import CisternWire

/// A chunk's identity: the file (inode) it belongs to and its index in the file.
public struct ChunkID: Hashable, Comparable, Sendable, WireCodable, CustomStringConvertible {
    public var inode: UInt64
    public var index: UInt64
    public init(inode: UInt64, index: UInt64) {
        self.inode = inode
        self.index = index
    }
    public static func < (a: ChunkID, b: ChunkID) -> Bool { (a.inode, a.index) < (b.inode, b.index) }
    public var description: String { "chunk(\(inode):\(index))" }
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.writeVarint(inode)
            w.writeVarint(index)
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        (inode, index) = try reader.readMessage("ChunkID") { r throws(WireError) in (try r.readVarint(), try r.readVarint()) }
    }
}
