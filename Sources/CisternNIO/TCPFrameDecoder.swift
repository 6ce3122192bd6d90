import CisternCore
import CisternWire
import NIOCore

/// Cuts a TCP byte stream into `TCPFrame`s, touching each large bulk once: as soon as
/// a frame's fixed part and header are in, a bulk of `streamedBulkBytesMin` or more is
/// copied piece by piece, straight from the bytes each socket read delivered into the
/// frame's own array, with the CRC computed on the same pass while the bytes are in
/// cache. Smaller frames are taken whole once they have arrived.
///
/// Without this the channel collected a large frame in one growing buffer first
/// (appending every read after the first to it), checksummed it, and then copied its
/// bulk out: three passes over every byte received instead of one.
public struct TCPFrameStream: Sendable {
    /// Bulks at least this large are streamed.
    public static let streamedBulkBytesMin = 64 << 10

    public let limitBytes: Int
    /// A large frame being received: its fixed fields and header, the bulk so far (in
    /// `frame.bulk`), how long the bulk is, and the CRC of everything so far.
    private var partial: (frame: TCPFrame, bulkLength: Int, crc: UInt32)?

    public init(limitBytes: Int = TransportLimits.messageBytesMax) {
        self.limitBytes = limitBytes
    }

    /// Whether a large frame is half received (a stream that ends here was cut).
    public var isInsideFrame: Bool { partial != nil }

    /// The next whole frame, taken off the front of `buffer`; nil when more bytes are
    /// needed (a large frame's bulk bytes seen so far are consumed into it). Throws on
    /// the first malformed frame, as `TCPFrame.decode` does.
    public mutating func next(from buffer: inout ByteBuffer) throws(TCPFrameError) -> TCPFrame? {
        if partial == nil {
            guard let (head, bulkLength) = try TCPFrame.decodeHead(from: buffer, limitBytes: limitBytes) else { return nil }
            guard bulkLength >= Self.streamedBulkBytesMin else { return try TCPFrame.decodeBody(head, bulkLength: bulkLength, from: &buffer) }
            let headBytes = TCPFrame.fixedBytes + head.header.count
            let crc = buffer.withUnsafeReadableBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<headBytes])) }
            buffer.moveReaderIndex(forwardBy: headBytes)
            var frame = head
            frame.bulk.reserveCapacity(bulkLength)
            partial = (frame, bulkLength, crc)
        }
        guard var p = partial else { return nil }
        partial = nil  // the bulk is appended to uniquely referenced
        let n = min(buffer.readableBytes, p.bulkLength - p.frame.bulk.count)
        if n > 0 {
            buffer.withUnsafeReadableBytes { raw in
                let piece = UnsafeRawBufferPointer(rebasing: raw[0..<n])
                p.crc = CRC32C.checksum(piece, continuing: p.crc)
                p.frame.bulk.append(contentsOf: piece.assumingMemoryBound(to: UInt8.self))
            }
            buffer.moveReaderIndex(forwardBy: n)
        }
        guard p.frame.bulk.count == p.bulkLength, let stored = buffer.readInteger(as: UInt32.self) else {
            partial = p
            return nil
        }
        guard stored == p.crc else { throw .checksumMismatch(stored: stored, computed: p.crc) }
        return p.frame
    }
}

/// Splits a TCP byte stream into `TCPFrame`s (with `TCPFrameStream`). Throws
/// `TCPFrameError` on the first malformed frame (checked before its body is
/// buffered), after which the channel's handler closes the connection.
struct TCPFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = TCPFrame

    private var stream: TCPFrameStream

    init(limitBytes: Int = TransportLimits.messageBytesMax) {
        stream = TCPFrameStream(limitBytes: limitBytes)
    }

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try stream.next(from: &buffer) else {
            // A small frame still arriving waits whole; make room for the rest of it
            // at once (at most the bytes already received plus 1 MiB, so a peer that
            // only announces a frame cannot make this side allocate it).
            if !stream.isInsideFrame, let total = TCPFrame.encodedLength(at: buffer), total > buffer.readableBytes {
                let remaining = total - buffer.readableBytes
                buffer.reserveCapacity(minimumWritableBytes: min(remaining, max(buffer.readableBytes, 1 << 20)))
            }
            return .needMoreData
        }
        context.fireChannelRead(Self.wrapInboundOut(frame))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        try decode(context: context, buffer: &buffer)
    }
}
