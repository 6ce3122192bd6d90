import CisternCore
import Logging
import NIOCore

/// The end of an inbound connection's pipeline: runs each request's handler in its
/// own task and writes back a response or an error response with the same request
/// id. A malformed frame, or a frame that is not a request, closes the connection.
final class TCPServerHandler: ChannelInboundHandler {
    typealias InboundIn = TCPFrame

    private let transport: TCPTransport
    private let logger: Logger
    private let inFlight = TCPInFlightCounter()
    private var peerDescription = "?"

    init(transport: TCPTransport, logger: Logger) {
        self.transport = transport
        self.logger = logger
    }

    func channelActive(context: ChannelHandlerContext) {
        if let remote = context.remoteAddress {
            peerDescription = NodeAddress(host: remote.ipAddress ?? "\(remote)", port: UInt16(clamping: remote.port ?? 0)).description
        }
        if !transport.registerInbound(context.channel) {
            context.close(promise: nil)
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        transport.unregisterInbound(context.channel)
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = Self.unwrapInboundIn(data)
        guard frame.kind == .request else {
            logger.error("closing connection from \(peerDescription): received a \(frame.kind) frame where only requests may arrive")
            context.close(promise: nil)
            return
        }
        let local = transport.localNode
        let channel = context.channel
        func reply(_ code: TCPFrame.ErrorCode, _ text: String) {
            channel.writeAndFlush(Self.errorFrame(to: frame, from: local, code, text).encodedBuffer(), promise: nil)
        }
        guard frame.destination == local else {
            reply(.wrongNode, "this address serves \(local), not \(frame.destination)")
            return
        }
        guard let handler = transport.handler(for: frame.service) else {
            reply(.noSuchService, "\(local) does not serve \(frame.service)")
            return
        }
        let limit = TCPTransportLimits.inFlightCallsPerConnectionMax
        guard inFlight.tryAcquire(limit: limit) else {
            reply(.overloaded, "\(local) is overloaded: \(limit) requests already running for this connection")
            return
        }
        let request = IncomingRequest(
            from: frame.source, service: frame.service,
            message: Message(method: frame.method, header: frame.header, bulk: frame.bulk))
        let inFlight = self.inFlight
        transport.runtime.spawn("tcp.serve.\(frame.service)") {
            let answer = await TCPServerHandler.answer(frame, request, handler, local: local)
            inFlight.release()
            channel.writeAndFlush(answer.encodedBuffer(), promise: nil)
        }
    }

    /// Runs `handler` and turns its outcome into the reply frame for `frame`.
    private static func answer(
        _ frame: TCPFrame, _ request: IncomingRequest, _ handler: RequestHandler, local: NodeID
    ) async -> TCPFrame {
        let response: Message
        do {
            response = try await handler(request)
        } catch {
            return errorFrame(to: frame, from: local, .handlerFailed, "\(error)")
        }
        guard response.byteCount <= TransportLimits.messageBytesMax else {
            let error = TransportError.messageTooLarge(bytes: response.byteCount, limitBytes: TransportLimits.messageBytesMax)
            return errorFrame(to: frame, from: local, .handlerFailed, "response refused: \(error)")
        }
        return TCPFrame(
            kind: .response, requestID: frame.requestID, source: local, destination: frame.source,
            service: frame.service, method: response.method, header: response.header, bulk: response.bulk)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let frameError = error as? TCPFrameError {
            logger.error("closing connection from \(peerDescription): \(frameError)")
        } else if case ByteToMessageDecoderError.leftoverDataWhenDone = error {
            logger.debug("connection from \(peerDescription) ended inside a frame")
        } else {
            logger.debug("closing connection from \(peerDescription): \(error)")
        }
        context.close(promise: nil)
    }

    static func errorFrame(to request: TCPFrame, from local: NodeID, _ code: TCPFrame.ErrorCode, _ text: String) -> TCPFrame {
        TCPFrame(
            kind: .errorResponse, requestID: request.requestID, source: local, destination: request.source,
            service: request.service, method: code.rawValue,
            header: Array(text.utf8.prefix(TCPTransportLimits.errorTextBytesMax)))
    }
}
