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
        guard let frame = try TCPFrame.decode(from: &buffer, limitBytes: limitBytes) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(frame))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        try decode(context: context, buffer: &buffer)
    }
}
