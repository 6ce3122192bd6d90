import Cistern
import CisternServer
import CisternWire
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing
import Yams

/// A small HTTP client for the tests: real requests over loopback.
struct HTTP: Sendable {
    let base: String

    struct Answer: Sendable {
        let status: Int
        let body: Data
        var json: [String: Any] { ((try? JSONSerialization.jsonObject(with: body)) as? [String: Any]) ?? [:] }
        var code: String? { (json["error"] as? [String: Any])?["code"] as? String }
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    func call(_ method: String, _ path: String, token: String? = nil, json: Any? = nil, body: Data? = nil) async throws -> Answer {
        var r = URLRequest(url: URL(string: base + path)!)
        r.httpMethod = method
        r.timeoutInterval = 60
        if let token { r.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        if let json {
            r.httpBody = try JSONSerialization.data(withJSONObject: json)
            r.setValue("application/json", forHTTPHeaderField: "Content-Type")
        } else if let body {
            r.httpBody = body
            r.setValue("application/octet-stream", forHTTPHeaderField: "Content-Type")
        }
        let (data, response) = try await URLSession.shared.data(for: r)
        return Answer(status: (response as? HTTPURLResponse)?.statusCode ?? 0, body: data)
    }
}

/// Frames pages as the batch endpoints do: (u32 LE key length, key, u32 LE length, bytes).
func framePages(_ pages: [(String, [UInt8]?)]) -> Data {
    var d = Data()
    func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) } }
    for (k, v) in pages {
        u32(UInt32(k.utf8.count))
        d.append(contentsOf: Array(k.utf8))
        if let v { u32(UInt32(v.count)); d.append(contentsOf: v) } else { u32(0xFFFF_FFFF) }
    }
    return d
}

func unframePages(_ d: Data) -> [(String, [UInt8]?)] {
    let b = [UInt8](d)
    var i = 0
    var out: [(String, [UInt8]?)] = []
    func u32() -> UInt32 {
        defer { i += 4 }
        return UInt32(b[i]) | UInt32(b[i + 1]) << 8 | UInt32(b[i + 2]) << 16 | UInt32(b[i + 3]) << 24
    }
    while i < b.count {
        let kl = Int(u32())
        let k = String(decoding: b[i..<i + kl], as: UTF8.self)
        i += kl
        let vl = u32()
        if vl == 0xFFFF_FFFF { out.append((k, nil)); continue }
        out.append((k, Array(b[i..<i + Int(vl)])))
        i += Int(vl)
    }
    return out
}

/// The master HTTP service against a real local cluster (real processes, real HTTP):
/// every endpoint, tenant isolation through every HTTP resource, quotas under
/// concurrent requests, revocation, bad input; the cluster keeps serving throughout.
@Suite(.serialized) struct MasterHTTPTests {
    static func page(_ key: String, _ n: Int) -> [UInt8] { LocalClusterKillTests().page(key, n) }

    static func withCluster(_ body: (LocalCluster, HTTP, String) async throws -> Void) async throws {
        try #require(FileManager.default.isExecutableFile(atPath: LocalClusterKillTests.binary), "build the cistern binary first (swift build)")
        let dir = NSTemporaryDirectory() + "cistern-master-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        let cluster = LocalCluster(dataDir: dir)
        try await cluster.up(storageNodes: 3, master: true, binary: LocalClusterKillTests.binary)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let url = try #require(cluster.masterURL())
            try await body(cluster, HTTP(base: url), try cluster.adminToken())
        } catch {
            try? await cluster.down()
            throw error
        }
        try await cluster.down()
    }

    /// Creates a tenant with a quota and returns a fresh token for it.
    static func tenant(_ http: HTTP, admin: String, _ name: String, bytes: UInt64 = 1 << 30, pages: UInt64 = 1 << 20) async throws -> String {
        let created = try await http.call("POST", "/v1/tenants", token: admin, json: ["name": name, "quotaBytes": bytes, "quotaPages": pages])
        #expect(created.status == 201, "\(created.text)")
        let issued = try await http.call("POST", "/v1/tenants/\(name)/tokens", token: admin, json: [String: Any]())
        #expect(issued.status == 201, "\(issued.text)")
        return try #require(issued.json["token"] as? String)
    }

    @Test func everyEndpointWorksAndTenantsCannotReachEachOthersData() async throws {
        try await Self.withCluster { cluster, http, admin in
            // Service endpoints need no token.
            let health = try await http.call("GET", "/health")
            #expect(health.status == 200 && health.json["status"] as? String == "ok", "\(health.text)")
            let doc = try await http.call("GET", "/openapi.yaml")
            #expect(doc.status == 200 && doc.text.hasPrefix("openapi: 3.0"))
            #expect(try await http.call("GET", "/v1/whoami").code == "unauthenticated")
            #expect(try await http.call("GET", "/v1/whoami", token: "cst_guessed").status == 401)
            #expect(try await http.call("GET", "/v1/whoami", token: admin).json["tenant"] as? String == "admin")

            let alpha = try await Self.tenant(http, admin: admin, "alpha")
            let beta = try await Self.tenant(http, admin: admin, "beta")
            #expect(try await http.call("POST", "/v1/tenants", token: admin, json: ["name": "alpha", "quotaBytes": 1, "quotaPages": 1]).code == "tenant_exists")
            #expect(try await http.call("POST", "/v1/tenants", token: admin, json: ["name": "Bad.Name", "quotaBytes": 1, "quotaPages": 1]).code == "invalid_tenant_name")
            let list = try await http.call("GET", "/v1/tenants", token: admin)
            #expect(((list.json["tenants"] as? [[String: Any]]) ?? []).compactMap { $0["name"] as? String }.sorted() == ["admin", "alpha", "beta"])
            #expect((list.json["capacityBytes"] as? Int ?? 0) > 0)
            #expect(try await http.call("GET", "/v1/tenants", token: alpha).code == "forbidden")
            #expect(try await http.call("GET", "/v1/tenants/alpha", token: alpha).status == 200)
            #expect(try await http.call("GET", "/v1/tenants/alpha", token: beta).code == "forbidden")
            #expect(try await http.call("POST", "/v1/tenants/beta/tokens", token: alpha, json: [String: Any]()).code == "forbidden")

            // Namespaces and pages.
            let created = try await http.call("POST", "/v1/namespaces", token: alpha, json: ["name": "kv", "pageBytes": 4_096, "capacityPages": 64])
            #expect(created.status == 201 && created.json["name"] as? String == "kv", "\(created.text)")
            #expect(try await http.call("GET", "/v1/namespaces", token: alpha).json["namespaces"] as? [String] == ["kv"])
            let key = "layer 0/block%1"
            let escaped = key.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
            let bytes = Self.page(key, 3_000)
            let put = try await http.call("PUT", "/v1/namespaces/kv/pages/\(escaped)", token: alpha, body: Data(bytes))
            #expect(put.status == 201 && put.json["outcome"] as? String == "stored", "\(put.text)")
            #expect(try await http.call("PUT", "/v1/namespaces/kv/pages/\(escaped)", token: alpha, body: Data(bytes)).json["outcome"] as? String == "existed")
            let got = try await http.call("GET", "/v1/namespaces/kv/pages/\(escaped)", token: alpha)
            #expect(got.status == 200 && [UInt8](got.body) == bytes)
            #expect(try await http.call("PUT", "/v1/namespaces/kv/pages/too-big", token: alpha, body: Data(count: 4_097)).status == 413)
            let exists = try await http.call("POST", "/v1/namespaces/kv/exists", token: alpha, json: ["keys": [key, "nope", key]])
            #expect(exists.json["present"] as? [Bool] == [true, false, true] && exists.json["consecutiveHits"] as? Int == 1, "\(exists.text)")
            let batch = (0..<20).map { ("b\($0)", Self.page("b\($0)", 4_096)) }
            let batchPut = try await http.call("POST", "/v1/namespaces/kv/batch/put", token: alpha, body: framePages(batch.map { ($0.0, $0.1) }))
            #expect(batchPut.status == 200 && ((batchPut.json["results"] as? [[String: Any]]) ?? []).allSatisfy { $0["outcome"] as? String == "stored" }, "\(batchPut.text)")
            let batchGet = try await http.call("POST", "/v1/namespaces/kv/batch/get", token: alpha, json: ["keys": batch.map(\.0) + ["absent"]])
            let pages = unframePages(batchGet.body)
            #expect(pages.map(\.0) == batch.map(\.0) + ["absent"])
            #expect(zip(pages, batch).allSatisfy { $0.0.1 == $0.1.1 } && pages.last?.1 == nil)
            #expect(try await http.call("POST", "/v1/namespaces/kv/batch/delete", token: alpha, json: ["keys": ["b0", "b1"]]).json["deleted"] as? Int == 2)
            #expect(try await http.call("DELETE", "/v1/namespaces/kv/pages/b2", token: alpha).status == 204)
            #expect(try await http.call("GET", "/v1/namespaces/kv/pages/b2", token: alpha).code == "no_such_page")
            let usage = try await http.call("GET", "/v1/namespaces/kv", token: alpha)
            #expect((usage.json["usage"] as? [String: Any])?["confirmedPages"] as? Int == 18, "\(usage.text)")

            // Two-phase: reserve, write the page where the reservation says (natively),
            // confirm; and reserve then abort.
            let reserved = try await http.call("POST", "/v1/namespaces/kv/reserve", token: alpha, json: ["keys": ["direct", "gone"]])
            let rs = (reserved.json["reservations"] as? [[String: Any]]) ?? []
            #expect(rs.count == 2 && rs.allSatisfy { $0["outcome"] as? String == "reserved" }, "\(reserved.text)")
            let session = try await ClientSession.connect(cluster, name: "e2e")
            let direct = Self.page("direct", 4_096)
            let inode = try #require(rs.first?["fileInode"] as? Int)
            let files = try await session.client.list("/.kvcache/alpha.kv")
            var path: String?
            for f in files where try await session.client.stat("/.kvcache/alpha.kv/\(f.name)").id.rawValue == UInt64(inode) { path = "/.kvcache/alpha.kv/\(f.name)" }
            let handle = try await session.client.open(try #require(path), write: true)
            try await session.client.write(handle, at: UInt64(try #require(rs[0]["offsetBytes"] as? Int)), direct)
            try await session.client.close(handle, length: nil)
            let confirm = try await http.call("POST", "/v1/namespaces/kv/confirm", token: alpha, json: ["items": [[
                "key": "direct", "slot": rs[0]["slot"]!, "token": rs[0]["token"]!, "length": direct.count, "checksum": Int(CRC32C.checksum(direct)),
            ]]])
            #expect(confirm.json["outcomes"] as? [String] == ["confirmed"], "\(confirm.text)")
            #expect([UInt8](try await http.call("GET", "/v1/namespaces/kv/pages/direct", token: alpha).body) == direct)
            #expect(try await http.call("POST", "/v1/namespaces/kv/abort", token: alpha, json: ["items": [["slot": rs[1]["slot"]!, "token": rs[1]["token"]!]]]).status == 204)
            #expect(try await http.call("POST", "/v1/namespaces/kv/exists", token: alpha, json: ["keys": ["gone"]]).json["present"] as? [Bool] == [false])

            // Files under each tenant's own folder.
            #expect(try await http.call("POST", "/v1/files", token: alpha, json: ["path": "/docs", "type": "directory"]).status == 201)
            let file = try await http.call("POST", "/v1/files", token: alpha, json: ["path": "/docs/a.txt", "type": "file", "mode": 0o600])
            #expect(file.status == 201 && file.json["mode"] as? Int == 0o600 && file.json["type"] as? String == "file", "\(file.text)")
            #expect(try await http.call("POST", "/v1/files", token: alpha, json: ["path": "/docs/a.txt", "type": "file"]).code == "exists")
            #expect(try await http.call("GET", "/v1/files/stat?path=/docs/a.txt", token: alpha).json["length"] as? Int == 0)
            let listing = try await http.call("GET", "/v1/files/list?path=/docs", token: alpha)
            #expect(((listing.json["entries"] as? [[String: Any]]) ?? []).compactMap { $0["name"] as? String } == ["a.txt"])
            #expect(try await http.call("DELETE", "/v1/files?path=/docs", token: alpha).code == "not_empty")

            // Beta sees none of it, through any resource.
            #expect(try await http.call("GET", "/v1/namespaces", token: beta).json["namespaces"] as? [String] == [])
            #expect(try await http.call("GET", "/v1/namespaces/kv", token: beta).code == "no_such_namespace")
            #expect(try await http.call("GET", "/v1/namespaces/kv/pages/\(escaped)", token: beta).code == "no_such_namespace")
            #expect(try await http.call("PUT", "/v1/namespaces/kv/pages/x", token: beta, body: Data([1])).code == "no_such_namespace")
            #expect(try await http.call("POST", "/v1/namespaces/kv/batch/get", token: beta, json: ["keys": [key]]).code == "no_such_namespace")
            #expect(try await http.call("POST", "/v1/namespaces/kv/exists", token: beta, json: ["keys": [key]]).code == "no_such_namespace")
            #expect(try await http.call("POST", "/v1/namespaces/kv/reserve", token: beta, json: ["keys": ["y"]]).code == "no_such_namespace")
            #expect(try await http.call("DELETE", "/v1/namespaces/kv", token: beta).code == "no_such_namespace")
            // Naming alpha's namespace by its index name does not help either.
            #expect(try await http.call("GET", "/v1/namespaces/alpha.kv", token: beta).code == "no_such_namespace")
            #expect(try await http.call("GET", "/v1/files/stat?path=/docs/a.txt", token: beta).code == "not_found")
            #expect(try await http.call("GET", "/v1/files/list?path=/../alpha", token: beta).code == "invalid_path")
            #expect(try await http.call("DELETE", "/v1/files?path=/docs/a.txt", token: beta).code == "not_found")
            #expect(try await http.call("GET", "/v1/files/list?path=/", token: beta).json["entries"] as? [[String: Any]] != nil)
            #expect(((try await http.call("GET", "/v1/files/list?path=/", token: beta).json["entries"] as? [[String: Any]]) ?? [["x": 1]]).isEmpty)
            // Beta may own a namespace of the same name: a different one.
            #expect(try await http.call("POST", "/v1/namespaces", token: beta, json: ["name": "kv", "pageBytes": 4_096, "capacityPages": 8]).status == 201)
            #expect(try await http.call("GET", "/v1/namespaces/kv/pages/\(escaped)", token: beta).code == "no_such_page")
            #expect([UInt8](try await http.call("GET", "/v1/namespaces/kv/pages/\(escaped)", token: alpha).body) == bytes)

            // Deletion: files, then namespaces, then the tenant.
            #expect(try await http.call("DELETE", "/v1/tenants/alpha", token: admin).code == "tenant_not_empty")
            #expect(try await http.call("DELETE", "/v1/files?path=/docs&recursive=true", token: alpha).status == 204)
            #expect(try await http.call("DELETE", "/v1/namespaces/kv", token: alpha).status == 204)
            #expect(try await http.call("GET", "/v1/namespaces/kv", token: alpha).code == "no_such_namespace")
            #expect(try await http.call("DELETE", "/v1/tenants/alpha", token: admin).status == 204)
            #expect(try await http.call("GET", "/v1/whoami", token: alpha).code == "unauthenticated")
            #expect(try await http.call("GET", "/v1/tenants/alpha", token: admin).code == "no_such_tenant")
            // Metrics count what was served.
            let metrics = try await http.call("GET", "/metrics")
            #expect(metrics.status == 200 && metrics.text.contains("hb_requests"))
            await session.close()
        }
    }

    @Test func quotasHoldUnderConcurrentRequestsAndRevokedTokensStopWorking() async throws {
        try await Self.withCluster { _, http, admin in
            // Quotas cannot promise more than the cluster holds.
            let capacity = try #require(try await http.call("GET", "/v1/tenants", token: admin).json["capacityBytes"] as? Int)
            #expect(try await http.call("POST", "/v1/tenants", token: admin, json: ["name": "huge", "quotaBytes": capacity + 1, "quotaPages": 1]).code == "quota_overcommitted")
            // Room for exactly 3 namespaces of 16 pages of 4 KiB.
            let gamma = try await Self.tenant(http, admin: admin, "gamma", bytes: 3 * 16 * 4_096, pages: 1_000)
            let delta = try await Self.tenant(http, admin: admin, "delta")
            let statuses = try await withThrowingTaskGroup(of: (Int, String?).self) { group in
                for i in 0..<8 {
                    group.addTask {
                        let a = try await http.call("POST", "/v1/namespaces", token: gamma, json: ["name": "n\(i)", "pageBytes": 4_096, "capacityPages": 16])
                        return (a.status, a.code)
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(statuses.filter { $0.0 == 201 }.count == 3, "\(statuses)")
            #expect(statuses.filter { $0.1 == "quota_exceeded" }.count == 5, "\(statuses)")
            let info = try await http.call("GET", "/v1/tenants/gamma", token: gamma)
            #expect(info.json["usedBytes"] as? Int == 3 * 16 * 4_096 && info.json["usedPages"] as? Int == 48, "\(info.text)")
            // Concurrent puts beyond a namespace's capacity evict only inside it: the
            // tenant's pages never exceed its claim, another tenant's pages stay.
            #expect(try await http.call("POST", "/v1/namespaces", token: delta, json: ["name": "keep", "pageBytes": 4_096, "capacityPages": 32]).status == 201)
            let kept = (0..<32).map { ("k\($0)", Self.page("k\($0)", 4_096)) }
            #expect(try await http.call("POST", "/v1/namespaces/keep/batch/put", token: delta, body: framePages(kept.map { ($0.0, $0.1) })).status == 200)
            let names = try await http.call("GET", "/v1/namespaces", token: gamma).json["namespaces"] as? [String] ?? []
            let ns = try #require(names.first)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for w in 0..<4 {
                    group.addTask {
                        for b in 0..<4 {
                            let pages = (0..<8).map { ("w\(w)-\(b)-\($0)", Self.page("w\(w)-\(b)-\($0)", 4_096)) }
                            _ = try await http.call("POST", "/v1/namespaces/\(ns)/batch/put", token: gamma, body: framePages(pages.map { ($0.0, $0.1) }))
                        }
                    }
                }
                try await group.waitForAll()
            }
            let usage = try await http.call("GET", "/v1/namespaces/\(ns)", token: gamma)
            let confirmed = try #require((usage.json["usage"] as? [String: Any])?["confirmedPages"] as? Int)
            #expect(confirmed > 0 && confirmed <= 16, "\(usage.text)")
            let back = unframePages(try await http.call("POST", "/v1/namespaces/keep/batch/get", token: delta, json: ["keys": kept.map(\.0)]).body)
            #expect(back.count == 32 && zip(back, kept).allSatisfy { $0.0.1 == $0.1.1 }, "another tenant's pages were touched")
            // A quota cannot drop below what is claimed.
            #expect(try await http.call("PUT", "/v1/tenants/gamma/quota", token: admin, json: ["quotaBytes": 4_096, "quotaPages": 1]).code == "quota_below_use")
            #expect(try await http.call("PUT", "/v1/tenants/gamma/quota", token: admin, json: ["quotaBytes": 4 * 16 * 4_096, "quotaPages": 1_000]).status == 200)
            #expect(try await http.call("POST", "/v1/namespaces", token: gamma, json: ["name": "n-more", "pageBytes": 4_096, "capacityPages": 16]).status == 201)

            // Revocation takes effect at once.
            let second = try await http.call("POST", "/v1/tenants/gamma/tokens", token: admin, json: ["id": "second"])
            let token2 = try #require(second.json["token"] as? String)
            #expect(try await http.call("GET", "/v1/whoami", token: token2).status == 200)
            #expect(try await http.call("DELETE", "/v1/tenants/gamma/tokens/second", token: admin).status == 204)
            #expect(try await http.call("GET", "/v1/whoami", token: token2).code == "unauthenticated")
            #expect(try await http.call("GET", "/v1/namespaces", token: token2).status == 401)
            #expect(try await http.call("GET", "/v1/whoami", token: gamma).status == 200)
        }
    }

    @Test func badInputGetsPreciseErrorsAndTheServiceKeepsServing() async throws {
        try await Self.withCluster { _, http, admin in
            let t = try await Self.tenant(http, admin: admin, "eps")
            #expect(try await http.call("POST", "/v1/namespaces", token: t, json: ["name": "kv", "pageBytes": 4_096, "capacityPages": 8]).status == 201)
            var r = try await http.call("POST", "/v1/namespaces", token: t, body: Data("{not json".utf8))
            #expect(r.status == 400 && r.code == "malformed_body", "\(r.text)")
            r = try await http.call("POST", "/v1/namespaces", token: t, json: ["name": "x"])
            #expect(r.code == "malformed_body" && r.text.contains("pageBytes"), "\(r.text)")
            r = try await http.call("POST", "/v1/namespaces", token: t, json: ["name": "../x", "pageBytes": 4_096, "capacityPages": 8])
            #expect(r.code == "invalid_namespace_name")
            r = try await http.call("POST", "/v1/namespaces", token: t, json: ["name": "y", "pageBytes": 1, "capacityPages": 8])
            #expect(r.code == "invalid_namespace_config")
            r = try await http.call("POST", "/v1/namespaces/kv/exists", token: t, body: Data(count: 2 << 20))
            #expect(r.status == 413 && r.code == "body_too_large", "\(r.text)")
            r = try await http.call("POST", "/v1/namespaces/kv/batch/put", token: t, body: Data([5, 0, 0, 0, 65]))
            #expect(r.code == "malformed_body", "\(r.text)")
            r = try await http.call("POST", "/v1/namespaces/kv/exists", token: t, json: ["keys": (0..<10_000).map { "k\($0)" }])
            #expect(r.code == "batch_too_large", "\(r.text)")
            r = try await http.call("POST", "/v1/namespaces/kv/confirm", token: t, json: ["items": [["key": "a", "slot": 1 << 40, "token": 1, "length": 1, "checksum": 1]]])
            #expect(r.code == "invalid_slot", "\(r.text)")
            // A batch/get answer is bounded like a body (64 MiB by default).
            #expect(try await http.call("POST", "/v1/namespaces", token: t, json: ["name": "huge", "pageBytes": 64 << 20, "capacityPages": 2]).status == 201)
            r = try await http.call("POST", "/v1/namespaces/huge/batch/get", token: t, json: ["keys": ["a", "b"]])
            #expect(r.status == 413 && r.code == "batch_too_large", "\(r.text)")
            r = try await http.call("GET", "/v1/files/stat?path=relative", token: t)
            #expect(r.code == "invalid_path")
            r = try await http.call("GET", "/v1/files/stat", token: t)
            #expect(r.code == "invalid_path")
            r = try await http.call("POST", "/v1/files", token: t, json: ["path": "/f", "type": "socket"])
            #expect(r.code == "invalid_argument")
            #expect(try await http.call("GET", "/v1/nowhere", token: t).status == 404)

            // Every operation the served OpenAPI document names is routed: without a
            // token it answers 401 (or 200 for the open ones), never 404 or 405.
            let doc = try #require(try Yams.load(yaml: try await http.call("GET", "/openapi.yaml").text) as? [String: Any])
            let paths = try #require(doc["paths"] as? [String: [String: Any]])
            var operations = 0
            for (path, item) in paths {
                let concrete = path.replacingOccurrences(of: "{tenant}", with: "eps").replacingOccurrences(of: "{namespace}", with: "kv")
                    .replacingOccurrences(of: "{key}", with: "k").replacingOccurrences(of: "{id}", with: "t1")
                for method in ["get", "put", "post", "delete"] where item[method] != nil {
                    operations += 1
                    let open = ((item[method] as? [String: Any])?["security"] as? [Any])?.isEmpty ?? false
                    let a = try await http.call(method.uppercased(), concrete + (concrete.hasPrefix("/v1/files") ? "?path=/" : ""))
                    #expect(a.status == (open ? 200 : 401), "\(method) \(path) answered \(a.status): \(a.text)")
                }
            }
            #expect(operations == 29, "every route is documented; the document names \(operations) operations")

            // A slow client that never finishes its request holds no one else up.
            let url = URL(string: http.base)!
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            addr.sin_port = UInt16(url.port!).bigEndian
            let connected = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            #expect(connected == 0)
            let partial = "POST /v1/namespaces/kv/exists HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"keys\":"
            _ = partial.withCString { send(fd, $0, strlen($0), 0) }
            for _ in 0..<5 { #expect(try await http.call("GET", "/v1/whoami", token: t).status == 200) }
            close(fd)
            #expect(try await http.call("GET", "/health").status == 200)
        }
    }
}
