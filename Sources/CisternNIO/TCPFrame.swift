import CisternCore
import CisternWire
import NIOCore

/// One request, response or error response of `TCPTransport`, as it travels on a
/// TCP connection. Every integer is big-endian (network order).
///
/// ```
/// offset  size  field
///      0     4  magic            0x4353544E ("CSTN")
///      4     1  format version   1
///      5     1  kind             0 request, 1 response, 2 error response
///      6     8  request id       chosen by the caller, echoed in the reply
///     14     4  source node      the sender's NodeID
///     18     4  destination node the NodeID the sender means to reach
///     22     2  service          ServiceID
///     24     2  method           Message.method; in an error response, the ErrorCode
///     26     4  header length    H
///     30     4  bulk length      B   (H + B <= TransportLimits.messageBytesMax)
///     34     H  header bytes     (error response: the error text, UTF-8)
///   34+H     B  bulk bytes
/// 34+H+B     4  CRC-32C          over bytes 0 ..< 34+H+B
/// ```
///
/// Decoding checks magic, version, kind and the lengths as soon as the fixed
/// part has arrived, before any body is buffered, and the checksum once the frame
/// is complete. Malformed input always ends in a `TCPFrameError`, never a trap.
public struct TCPFrame: Sendable, Equatable {
    /// What a frame is.
    public enum Kind: UInt8, Sendable {
        case request = 0
        case response = 1
        case errorResponse = 2
    }

    /// Why an error response was sent; carried in the `method` field.
    public enum ErrorCode: UInt16, Sendable {
        /// The handler threw; the header holds the error's description.
        case handlerFailed = 1
        /// The node does not serve the requested service.
        case noSuchService = 2
        /// The request was meant for another node than the one listening at the address.
        case wrongNode = 3
        /// The connection has too many requests in flight on the serving side.
        case overloaded = 4
    }

    /// "CSTN" read as a big-endian 32-bit integer.
    public static let magic: UInt32 = 0x4353_544E
    public static let formatVersion: UInt8 = 1
    /// Bytes before the header bytes.
    public static let fixedBytes = 34
    /// Bytes after the bulk bytes (the checksum).
    public static let trailerBytes = 4

    public var kind: Kind
    public var requestID: UInt64
    public var source: NodeID
    public var destination: NodeID
    public var service: ServiceID
    public var method: UInt16
    public var header: [UInt8]
    public var bulk: [UInt8]

    public init(
        kind: Kind, requestID: UInt64, source: NodeID, destination: NodeID, service: ServiceID,
        method: UInt16, header: [UInt8], bulk: [UInt8] = []
    ) {
        self.kind = kind
        self.requestID = requestID
        self.source = source
        self.destination = destination
        self.service = service
        self.method = method
        self.header = header
        self.bulk = bulk
    }

    /// The number of bytes this frame takes on the wire.
    public var encodedByteCount: Int { Self.fixedBytes + header.count + bulk.count + Self.trailerBytes }

    /// The frame's bytes.
    public func encoded() -> [UInt8] {
        let buffer = encodedBuffer()
        return buffer.getBytes(at: buffer.readerIndex, length: buffer.readableBytes) ?? []
    }

    /// Decodes the first frame of `bytes`: nil when `bytes` is a valid but incomplete
    /// beginning of a frame, the frame and the number of bytes it took otherwise.
    public static func decode(
        _ bytes: [UInt8], limitBytes: Int = TransportLimits.messageBytesMax
    ) throws(TCPFrameError) -> (frame: TCPFrame, consumedBytes: Int)? {
        var buffer = ByteBuffer(bytes: bytes)
        guard let frame = try decode(from: &buffer, limitBytes: limitBytes) else { return nil }
        return (frame, bytes.count - buffer.readableBytes)
    }

    func encodedBuffer() -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: encodedByteCount)
        buffer.writeInteger(Self.magic)
        buffer.writeInteger(Self.formatVersion)
        buffer.writeInteger(kind.rawValue)
        buffer.writeInteger(requestID)
        buffer.writeInteger(source.rawValue)
        buffer.writeInteger(destination.rawValue)
        buffer.writeInteger(service.rawValue)
        buffer.writeInteger(method)
        buffer.writeInteger(UInt32(truncatingIfNeeded: header.count))
        buffer.writeInteger(UInt32(truncatingIfNeeded: bulk.count))
        buffer.writeBytes(header)
        buffer.writeBytes(bulk)
        let crc = buffer.withUnsafeReadableBytes { CRC32C.checksum($0) }
        buffer.writeInteger(crc)
        return buffer
    }

    /// The whole length of the frame starting at `buffer`'s reader index, once its fixed
    /// fields are there (nil before); only for sizing buffers: `decode` checks the rest.
    static func encodedLength(at buffer: ByteBuffer) -> Int? {
        let start = buffer.readerIndex
        guard buffer.readableBytes >= Self.fixedBytes,
            let headerLength = buffer.getInteger(at: start + 26, as: UInt32.self),
            let bulkLength = buffer.getInteger(at: start + 30, as: UInt32.self)
        else { return nil }
        return Self.fixedBytes + Int(headerLength) + Int(bulkLength) + Self.trailerBytes
    }

    /// The fixed fields and header of the frame starting at `buffer`'s reader index,
    /// with its bulk's length (the frame's `bulk` is empty): nil (consuming nothing)
    /// until the fixed part and the header have arrived. Throws as soon as the bytes
    /// seen cannot begin a valid frame: each fixed field is checked as soon as it is
    /// there, and the lengths before any body is buffered.
    static func decodeHead(
        from buffer: ByteBuffer, limitBytes: Int = TransportLimits.messageBytesMax
    ) throws(TCPFrameError) -> (frame: TCPFrame, bulkLength: Int)? {
        let start = buffer.readerIndex
        let available = buffer.readableBytes
        if available >= 4, let magic = buffer.getInteger(at: start, as: UInt32.self), magic != Self.magic {
            throw .badMagic(found: magic)
        }
        if available >= 5, let version = buffer.getInteger(at: start + 4, as: UInt8.self), version != Self.formatVersion {
            throw .unsupportedVersion(found: version)
        }
        if available >= 6, let rawKind = buffer.getInteger(at: start + 5, as: UInt8.self), Kind(rawValue: rawKind) == nil {
            throw .unknownKind(found: rawKind)
        }
        guard available >= Self.fixedBytes,
            let rawKind = buffer.getInteger(at: start + 5, as: UInt8.self),
            let kind = Kind(rawValue: rawKind),
            let requestID = buffer.getInteger(at: start + 6, as: UInt64.self),
            let source = buffer.getInteger(at: start + 14, as: UInt32.self),
            let destination = buffer.getInteger(at: start + 18, as: UInt32.self),
            let service = buffer.getInteger(at: start + 22, as: UInt16.self),
            let method = buffer.getInteger(at: start + 24, as: UInt16.self),
            let headerLength = buffer.getInteger(at: start + 26, as: UInt32.self),
            let bulkLength = buffer.getInteger(at: start + 30, as: UInt32.self)
        else { return nil }
        guard UInt64(headerLength) + UInt64(bulkLength) <= UInt64(max(limitBytes, 0)) else {
            throw .tooLarge(headerBytes: Int(headerLength), bulkBytes: Int(bulkLength), limitBytes: limitBytes)
        }
        guard let header = buffer.getBytes(at: start + Self.fixedBytes, length: Int(headerLength)) else { return nil }
        let frame = TCPFrame(
            kind: kind, requestID: requestID, source: NodeID(source), destination: NodeID(destination),
            service: ServiceID(service), method: method, header: header)
        return (frame, Int(bulkLength))
    }

    /// Takes one frame off the front of `buffer`: nil (consuming nothing) when more
    /// bytes are needed. Throws as soon as the bytes seen cannot begin a valid frame.
    static func decode(
        from buffer: inout ByteBuffer, limitBytes: Int = TransportLimits.messageBytesMax
    ) throws(TCPFrameError) -> TCPFrame? {
        guard let (head, bulkLength) = try decodeHead(from: buffer, limitBytes: limitBytes) else { return nil }
        return try decodeBody(head, bulkLength: bulkLength, from: &buffer)
    }

    /// The rest of `decode` once `decodeHead` gave `head`: the whole frame taken off
    /// `buffer` once its bulk and checksum are in (nil, consuming nothing, before).
    static func decodeBody(_ head: TCPFrame, bulkLength: Int, from buffer: inout ByteBuffer) throws(TCPFrameError) -> TCPFrame? {
        let start = buffer.readerIndex
        let bodyEnd = Self.fixedBytes + head.header.count + bulkLength
        guard buffer.readableBytes >= bodyEnd + Self.trailerBytes,
            let stored = buffer.getInteger(at: start + bodyEnd, as: UInt32.self)
        else { return nil }
        let computed = buffer.withUnsafeReadableBytes { raw in
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<bodyEnd]))
        }
        guard computed == stored else { throw .checksumMismatch(stored: stored, computed: computed) }
        guard let bulk = buffer.getBytes(at: start + Self.fixedBytes + head.header.count, length: bulkLength) else { return nil }
        buffer.moveReaderIndex(forwardBy: bodyEnd + Self.trailerBytes)
        var frame = head
        frame.bulk = bulk
        return frame
    }
}
