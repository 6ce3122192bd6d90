import CisternCore
import NIOCore

/// Splits a TCP byte stream into `TCPFrame`s. Throws `TCPFrameError` on the first
/// malformed frame (checked before its body is buffered), after which the channel's
/// handler closes the connection.
struct TCPFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = TCPFrame

    let limitBytes: Int

    init(limitBytes: Int = TransportLimits.messageBytesMax) {
        self.limitBytes = limitBytes
    }

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try TCPFrame.decode(from: &buffer, limitBytes: limitBytes) else {
            // A large frame arrives in many reads: make room for the rest of it at once
            // instead of the cumulation buffer doubling (and copying) its way there, but
            // never more than the bytes already received plus 1 MiB, so a peer that
            // only announces a large frame cannot make this side allocate it.
            if let total = TCPFrame.encodedLength(at: buffer), total > buffer.readableBytes {
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
