import Cistern
import CisternAuth
import CisternConnect
import CisternCore
import CisternKV
import CisternMeta
import CisternMgmtd
import CisternRouting
import CisternServer
import CisternStorage
import CisternWire
import Foundation
import Testing

/// Tenants everywhere, against a real local cluster (real processes, TCP): native
/// clients carry tokens, metadata and index servers check them, storage servers
/// refuse chunk requests without a valid capability, including forged requests
/// that name another tenant's real chunk ids.
@Suite(.serialized) struct TenantIsolationTests {
    static func withCluster(_ body: (LocalCluster, ClientSession) async throws -> Void) async throws {
        try #require(FileManager.default.isExecutableFile(atPath: LocalClusterKillTests.binary), "build the cistern binary first (swift build)")
        let dir = NSTemporaryDirectory() + "cistern-tenants-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        let cluster = LocalCluster(dataDir: dir)
        try await cluster.up(storageNodes: 3, binary: LocalClusterKillTests.binary)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let admin = try await ClientSession.connect(cluster, name: "admin")
        do {
            try await body(cluster, admin)
        } catch {
            await admin.close()
            try? await cluster.down()
            throw error
        }
        await admin.close()
        try await cluster.down()
    }

    /// Creates a tenant natively (as the admin) and returns a session acting as it.
    static func tenant(_ admin: ClientSession, _ cluster: LocalCluster, _ name: String) async throws -> (session: ClientSession, token: String) {
        _ = try await admin.client.kvIndex.call(.tenant(.create(name: name, quota: TenantQuota(bytes: 1 << 30, pages: 1 << 20), capacityBytes: 1 << 50)))
        let token = "cst_test_\(name)_" + String(repeating: "x", count: 24)
        _ = try await admin.client.kvIndex.call(.tenant(.addToken(tenant: name, id: "t1", hash: TokenDigest.of(token))))
        return (try await ClientSession.connect(cluster.clusterConfig(), name: name, token: token), token)
    }

    static func isPermissionDenied(_ e: any Error) -> Bool { CisternError.isPermissionDenied(e) }

    /// Runs `body` and says whether it was refused for permission (anything else,
    /// success included, is a failure of the test).
    static func refused(_ what: String, _ body: () async throws -> Void) async -> Bool {
        do {
            try await body()
            Issue.record("\(what) was allowed")
            return false
        } catch {
            if !isPermissionDenied(error) { Issue.record("\(what) failed otherwise: \(error)") }
            return isPermissionDenied(error)
        }
    }

    @Test func tenantsCannotReachEachOthersFilesNamespacesOrChunks() async throws {
        try await Self.withCluster { cluster, admin in
            let (alpha, _) = try await Self.tenant(admin, cluster, "alpha")
            let (beta, betaToken) = try await Self.tenant(admin, cluster, "beta")
            // Alpha's file and KV pages.
            let secret = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
            try await alpha.client.mkdir("/tenants/alpha/dir")
            try await alpha.client.writeFile("/tenants/alpha/dir/secret", secret)
            let ns = try await alpha.client.kvNamespace("alpha.kv", pageBytes: 4_096, capacityPages: 64)
            let page = [UInt8](repeating: 0xA1, count: 4_096)
            #expect(try await ns.put([("k1", page)]) == [.stored])
            // Beta works in its own tree and namespaces.
            try await beta.client.writeFile("/tenants/beta/mine", [1, 2, 3])
            #expect(try await beta.client.readFile("/tenants/beta/mine") == [1, 2, 3])
            let betaNS = try await beta.client.kvNamespace("beta.kv", pageBytes: 4_096, capacityPages: 16)
            #expect(try await betaNS.put([("b", page)]) == [.stored])

            // Beta cannot reach alpha's files through the metadata service…
            let b = beta.client
            #expect(await Self.refused("stat") { _ = try await b.stat("/tenants/alpha/dir/secret") })
            #expect(await Self.refused("open") { _ = try await b.open("/tenants/alpha/dir/secret") })
            #expect(await Self.refused("list") { _ = try await b.list("/tenants/alpha") })
            #expect(await Self.refused("list /tenants") { _ = try await b.list("/tenants") })
            #expect(await Self.refused("list /") { _ = try await b.list("/") })
            #expect(await Self.refused("remove") { try await b.remove("/tenants/alpha/dir", recursive: true) })
            #expect(await Self.refused("rename out") { try await b.rename("/tenants/alpha/dir/secret", "/tenants/beta/stolen") })
            #expect(await Self.refused("link") { _ = try await b.meta.call(.link("/tenants/alpha/dir/secret", "/tenants/beta/link")) })
            #expect(await Self.refused("create") { _ = try await b.create("/tenants/alpha/planted") })
            #expect(await Self.refused("kv data file") { _ = try await b.open("/.kvcache/alpha.kv/pages.0") })
            let secretInode = try await admin.client.stat("/tenants/alpha/dir/secret")
            #expect(await Self.refused("batchStat by inode") { _ = try await b.meta.call(.batchStat([secretInode.id])) })
            #expect(await Self.refused("sync by inode") { _ = try await b.meta.call(.sync(secretInode.id, length: 1)) })
            // … nor alpha's namespaces through the index.
            #expect(await Self.refused("describe") { _ = try await b.kvNamespace("alpha.kv") })
            #expect(await Self.refused("create in alpha's name") { _ = try await b.kvNamespace("alpha.planted", pageBytes: 4_096, capacityPages: 4) })
            #expect(await Self.refused("tenant management") { _ = try await b.kvIndex.call(.tenant(.list)) })
            for request: KVRequest in [.lookup(name: "alpha.kv", keys: ["k1"], leaseNanoseconds: 1_000_000_000), .exists(name: "alpha.kv", keys: ["k1"]),
                                       .delete(name: "alpha.kv", keys: ["k1"]), .drop(name: "alpha.kv"), .reserve(name: "alpha.kv", keys: ["x"])] {
                #expect(await Self.refused("\(request)") { _ = try await b.kvIndex.call(request) })
            }
            guard case .namespaces(let visible) = try await b.kvIndex.call(.list) else { throw CisternError.invalidArgument("no list") }
            #expect(visible == ["beta.kv"])

            // … nor alpha's chunks on the storage servers, by their real ids.
            let layout = try #require(secretInode.layout)
            let chunk = ChunkID(inode: secretInode.id.rawValue, index: 0)
            let chain = try #require(layout.chain(ofChunk: 0))
            await b.storage.setAttempts(3)
            #expect(await Self.refused("storage read") { _ = try await b.storage.read(chunk, chain: chain) })
            #expect(await Self.refused("storage length") { _ = try await b.storage.length(of: chunk, chain: chain) })
            #expect(await Self.refused("storage write") { _ = try await b.storage.write(chunk, chain: chain, [0xEE], durable: true) })
            let batch = await b.storage.writeBatch([(chunk, [UInt8](repeating: 0xEE, count: 16))], chain: chain, durable: true)
            #expect(batch.count == 1 && batch.allSatisfy { if case .failure(.forbidden) = $0 { true } else { false } })
            let dataFile = ns.config.files[0]
            let kvChunk = ChunkID(inode: dataFile.inode.rawValue, index: 0)
            #expect(await Self.refused("KV page read") { _ = try await b.storage.read(kvChunk, chain: try #require(dataFile.layout.chain(ofChunk: 0))) })

            // Forged requests straight on the wire: a capability for beta's own file
            // relabelled with alpha's inode, a made-up one, and a server-only request.
            let routing = try #require(await admin.client.mgmtd.routing)
            let chainInfo = try #require(routing.chain(chain))
            let replica = chainInfo.targets[0].target
            let node = try #require(routing.target(replica)?.node)
            let mine = try await b.stat("/tenants/beta/mine")
            let own = try #require(b.wallet?.capability(for: mine.id.rawValue))
            let forgeries: [(String, StorageRequest, [Capability])] = [
                ("relabelled capability", .read(target: replica, chain: chain, chainVersion: chainInfo.version, chunk: chunk),
                 [Capability(inode: chunk.inode, rights: own.rights, mac: own.mac)]),
                ("made-up capability", .read(target: replica, chain: chain, chainVersion: chainInfo.version, chunk: chunk),
                 [Capability(inode: chunk.inode, rights: .readWrite, mac: [UInt8](repeating: 7, count: 16))]),
                ("service request with a client's capability", .removeChunk(target: replica, chainVersion: chainInfo.version, chunk: chunk), [own]),
                ("no capability", .statChunk(target: replica, chain: chain, chainVersion: chainInfo.version, chunk: chunk), []),
            ]
            for (what, request, caps) in forgeries {
                let response = try await beta.transport.call(node, service: storageService, request.message(trailer: AuthTrailer(capabilities: caps)), timeoutNanoseconds: 10_000_000_000)
                let reply = try StorageReply(wireBytes: response.header)
                guard case .forbidden = reply else { Issue.record("\(what): \(reply)"); continue }
                #expect(response.bulk.isEmpty, "\(what) returned bytes")
            }
            // Routing changes and server heartbeats need the cluster key, which tenants lack.
            let storageNode = try #require(routing.nodes.first { $0.role == .storage })
            let mgmtdRequests: [MgmtdRequest] = [
                .createChains(replicas: 1), .setNodeEnabled(storageNode.id, enabled: false), .offlineTarget(replica),
                .heartbeat(Heartbeat(node: storageNode.id, role: .storage, name: "forged", sequence: 1 << 40, targets: [])),
            ]
            for request in mgmtdRequests {
                do {
                    _ = try await b.mgmtd.call(request)
                    Issue.record("\(request.kindName) was allowed without the cluster key")
                } catch {
                    #expect("\(error)".contains("needs the cluster key"), "\(error)")
                }
            }
            #expect(await admin.client.mgmtd.routing?.nodes.first { $0.id == storageNode.id }?.status == storageNode.status)

            // A client without a token gets nothing.
            let anonymous = try await ClientSession.connect(cluster.clusterConfig(), name: "anonymous", token: nil)
            #expect(await Self.refused("anonymous stat") { _ = try await anonymous.client.stat("/tenants/alpha/dir/secret") })
            #expect(await Self.refused("anonymous describe") { _ = try await anonymous.client.kvNamespace("alpha.kv") })
            await anonymous.client.storage.setAttempts(2)
            #expect(await Self.refused("anonymous storage read") { _ = try await anonymous.client.storage.read(chunk, chain: chain) })
            await anonymous.close()

            // Alpha's data is intact, and the admin sees everything.
            #expect(try await alpha.client.readFile("/tenants/alpha/dir/secret") == secret)
            #expect(try await ns.get(["k1"]) == [.found(page)])
            #expect(try await admin.client.readFile("/tenants/alpha/dir/secret") == secret)

            // A revoked token stops working within the servers' token cache time (1 s).
            _ = try await admin.client.kvIndex.call(.tenant(.revokeToken(tenant: "beta", id: "t1")))
            try await Task.sleep(nanoseconds: 1_500_000_000)
            #expect(await Self.refused("revoked token") { _ = try await b.stat("/tenants/beta/mine") })
            #expect(await Self.refused("revoked token on the index") { _ = try await b.kvNamespace("beta.kv") })
            _ = betaToken
            await alpha.close()
            await beta.close()
        }
    }
}
