import CisternCore
import Logging
import NIOCore

/// The end of an outbound connection's pipeline: hands each response to the call
/// waiting for it, and closes the connection (failing its calls) when the stream
/// breaks, carries a malformed frame, or the peer turns out to be another node.
final class TCPClientHandler: ChannelInboundHandler {
    typealias InboundIn = TCPFrame

    private let connection: TCPOutboundConnection
    private let logger: Logger
    /// Why the connection is being closed, when this handler closed it.
    private var closeReason: TransportError?

    init(connection: TCPOutboundConnection, logger: Logger) {
        self.connection = connection
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = Self.unwrapInboundIn(data)
        let node = connection.node
        switch frame.kind {
        case .request:
            fail(context, .malformed(node: node, detail: "received a request frame on an outbound connection to \(connection.address)"))
        case .response:
            guard frame.source == node else {
                fail(context, .unreachable(node: node, reason: "\(connection.address) answered as \(frame.source); the node moved"))
                return
            }
            let message = Message(method: frame.method, header: frame.header, bulk: frame.bulk)
            if !connection.complete(frame.requestID, .success(message)) {
                logger.debug("dropping a late response to request \(frame.requestID) from \(node)")
            }
        case .errorResponse:
            let text = String(decoding: frame.header, as: UTF8.self)
            let error: TransportError
            switch TCPFrame.ErrorCode(rawValue: frame.method) {
            case .handlerFailed: error = .remote(node: node, message: text)
            case .noSuchService: error = .noSuchService(node: node, service: frame.service)
            case .overloaded: error = .remote(node: node, message: text)
            case .wrongNode:
                let reason = "\(connection.address) is now \(frame.source), not \(node): \(text)"
                connection.complete(frame.requestID, .failure(.unreachable(node: node, reason: reason)))
                fail(context, .unreachable(node: node, reason: reason))
                return
            case nil: error = .remote(node: node, message: "error code \(frame.method): \(text)")
            }
            if !connection.complete(frame.requestID, .failure(error)) {
                logger.debug("dropping a late error response to request \(frame.requestID) from \(node)")
            }
        }
    }

    /// After every socket read (the decoder forwards it whether or not a whole frame
    /// arrived): the connection is alive.
    func channelReadComplete(context: ChannelHandlerContext) {
        connection.noteRead()
        context.fireChannelReadComplete()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let node = connection.node
        if let frameError = error as? TCPFrameError {
            logger.error("closing connection to \(node) at \(connection.address): \(frameError)")
            fail(context, .malformed(node: node, detail: "\(frameError)"))
        } else {
            logger.debug("closing connection to \(node) at \(connection.address): \(error)")
            fail(context, .unreachable(node: node, reason: "connection to \(connection.address) failed: \(error)"))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        connection.close(
            closeReason ?? .unreachable(node: connection.node, reason: "connection to \(connection.address) was closed"))
        context.fireChannelInactive()
    }

    private func fail(_ context: ChannelHandlerContext, _ reason: TransportError) {
        if closeReason == nil { closeReason = reason }
        connection.close(reason)
        context.close(promise: nil)
    }
}
