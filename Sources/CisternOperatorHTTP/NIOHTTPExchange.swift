import CisternOperator
import NIOCore
import NIOHTTP1
import NIOPosix

/// Plain HTTP/1.1 to one `host:port` (the API through `kubectl proxy` on loopback, or
/// a test server), one connection per request, with a deadline. Bounded: an answer
/// over `bodyBytesMax` is refused.
public struct NIOHTTPExchange: HTTPExchange {
    public let host: String
    public let port: Int
    public let timeoutSeconds: Int64
    public static let bodyBytesMax = 64 << 20

    public init(url: String, timeoutSeconds: Int64 = 30) throws {
        var rest = Substring(url)
        guard rest.hasPrefix("http://") else {
            throw KubernetesError.malformed("--api-server '\(url)' must be http://HOST:PORT (run `kubectl proxy` beside the operator for TLS and credentials)")
        }
        rest = rest.dropFirst("http://".count)
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        let parts = rest.split(separator: ":")
        guard parts.count == 2, let p = Int(parts[1]), (1...65_535).contains(p) else {
            throw KubernetesError.malformed("--api-server '\(url)' must be http://HOST:PORT")
        }
        host = String(parts[0])
        port = p
        self.timeoutSeconds = timeoutSeconds
    }

    final class Collector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPClientResponsePart
        let promise: EventLoopPromise<HTTPResponse>
        var status = 0
        var body = ByteBuffer()
        init(_ promise: EventLoopPromise<HTTPResponse>) { self.promise = promise }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let h): status = Int(h.status.code)
            case .body(var b):
                guard body.readableBytes + b.readableBytes <= NIOHTTPExchange.bodyBytesMax else {
                    promise.fail(KubernetesError.malformed("an answer over \(NIOHTTPExchange.bodyBytesMax) bytes"))
                    context.close(promise: nil)
                    return
                }
                body.writeBuffer(&b)
            case .end:
                promise.succeed(HTTPResponse(status: status, body: Array(body.readableBytesView)))
                context.close(promise: nil)
            }
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            promise.fail(error)
            context.close(promise: nil)
        }
        func channelInactive(context: ChannelHandlerContext) {
            promise.fail(KubernetesError.malformed("the connection closed before the answer ended"))
        }
    }

    public func send(_ request: HTTPRequest) async throws -> HTTPResponse {
        let group = MultiThreadedEventLoopGroup.singleton
        let loop = group.next()
        let promise = loop.makePromise(of: HTTPResponse.self)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: loop)
                .connectTimeout(.seconds(timeoutSeconds))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(Collector(promise))
                    }
                }
                .connect(host: host, port: port).get()
        } catch {
            // Every promise is completed: one left pending is a leak (NIO traps on it in debug builds).
            promise.fail(error)
            throw KubernetesError.unreachable("cannot connect to \(host):\(port): \(error)")
        }
        let deadline = loop.scheduleTask(in: .seconds(timeoutSeconds)) {
            promise.fail(KubernetesError.malformed("no answer from \(host):\(port) within \(timeoutSeconds) s"))
            channel.close(promise: nil)
        }
        var head = HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: request.method), uri: request.path)
        head.headers.add(name: "Host", value: "\(host):\(port)")
        head.headers.add(name: "Accept", value: "application/json")
        head.headers.add(name: "Connection", value: "close")
        head.headers.add(name: "Content-Length", value: "\(request.body.count)")
        if let t = request.contentType { head.headers.add(name: "Content-Type", value: t) }
        if let a = request.authorization { head.headers.add(name: "Authorization", value: a) }
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if !request.body.isEmpty { channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: request.body))), promise: nil) }
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        defer { deadline.cancel() }
        return try await promise.futureResult.get()
    }
}
