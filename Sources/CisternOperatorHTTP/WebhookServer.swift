import CisternOperator
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL

/// `cistern webhook`: the mutating admission webhook over HTTPS (the API server
/// calls webhooks only over TLS; plain HTTP is for tests on loopback). POST /mutate
/// takes an AdmissionReview and answers one (`MountInjector`); GET /healthz.
public struct WebhookServer: Sendable {
    public let injector: MountInjector
    public let host: String
    public let port: Int
    public let tlsCertificate: String?
    public let tlsKey: String?
    /// Largest AdmissionReview taken (a pod with large annotations stays well below).
    public static let bodyBytesMax = 4 << 20

    public init(injector: MountInjector, host: String, port: Int, tlsCertificate: String?, tlsKey: String?) {
        self.injector = injector
        self.host = host
        self.port = port
        self.tlsCertificate = tlsCertificate
        self.tlsKey = tlsKey
    }

    /// Serves only GET /healthz on `host:port` (the operator's liveness endpoint).
    public static func health(host: String, port: Int) async throws {
        let router = Router()
        router.get("/healthz") { _, _ in "ok\n" }
        let app = Application(router: router, configuration: .init(address: .hostname(host, port: port), serverName: "cistern-operator"),
                              logger: { var l = Logger(label: "cistern.operator"); l.logLevel = .warning; return l }())
        try await app.run()
    }

    public func run(onReady: @escaping @Sendable (Int) -> Void) async throws {
        let router = Router()
        router.get("/healthz") { _, _ in "ok\n" }
        router.post("/mutate") { [injector] request, _ -> Response in
            let body = try await request.body.collect(upTo: Self.bodyBytesMax)
            guard let review = try? JSONValue.decode(body.readableBytesView) else {
                return Response(status: .badRequest, body: .init(byteBuffer: ByteBuffer(string: "the body is not an AdmissionReview (JSON)\n")))
            }
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: injector.review(review).encoded())))
        }
        let server: HTTPServerBuilder
        switch (tlsCertificate, tlsKey) {
        case (let cert?, let key?):
            let chain = try NIOSSLCertificate.fromPEMFile(cert).map { NIOSSLCertificateSource.certificate($0) }
            let tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
            server = try .tls(.http1(), tlsConfiguration: tls)
        case (nil, nil):
            server = .http1()
        default:
            throw KubernetesError.malformed("give both --tls-cert and --tls-key, or neither (plain HTTP, for tests)")
        }
        let app = Application(
            router: router, server: server,
            configuration: .init(address: .hostname(host, port: port), serverName: "cistern-webhook"),
            onServerRunning: { channel in onReady(channel.localAddress?.port ?? 0) },
            logger: { var l = Logger(label: "cistern.webhook"); l.logLevel = .warning; return l }())
        try await app.run()
    }
}
