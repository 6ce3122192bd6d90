import CisternCore
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus

/// A Prometheus scrape endpoint: `GET /metrics` answers the registry's text
/// exposition, `GET /health` answers "ok"; anything else 404.
public final class MetricsEndpoint: Sendable {
    let channel: any Channel
    /// The bound address (with the real port when asked for port 0).
    public let address: NodeAddress

    public static func start(listen: NodeAddress, registry: PrometheusCollectorRegistry) async throws -> MetricsEndpoint {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(MetricsHTTPHandler(registry: registry))
                }
            }
            .bind(host: listen.host, port: Int(listen.port)).get()
        let port = channel.localAddress?.port ?? Int(listen.port)
        return MetricsEndpoint(channel: channel, address: NodeAddress(host: listen.host, port: UInt16(clamping: port)))
    }

    init(channel: any Channel, address: NodeAddress) {
        self.channel = channel
        self.address = address
    }

    public func close() async {
        try? await channel.close()
    }
}

final class MetricsHTTPHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let registry: PrometheusCollectorRegistry

    init(registry: PrometheusCollectorRegistry) { self.registry = registry }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let head) = unwrapInboundIn(data) else { return }
        let (status, body, type): (HTTPResponseStatus, String, String) = switch (head.method, head.uri) {
        case (.GET, "/metrics"): (.ok, registry.emitToString(), "text/plain; version=0.0.4")
        case (.GET, "/health"): (.ok, "ok\n", "text/plain")
        default: (.notFound, "not found: try GET /metrics\n", "text/plain")
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: type)
        headers.add(name: "Content-Length", value: "\(body.utf8.count)")
        headers.add(name: "Connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        let ctx = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in ctx.value.close(promise: nil) }
    }
}
