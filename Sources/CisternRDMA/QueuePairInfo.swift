import CisternCore
import CisternWire

/// A 16-byte global identifier of an RDMA port (an IPv6-formatted address; on RoCE it
/// is derived from the interface's IP address).
public struct RDMAGID: Hashable, Sendable, CustomStringConvertible {
    /// The 16 bytes, in network order.
    public let bytes: [UInt8]

    /// The GID of exactly 16 `bytes`; nil for any other count.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    /// All zeros: no global route (InfiniBand within one subnet uses the LID alone).
    public static let zero = RDMAGID(uncheckedBytes: [UInt8](repeating: 0, count: 16))

    private init(uncheckedBytes: [UInt8]) { bytes = uncheckedBytes }

    /// True for the all-zero GID.
    public var isZero: Bool { bytes.allSatisfy { $0 == 0 } }

    /// The GID in IPv6 notation (eight groups of hex digits).
    public var description: String {
        stride(from: 0, to: 16, by: 2).map { i in
            String(UInt16(bytes[i]) << 8 | UInt16(bytes[i + 1]), radix: 16)
        }.joined(separator: ":")
    }
}

/// An RDMA path MTU. The raw values are libibverbs' `enum ibv_mtu`.
public enum RDMAPathMTU: UInt8, WireEnum, Comparable, CustomStringConvertible {
    /// 256 bytes.
    case bytes256 = 1
    /// 512 bytes.
    case bytes512 = 2
    /// 1024 bytes.
    case bytes1024 = 3
    /// 2048 bytes.
    case bytes2048 = 4
    /// 4096 bytes.
    case bytes4096 = 5

    /// The MTU in bytes.
    public var byteCount: Int { 128 << Int(rawValue) }

    /// Orders MTUs by size.
    public static func < (a: RDMAPathMTU, b: RDMAPathMTU) -> Bool { a.rawValue < b.rawValue }

    /// The MTU in bytes, as a number.
    public var description: String { "\(byteCount)" }
}

/// A registered buffer as a peer names it: where it starts, how long it is, and the
/// rkey that RDMA READ and WRITE must present.
public struct RemoteBuffer: Hashable, Sendable, CustomStringConvertible {
    /// The first byte's address in the owner's address space.
    public var address: UInt64
    /// The length in bytes.
    public var length: UInt64
    /// The remote key of the memory region holding the buffer.
    public var rkey: UInt32

    /// The buffer of `length` bytes at `address` with `rkey`.
    public init(address: UInt64, length: UInt64, rkey: UInt32) {
        self.address = address
        self.length = length
        self.rkey = rkey
    }

    /// The buffer as a `MemoryRegion` entry of a peer's table (no lkey).
    public var region: MemoryRegion { MemoryRegion(address: address, length: length, lkey: 0, rkey: rkey) }

    /// The buffer's address, length and rkey.
    public var description: String { "0x\(String(address, radix: 16))+\(length) rkey 0x\(String(rkey, radix: 16))" }
}

/// What each side of a reliable-connected queue pair tells the other to connect: the
/// QP number and first packet sequence number, the port's LID and GID, the path MTU
/// and READ depth it accepts, and the registered buffer the peer may access. The
/// caller sends one in its connect request over TCP and the serving side answers
/// with its own.
///
/// Wire layout (see `CisternWire` for varints and nested messages):
///
/// ```
/// field                 encoding
/// magic                 4 bytes, 0x51445243 little-endian ("CRDQ")
/// format version        varint, 1
/// body                  nested message (varint length, then):
///   node                  varint  NodeID of the sender
///   connection id         varint  chosen by the connecting side, echoed by the other
///   queue pair number     varint  < 2^24
///   packet sequence no.   varint  < 2^24
///   lid                   varint  < 2^16
///   gid                   16 raw bytes
///   path MTU              varint  1...5 (ibv_mtu)
///   READ depth            varint  1...255
///   buffer address        varint
///   buffer length         varint  address + length < 2^64
///   buffer rkey           varint  < 2^32
///   landing bytes         varint  <= buffer length
/// ```
///
/// Decoding rejects a wrong magic, an unknown version, truncated or trailing bytes
/// and any field outside its range with a `WireError` that names the field; fields
/// a newer sender appends to the body are skipped.
public struct QueuePairInfo: Hashable, Sendable, WireCodable {
    /// "CRDQ" as a little-endian 32-bit integer.
    public static let magic: UInt32 = 0x5144_5243
    /// The format this build writes and reads.
    public static let formatVersion: UInt64 = 1
    /// The largest queue pair number and packet sequence number (24 bits).
    public static let twentyFourBitMax: UInt32 = 0xFF_FFFF

    /// The node that sent this.
    public var node: NodeID
    /// The connection's id, chosen by the connecting side.
    public var connectionID: UInt64
    /// The sender's queue pair number.
    public var queuePairNumber: UInt32
    /// The first packet sequence number the sender's queue pair sends with.
    public var packetSequenceNumber: UInt32
    /// The local identifier of the sender's port (InfiniBand; 0 on RoCE).
    public var lid: UInt16
    /// The GID of the sender's port (zero when it routes by LID alone).
    public var gid: RDMAGID
    /// The sender port's active MTU; both sides use the smaller of the two.
    public var pathMTU: RDMAPathMTU
    /// How many RDMA READs the sender's queue pair serves at once, and issues at once.
    public var readDepth: UInt8
    /// The sender's registered buffer for this connection.
    public var buffer: RemoteBuffer
    /// The bytes at the start of `buffer` the peer may fill with RDMA WRITE; the rest
    /// (if any) holds data the peer fetches with RDMA READ.
    public var landingBytes: UInt64

    /// Describes one side of a connection (see the properties).
    public init(
        node: NodeID, connectionID: UInt64, queuePairNumber: UInt32, packetSequenceNumber: UInt32, lid: UInt16,
        gid: RDMAGID, pathMTU: RDMAPathMTU, readDepth: UInt8, buffer: RemoteBuffer, landingBytes: UInt64
    ) {
        self.node = node
        self.connectionID = connectionID
        self.queuePairNumber = queuePairNumber
        self.packetSequenceNumber = packetSequenceNumber
        self.lid = lid
        self.gid = gid
        self.pathMTU = pathMTU
        self.readDepth = readDepth
        self.buffer = buffer
        self.landingBytes = landingBytes
    }

    /// Writes the layout described above.
    public func encode(to writer: inout WireWriter) {
        writer.writeUInt32LE(Self.magic)
        writer.writeVarint(Self.formatVersion)
        writer.writeMessage { w in
            w.write(node)
            w.writeVarint(connectionID)
            w.writeVarint(UInt64(queuePairNumber))
            w.writeVarint(UInt64(packetSequenceNumber))
            w.writeVarint(UInt64(lid))
            w.writeRaw(gid.bytes)
            w.write(pathMTU)
            w.writeVarint(UInt64(readDepth))
            w.writeVarint(buffer.address)
            w.writeVarint(buffer.length)
            w.writeVarint(UInt64(buffer.rkey))
            w.writeVarint(landingBytes)
        }
    }

    /// Reads the layout described above, checking magic, version and every field's range.
    public init(from reader: inout WireReader) throws(WireError) {
        let magic = try reader.readUInt32LE("QueuePairInfo magic")
        guard magic == Self.magic else {
            throw .invalidValue(
                what: "QueuePairInfo magic",
                detail: "0x\(String(magic, radix: 16)), expected 0x\(String(Self.magic, radix: 16)); the peer is not a Cistern RDMA endpoint")
        }
        let version = try reader.readVarint("QueuePairInfo format version")
        guard version == Self.formatVersion else {
            throw .invalidValue(
                what: "QueuePairInfo format version", detail: "\(version), this build reads \(Self.formatVersion)")
        }
        self = try reader.readMessage("QueuePairInfo") { r throws(WireError) in
            let node = try r.read(NodeID.self)
            let connectionID = try r.readVarint("connection id")
            let qpn = try Self.bounded(r.readVarint("queue pair number"), max: UInt64(Self.twentyFourBitMax), "queue pair number")
            let psn = try Self.bounded(r.readVarint("packet sequence number"), max: UInt64(Self.twentyFourBitMax), "packet sequence number")
            let lid = try Self.bounded(r.readVarint("lid"), max: UInt64(UInt16.max), "lid")
            let gidBytes = try r.readRaw(count: 16, "gid")
            guard let gid = RDMAGID(bytes: gidBytes) else {
                throw WireError.invalidValue(what: "gid", detail: "\(gidBytes.count) bytes, expected 16")
            }
            let mtu = try r.read(RDMAPathMTU.self)
            let depth = try Self.bounded(r.readVarint("READ depth"), max: UInt64(UInt8.max), "READ depth")
            guard depth >= 1 else { throw WireError.invalidValue(what: "READ depth", detail: "0, expected 1...255") }
            let address = try r.readVarint("buffer address")
            let length = try r.readVarint("buffer length")
            guard !address.addingReportingOverflow(length).overflow else {
                throw WireError.invalidValue(what: "buffer", detail: "address 0x\(String(address, radix: 16)) + length \(length) wraps")
            }
            let rkey = try Self.bounded(r.readVarint("buffer rkey"), max: UInt64(UInt32.max), "buffer rkey")
            let landing = try r.readVarint("landing bytes")
            guard landing <= length else {
                throw WireError.invalidValue(what: "landing bytes", detail: "\(landing), more than the buffer's \(length)")
            }
            return QueuePairInfo(
                node: node, connectionID: connectionID, queuePairNumber: UInt32(qpn), packetSequenceNumber: UInt32(psn),
                lid: UInt16(lid), gid: gid, pathMTU: mtu, readDepth: UInt8(depth),
                buffer: RemoteBuffer(address: address, length: length, rkey: UInt32(rkey)), landingBytes: landing)
        }
    }

    private static func bounded(_ value: UInt64, max: UInt64, _ what: String) throws(WireError) -> UInt64 {
        guard value <= max else { throw .invalidValue(what: what, detail: "\(value) exceeds \(max)") }
        return value
    }
}
