import CisternAuth
import Cistern
import CisternCore
import CisternKV
import CisternMeta
import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore

/// How a master serves (from the config's `master:` section).
public struct MasterSettings: Sendable {
    public var listen: NodeAddress
    /// The admin tenant's token; the master makes sure it authenticates as `admin`.
    public var adminToken: String
    /// Largest binary body (a batch of pages).
    public var bodyBytesMax = 64 << 20
    /// Largest JSON body.
    public var jsonBytesMax = 1 << 20
    /// A connection idle this long is closed (slow or stuck clients).
    public var idleTimeoutSeconds: Int64 = 30
    /// Connections served at once; more wait in the listen backlog.
    public var connectionsMax = 512

    public init(listen: NodeAddress, adminToken: String) {
        self.listen = listen
        self.adminToken = adminToken
    }
}

/// The master HTTP service: a stateless gateway over the cluster (every replica
/// serves the same tenants, namespaces and files; all state lives in the metadata
/// store). Tenants authenticate with bearer tokens, checked against their SHA-256
/// digests in the tenant registry on every request, so a revoked token stops working
/// at once on every replica.
public struct MasterServer: Sendable {
    public let client: CisternClient
    public let settings: MasterSettings
    let metricsText: @Sendable () -> String

    /// Every tenant's files live under this folder, one folder per tenant.
    public static let filesRoot = "/tenants"

    public init(client: CisternClient, settings: MasterSettings, metricsText: @escaping @Sendable () -> String) {
        self.client = client
        self.settings = settings
        self.metricsText = metricsText
    }

    /// SHA-256 of a token: what the registry stores and looks up.
    public static func digest(_ token: String) -> [UInt8] { TokenDigest.of(token) }

    /// A new token secret (256 bits from the system's generator, never stored).
    public static func newToken() -> String {
        var g = SystemRandomNumberGenerator()
        return "cst_" + (0..<4).map { _ in String(format: "%016llx", g.next() as UInt64) }.joined()
    }

    static func newTokenID() -> String {
        var g = SystemRandomNumberGenerator()
        return "t" + String(format: "%08x", UInt32.random(in: 0...UInt32.max, using: &g))
    }

    func index(_ request: KVRequest) async throws -> KVReply { try await client.kvIndex.call(request) }

    /// Makes sure the admin tenant exists with the configured token (idempotent; safe
    /// when several replicas start at once).
    public func bootstrap() async throws {
        _ = try await index(.tenant(.ensure(name: TenantLimits.admin, quota: TenantQuota(bytes: 0, pages: 0))))
        _ = try await client.mkdir("\(Self.filesRoot)/\(TenantLimits.admin)", parents: true)
        let hash = Self.digest(settings.adminToken)
        for _ in 0..<3 {
            if case .tenantName(let who) = try? await index(.tenant(.authenticate(hash: hash))) {
                guard who == TenantLimits.admin else { throw APIError(.conflict, "admin_token_taken", "the configured admin token belongs to tenant '\(who)'; configure another") }
                return
            }
            do {
                _ = try await index(.tenant(.addToken(tenant: TenantLimits.admin, id: "bootstrap-\(Self.hex(hash.prefix(4)))", hash: hash)))
                return
            } catch KVCacheError.tenant(.limit) {
                continue  // another replica added it meanwhile: authenticate again
            }
        }
    }

    static func hex(_ bytes: some Sequence<UInt8>) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    /// What the chains can hold: each chain stores one copy's worth, the smallest of its replicas.
    func capacityBytes() async -> UInt64 {
        await client.capacity().totalBytes
    }

    // MARK: Serving

    public func run(onReady: @escaping @Sendable (NodeAddress) -> Void) async throws {
        let router = Router()
        router.add(middleware: MetricsMiddleware())
        routes(router)
        let app = Application(
            router: router,
            server: .http1(configuration: .init(idleTimeout: .seconds(settings.idleTimeoutSeconds))),
            configuration: .init(address: .hostname(settings.listen.host, port: Int(settings.listen.port)), serverName: "cistern-master",
                                 availableConnectionsDelegate: MaximumAvailableConnections(settings.connectionsMax)),
            onServerRunning: { [listen = settings.listen] channel in
                onReady(NodeAddress(host: listen.host, port: UInt16(channel.localAddress?.port ?? Int(listen.port))))
            },
            logger: { var l = Logger(label: "cistern.master"); l.logLevel = .warning; return l }())
        try await app.run()
    }

    enum Access { case anyone, tenant, admin }

    /// Registers a handler: authenticates (unless `.anyone`), runs it, and turns every
    /// error into a JSON answer with a stable code.
    func on(_ router: Router<BasicRequestContext>, _ method: HTTPRequest.Method, _ path: RouterPath, _ access: Access,
            _ handler: @escaping @Sendable (Request, BasicRequestContext, String) async throws -> Response) {
        router.on(path, method: method) { request, context in
            do {
                var tenant = ""
                if access != .anyone {
                    tenant = try await authenticate(request)
                    if access == .admin && tenant != TenantLimits.admin { throw TenantError.forbidden("only the admin tenant may do this") }
                }
                return try await handler(request, context, tenant)
            } catch {
                throw APIError.from(error)
            }
        }
    }

    func authenticate(_ request: Request) async throws -> String {
        guard let header = request.headers[.authorization], header.hasPrefix("Bearer "), header.count > 7, header.count < 512 else {
            throw TenantError.unauthenticated
        }
        guard case .tenantName(let who) = try await index(.tenant(.authenticate(hash: Self.digest(String(header.dropFirst(7)))))) else {
            throw TenantError.unauthenticated
        }
        return who
    }

    // MARK: Bodies

    func json<T: Decodable>(_ type: T.Type, _ request: Request) async throws -> T {
        let body = try await request.body.collect(upTo: settings.jsonBytesMax)
        return try JSONDecoder().decode(T.self, from: Data(body.readableBytesView))
    }

    static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: try encoder.encode(value))))
    }

    static func noContent() -> Response { Response(status: .noContent) }

    static func binary(_ buffer: ByteBuffer) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/octet-stream"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: buffer))
    }

    static func parameter(_ context: BasicRequestContext, _ name: String) throws -> String {
        guard let raw = context.parameters.get(name) else { throw APIError(.badRequest, "missing_parameter", "the path needs a \(name)") }
        return raw.removingPercentEncoding ?? raw
    }

    // MARK: Namespaces

    /// The caller's namespace (its name in the index), after checking the name.
    func namespace(_ context: BasicRequestContext, _ tenant: String) throws -> (name: String, index: String) {
        let name = try Self.parameter(context, "namespace")
        try Self.check(namespace: name)
        return (name, TenantNaming.indexName(tenant: tenant, namespace: name))
    }

    func open(_ context: BasicRequestContext, _ tenant: String) async throws -> KVNamespace {
        let (name, indexName) = try namespace(context, tenant)
        do {
            return try await client.kvNamespace(indexName)
        } catch .kv(.noSuchNamespace) {
            throw KVCacheError.noSuchNamespace(name)
        }
    }

    static func describe(_ c: KVNamespaceConfig, tenant: String, usage: KVUsage? = nil) -> API.Namespace {
        API.Namespace(name: TenantNaming.tenantName(indexName: c.name, tenant: tenant) ?? c.name, pageBytes: c.pageBytes, capacityPages: c.capacityPages,
                      durability: c.durability == .cache ? "cache" : "durable",
                      usage: usage.map { API.Usage(confirmedPages: $0.confirmed, reservedPages: $0.reserved, freeSlots: $0.free, usedSlots: $0.highWater) })
    }

    static func keys(_ keys: [String]) throws -> [String] {
        try KVCacheError.check(keys: keys)
        return keys
    }

    // MARK: Files

    /// The tenant's path for a path the tenant gave (`/` is the tenant's folder).
    static func tenantPath(_ raw: String?, _ tenant: String) throws -> String {
        guard let raw, raw.hasPrefix("/") else { throw APIError(.badRequest, "invalid_path", "give an absolute path in the query: ?path=/dir/file") }
        let parts: [String]
        do {
            parts = try CisternMeta.Namespace.components(raw)
        } catch {
            throw APIError(.badRequest, "invalid_path", "\(error)")
        }
        if parts.contains(where: { $0 == "." || $0 == ".." }) { throw APIError(.badRequest, "invalid_path", "'.' and '..' are not allowed in '\(raw.prefix(200))'") }
        return ([filesRoot, tenant] + parts).joined(separator: "/")
    }

    static func stat(_ i: Inode, path: String) -> API.FileStat {
        API.FileStat(path: path, type: "\(i.type)", mode: i.mode, length: i.length, nlink: i.nlink, mtimeNanoseconds: i.mtimeNanoseconds)
    }
}
