import Cistern
import CisternKV
import CisternMeta
import Foundation
import Hummingbird
import NIOCore

extension MasterServer {
    /// Every endpoint of `openapi.yaml`.
    func routes(_ router: Router<BasicRequestContext>) {
        // Service
        on(router, .get, "/health", .anyone) { _, _, _ in
            let routing = await client.mgmtd.routing
            return try Self.json(API.Health(status: routing == nil ? "waiting for the cluster manager" : "ok",
                                            routingVersion: routing?.version ?? 0, storageTargets: routing?.targets.count ?? 0))
        }
        on(router, .get, "/metrics", .anyone) { _, _, _ in
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: metricsText())))
        }
        on(router, .get, "/openapi.yaml", .anyone) { _, _, _ in
            var headers = HTTPFields()
            headers[.contentType] = "application/yaml"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: OpenAPIDocument.text)))
        }
        on(router, .get, "/v1/whoami", .tenant) { _, _, tenant in try Self.json(API.WhoAmI(tenant: tenant)) }

        // Tenants (admin; a tenant may read its own)
        on(router, .post, "/v1/tenants", .admin) { request, _, _ in
            let body = try await json(API.TenantCreate.self, request)
            // The index makes the tenant's file tree in the same transaction.
            _ = try await index(.tenant(.create(name: body.name, quota: TenantQuota(bytes: body.quotaBytes, pages: body.quotaPages), capacityBytes: await capacityBytes())))
            return try await tenantAnswer(body.name, status: .created)
        }
        on(router, .get, "/v1/tenants", .admin) { _, _, _ in
            guard case .tenants(let all) = try await index(.tenant(.list)) else { throw APIError(.serviceUnavailable, "unavailable", "unexpected index reply") }
            return try Self.json(API.TenantList(tenants: all.map(API.Tenant.init), capacityBytes: await capacityBytes(),
                                                quotaBytesTotal: all.reduce(0) { $0 + $1.quota.bytes }))
        }
        on(router, .get, "/v1/tenants/:tenant", .tenant) { _, context, caller in
            let name = try Self.parameter(context, "tenant")
            try Self.allow(caller, name)
            return try await tenantAnswer(name)
        }
        on(router, .delete, "/v1/tenants/:tenant", .admin) { _, context, _ in
            let name = try Self.parameter(context, "tenant")
            try TenantError.check(name: name)
            let root = "\(Self.filesRoot)/\(name)"
            if let entries = try? await client.list(root), !entries.isEmpty {
                throw APIError(.conflict, "tenant_not_empty", "tenant '\(name)' still has \(entries.count) entries in its files; delete them first")
            }
            _ = try await index(.tenant(.delete(name: name)))
            try? await client.remove(root, recursive: false)
            return Self.noContent()
        }
        on(router, .put, "/v1/tenants/:tenant/quota", .admin) { request, context, _ in
            let name = try Self.parameter(context, "tenant")
            let body = try await json(API.QuotaSet.self, request)
            _ = try await index(.tenant(.setQuota(name: name, quota: TenantQuota(bytes: body.quotaBytes, pages: body.quotaPages), capacityBytes: await capacityBytes())))
            return try await tenantAnswer(name)
        }
        on(router, .post, "/v1/tenants/:tenant/tokens", .admin) { request, context, _ in
            let name = try Self.parameter(context, "tenant")
            let body = try await json(API.TokenCreate.self, request)
            let id = body.id ?? Self.newTokenID()
            let token = Self.newToken()
            _ = try await index(.tenant(.addToken(tenant: name, id: id, hash: Self.digest(token))))
            return try Self.json(API.TokenIssued(id: id, tenant: name, token: token), status: .created)
        }
        on(router, .delete, "/v1/tenants/:tenant/tokens/:id", .admin) { _, context, _ in
            _ = try await index(.tenant(.revokeToken(tenant: try Self.parameter(context, "tenant"), id: try Self.parameter(context, "id"))))
            return Self.noContent()
        }

        // Namespaces (the caller's own)
        on(router, .post, "/v1/namespaces", .tenant) { request, _, tenant in
            let body = try await json(API.NamespaceCreate.self, request)
            try Self.check(namespace: body.name)
            let durability: KVDurability
            switch body.durability ?? "cache" {
            case "cache": durability = .cache
            case "durable": durability = .durable
            case let d: throw APIError(.badRequest, "invalid_namespace_config", "durability '\(d.prefix(40))' is unknown; use cache or durable")
            }
            let files = UInt32(min(4, max(1, body.capacityPages)))
            guard case .config(let c) = try await index(.createOwnedNamespace(owner: tenant, name: TenantNaming.indexName(tenant: tenant, namespace: body.name), pageBytes: body.pageBytes,
                                                                              capacityPages: body.capacityPages, files: files, durability: durability)) else {
                throw APIError(.serviceUnavailable, "unavailable", "unexpected index reply")
            }
            return try Self.json(Self.describe(c, tenant: tenant), status: .created)
        }
        on(router, .get, "/v1/namespaces", .tenant) { _, _, tenant in
            guard case .tenants(let info) = try await index(.tenant(.info(name: tenant))) else { throw APIError(.serviceUnavailable, "unavailable", "unexpected index reply") }
            return try Self.json(API.NamespaceList(namespaces: info.flatMap(\.namespaces).compactMap { TenantNaming.tenantName(indexName: $0, tenant: tenant) }))
        }
        on(router, .get, "/v1/namespaces/:namespace", .tenant) { _, context, tenant in
            let ns = try await open(context, tenant)
            return try Self.json(Self.describe(ns.config, tenant: tenant, usage: try await ns.usage()))
        }
        on(router, .delete, "/v1/namespaces/:namespace", .tenant) { _, context, tenant in
            let (name, indexName) = try namespace(context, tenant)
            do {
                _ = try await index(.drop(name: indexName))
            } catch KVCacheError.noSuchNamespace {
                throw KVCacheError.noSuchNamespace(name)
            }
            return Self.noContent()
        }

        // Pages
        on(router, .put, "/v1/namespaces/:namespace/pages/:key", .tenant) { request, context, tenant in
            let ns = try await open(context, tenant)
            let key = try Self.parameter(context, "key")
            let body = try await request.body.collect(upTo: ns.pageBytes)
            let outcome = try await ns.put([(key, Array(body.readableBytesView))])[0]
            return try Self.json(Self.result(key, outcome), status: Self.status(outcome))
        }
        on(router, .get, "/v1/namespaces/:namespace/pages/:key", .tenant) { _, context, tenant in
            let ns = try await open(context, tenant)
            let key = try Self.parameter(context, "key")
            switch try await ns.get(try Self.keys([key]))[0] {
            case .found(let bytes): return Self.binary(ByteBuffer(bytes: bytes))
            case .missing: throw APIError(.notFound, "no_such_page", "no page '\(key.prefix(80))' in namespace '\(ns.name)' (never put, deleted or evicted)")
            case .failed(let why): throw APIError(.serviceUnavailable, "storage_unavailable", why)
            }
        }
        on(router, .delete, "/v1/namespaces/:namespace/pages/:key", .tenant) { _, context, tenant in
            let ns = try await open(context, tenant)
            _ = try await ns.delete(try Self.keys([try Self.parameter(context, "key")]))
            return Self.noContent()
        }
        on(router, .post, "/v1/namespaces/:namespace/exists", .tenant) { request, context, tenant in
            let ns = try await open(context, tenant)
            let r = try await ns.exists(try Self.keys(try await json(API.Keys.self, request).keys))
            return try Self.json(API.Exists(present: r.present, consecutiveHits: r.consecutiveHits))
        }
        on(router, .post, "/v1/namespaces/:namespace/batch/get", .tenant) { request, context, tenant in
            let ns = try await open(context, tenant)
            let keys = try Self.keys(try await json(API.Keys.self, request).keys)
            // The answer is held in memory: bounded like a request body.
            if keys.count * ns.pageBytes > settings.bodyBytesMax {
                throw APIError(.contentTooLarge, "batch_too_large", "\(keys.count) pages of \(ns.pageBytes) bytes exceed the \(settings.bodyBytesMax)-byte answer limit; ask for at most \(max(1, settings.bodyBytesMax / ns.pageBytes)) keys at once")
            }
            var items: [(key: String, bytes: [UInt8]?)] = []
            for (k, r) in zip(keys, try await ns.get(keys)) {
                if case .failed(let why) = r { throw APIError(.serviceUnavailable, "storage_unavailable", "page '\(k.prefix(80))': \(why)") }
                items.append((k, r.bytes))
            }
            return Self.binary(PageFraming.encode(items))
        }
        on(router, .post, "/v1/namespaces/:namespace/batch/put", .tenant) { request, context, tenant in
            let ns = try await open(context, tenant)
            let body = try await request.body.collect(upTo: settings.bodyBytesMax)
            let pages = try PageFraming.decode(body, keysMax: KVCacheLimits.batchKeysMax)
            _ = try Self.keys(pages.map(\.key))
            let outcomes = try await ns.put(pages)
            return try Self.json(API.PutResults(results: zip(pages, outcomes).map { Self.result($0.0.key, $0.1) }))
        }
        on(router, .post, "/v1/namespaces/:namespace/batch/delete", .tenant) { request, context, tenant in
            let ns = try await open(context, tenant)
            return try Self.json(API.Deleted(deleted: try await ns.delete(try Self.keys(try await json(API.Keys.self, request).keys))))
        }

        // Two-phase puts for a global manager: reserve locations, engines write, confirm or abort.
        on(router, .post, "/v1/namespaces/:namespace/reserve", .tenant) { request, context, tenant in
            let ns = try await open(context, tenant)
            let keys = try Self.keys(try await json(API.Keys.self, request).keys)
            guard case .reserved(let outcomes, _) = try await index(.reserve(name: ns.config.name, keys: keys)) else {
                throw APIError(.serviceUnavailable, "unavailable", "unexpected index reply")
            }
            let c = ns.config
            let reservations = zip(keys, outcomes).map { key, o -> API.Reservation in
                switch o {
                case .exists: return API.Reservation(key: key, outcome: "exists")
                case .full: return API.Reservation(key: key, outcome: "full")
                case .reserved(let slot, let token):
                    let file = Int(slot.rawValue / c.slotsPerFile)
                    return API.Reservation(key: key, outcome: "reserved", slot: slot.rawValue, token: token, fileInode: c.files[file].inode.rawValue,
                                           offsetBytes: (slot.rawValue % c.slotsPerFile) * UInt64(c.pageBytes))
                }
            }
            return try Self.json(API.Reservations(pageBytes: c.pageBytes, reservations: reservations))
        }
        on(router, .post, "/v1/namespaces/:namespace/confirm", .tenant) { request, context, tenant in
            let ns = try await open(context, tenant)
            let items = try await json(API.ConfirmRequest.self, request).items
            _ = try Self.keys(items.map(\.key))
            let confirm = items.map { KVConfirmItem(key: $0.key, slot: PageSlot($0.slot), token: $0.token, length: $0.length, checksum: $0.checksum) }
            try Self.checkSlots(items.map(\.slot), ns.config)
            guard case .confirmed(let outcomes) = try await index(.confirm(name: ns.config.name, items: confirm)) else {
                throw APIError(.serviceUnavailable, "unavailable", "unexpected index reply")
            }
            return try Self.json(API.ConfirmResults(outcomes: outcomes.map { "\($0)" }))
        }
        on(router, .post, "/v1/namespaces/:namespace/abort", .tenant) { request, context, tenant in
            let ns = try await open(context, tenant)
            let items = try await json(API.AbortRequest.self, request).items
            guard items.count <= KVCacheLimits.batchKeysMax else { throw APIError(.badRequest, "batch_too_large", "abort at most \(KVCacheLimits.batchKeysMax) slots at once") }
            try Self.checkSlots(items.map(\.slot), ns.config)
            _ = try await index(.abort(name: ns.config.name, slots: items.map { PageSlot($0.slot) }, tokens: items.map(\.token)))
            return Self.noContent()
        }

        // Files (under the tenant's own folder)
        on(router, .post, "/v1/files", .tenant) { request, _, tenant in
            let body = try await json(API.FileCreate.self, request)
            let path = try Self.tenantPath(body.path, tenant)
            guard body.mode.map({ $0 <= 0o7777 }) ?? true else { throw APIError(.badRequest, "invalid_argument", "mode \(body.mode ?? 0) is not a permission mode (0...0o7777)") }
            switch body.type {
            case "file": try await client.create(path, mode: body.mode ?? 0o644, exclusive: true)
            case "directory": try await client.mkdir(path, parents: false)
            case let t: throw APIError(.badRequest, "invalid_argument", "type '\(t.prefix(40))' is unknown; use file or directory")
            }
            return try Self.json(Self.stat(try await client.stat(path), path: body.path), status: .created)
        }
        on(router, .get, "/v1/files/stat", .tenant) { request, _, tenant in
            let raw = request.uri.queryParameters.get("path")
            return try Self.json(Self.stat(try await client.stat(try Self.tenantPath(raw, tenant)), path: raw ?? "/"))
        }
        on(router, .get, "/v1/files/list", .tenant) { request, _, tenant in
            let raw = request.uri.queryParameters.get("path")
            let entries = try await client.list(try Self.tenantPath(raw, tenant))
            return try Self.json(API.Listing(path: raw ?? "/", entries: entries.map { API.Entry(name: $0.name, type: "\($0.type)") }))
        }
        on(router, .delete, "/v1/files", .tenant) { request, _, tenant in
            let raw = request.uri.queryParameters.get("path")
            let path = try Self.tenantPath(raw, tenant)
            if path == "\(Self.filesRoot)/\(tenant)" { throw APIError(.badRequest, "invalid_path", "the tenant's root folder cannot be deleted; delete what is in it") }
            try await client.remove(path, recursive: request.uri.queryParameters.get("recursive") == "true")
            return Self.noContent()
        }
    }

    /// A tenant's namespace name: the index's rules, and short enough that the
    /// tenant's prefix (up to 33 bytes) still fits.
    static func check(namespace name: String) throws {
        try KVCacheError.check(namespace: name)
        let limit = KVCacheLimits.namespaceBytesMax - TenantLimits.nameBytesMax - 1
        if name.utf8.count > limit { throw KVCacheError.invalidNamespace(name, reason: "longer than \(limit) bytes") }
    }

    static func allow(_ caller: String, _ tenant: String) throws {
        if caller != TenantLimits.admin && caller != tenant { throw TenantError.forbidden("a tenant may read only itself") }
    }

    func tenantAnswer(_ name: String, status: HTTPResponse.Status = .ok) async throws -> Response {
        guard case .tenants(let info) = try await index(.tenant(.info(name: name))), let t = info.first else {
            throw APIError(.serviceUnavailable, "unavailable", "unexpected index reply")
        }
        return try Self.json(API.Tenant(t), status: status)
    }

    static func checkSlots(_ slots: [UInt64], _ c: KVNamespaceConfig) throws {
        if let bad = slots.first(where: { $0 >= c.capacityPages }) {
            throw APIError(.badRequest, "invalid_slot", "slot \(bad) is outside the namespace's \(c.capacityPages) slots; use the slots that reserve returned")
        }
    }

    static func result(_ key: String, _ o: KVPutOutcome) -> API.PutResult {
        switch o {
        case .stored: return API.PutResult(key: key, outcome: "stored")
        case .existed: return API.PutResult(key: key, outcome: "existed")
        case .full: return API.PutResult(key: key, outcome: "full", detail: "every page is reserved or being read; retry shortly")
        case .failed(let why): return API.PutResult(key: key, outcome: "failed", detail: why)
        case .noSpace(let why): return API.PutResult(key: key, outcome: "no_space", detail: why)
        }
    }

    static func status(_ o: KVPutOutcome) -> HTTPResponse.Status {
        switch o {
        case .stored: return .created
        case .existed: return .ok
        case .full: return .conflict
        case .failed: return .serviceUnavailable
        case .noSpace: return APIError.insufficientStorage
        }
    }
}
