import CisternCore
@testable import CisternKV
import CisternSQLite
import CisternWire
import Testing

/// The tenant registry, exercised directly on a real transactional KV (SQLite in memory).
@Suite struct TenantRegistryTests {
    let kv: SQLiteKV

    init() throws { kv = try SQLiteKV() }

    func run<T: Sendable>(_ body: @Sendable (TenantRegistry) async throws -> T) async throws -> T {
        try await kv.attempt { tx in try await body(TenantRegistry(tx, now: 42)) }
    }

    func refusal(_ body: @Sendable (TenantRegistry) async throws -> Void) async -> TenantError? {
        do {
            try await run(body)
            return nil
        } catch let e as TenantError {
            return e
        } catch {
            Issue.record("unexpected \(error)")
            return nil
        }
    }

    static func digest(_ b: UInt8) -> [UInt8] { [UInt8](repeating: b, count: TenantLimits.tokenHashBytes) }

    @Test func tenantsAreCreatedListedAndDeletedWithPreciseRefusals() async throws {
        try await run { try await $0.create("alpha", quota: TenantQuota(bytes: 1 << 20, pages: 16), capacityBytes: 0) }
        #expect(await refusal { try await $0.create("alpha", quota: TenantQuota(bytes: 1, pages: 1), capacityBytes: 0) } == .tenantExists("alpha"))
        for bad in ["", "Alpha", "a.b", "a/b", String(repeating: "x", count: 33)] {
            guard case .invalidName = await refusal({ try await $0.create(bad, quota: TenantQuota(bytes: 1, pages: 1), capacityBytes: 0) }) else {
                Issue.record("'\(bad)' was accepted")
                continue
            }
        }
        let listed = try await run { try await $0.list() }
        #expect(listed.map(\.name) == ["alpha"])
        #expect(listed[0].quota == TenantQuota(bytes: 1 << 20, pages: 16) && listed[0].used == TenantQuota(bytes: 0, pages: 0))
        try await run { try await $0.delete("alpha") }
        #expect(try await run { try await $0.list() }.isEmpty)
        #expect(await refusal { try await $0.delete("alpha") } == .noSuchTenant("alpha"))
        try await run { try await $0.ensure(TenantLimits.admin, quota: TenantQuota(bytes: 0, pages: 0)) }
        guard case .forbidden = await refusal({ try await $0.delete(TenantLimits.admin) }) else {
            Issue.record("the admin tenant was deleted")
            return
        }
    }

    @Test func aTokenAuthenticatesItsTenantUntilRevokedAndOnlyItsDigestIsStored() async throws {
        try await run { try await $0.create("alpha", quota: TenantQuota(bytes: 0, pages: 0), capacityBytes: 0) }
        try await run { try await $0.create("beta", quota: TenantQuota(bytes: 0, pages: 0), capacityBytes: 0) }
        try await run { try await $0.addToken("alpha", id: "t1", hash: Self.digest(1)) }
        try await run { try await $0.addToken("beta", id: "t1", hash: Self.digest(2)) }
        #expect(try await run { try await $0.authenticate(Self.digest(1)) } == "alpha")
        #expect(try await run { try await $0.authenticate(Self.digest(2)) } == "beta")
        #expect(await refusal { _ = try await $0.authenticate(Self.digest(3)) } == .unauthenticated)
        #expect(await refusal { _ = try await $0.authenticate([1, 2, 3]) } == .unauthenticated)
        // The same secret cannot be issued twice, to the same or another tenant.
        guard case .limit = await refusal({ try await $0.addToken("beta", id: "t2", hash: Self.digest(1)) }) else {
            Issue.record("a digest was issued twice")
            return
        }
        #expect(try await run { try await $0.info("alpha") }.tokenIDs == ["t1"])
        try await run { try await $0.revokeToken("alpha", id: "t1") }
        #expect(await refusal { _ = try await $0.authenticate(Self.digest(1)) } == .unauthenticated)
        #expect(await refusal { try await $0.revokeToken("alpha", id: "t1") } == .noSuchToken(tenant: "alpha", id: "t1"))
        // Deleting a tenant takes its tokens with it.
        try await run { try await $0.delete("beta") }
        #expect(await refusal { _ = try await $0.authenticate(Self.digest(2)) } == .unauthenticated)
        for i in 0..<TenantLimits.tokensPerTenantMax { try await run { try await $0.addToken("alpha", id: "k\(i)", hash: Self.digest(UInt8(10 + i))) } }
        #expect(await refusal { try await $0.addToken("alpha", id: "one-more", hash: Self.digest(200)) } == .tooManyTokens("alpha", limit: TenantLimits.tokensPerTenantMax))
    }

    @Test func namespacesClaimTheirCapacityOnTheOwnersQuotaAndNeverAnotherTenants() async throws {
        try await run { try await $0.create("alpha", quota: TenantQuota(bytes: 10_000, pages: 10), capacityBytes: 0) }
        try await run { try await $0.create("beta", quota: TenantQuota(bytes: 10_000, pages: 10), capacityBytes: 0) }
        try await run { try await $0.claim("alpha", namespace: "alpha.a", bytes: 6_000, pages: 6) }
        #expect(await refusal { try await $0.claim("alpha", namespace: "alpha.b", bytes: 6_000, pages: 2) }
            == .quotaExceeded(tenant: "alpha", needBytes: 6_000, needPages: 2, freeBytes: 4_000, freePages: 4))
        // Beta's quota is its own.
        try await run { try await $0.claim("beta", namespace: "beta.b", bytes: 6_000, pages: 6) }
        let alpha = try await run { try await $0.info("alpha") }
        #expect(alpha.namespaces == ["alpha.a"] && alpha.used == TenantQuota(bytes: 6_000, pages: 6))
        #expect(try await run { try await $0.owner(of: "beta.b") } == "beta")
        #expect(await refusal { try await $0.setQuota("alpha", TenantQuota(bytes: 5_000, pages: 10), capacityBytes: 0) } == .quotaBelowUse(tenant: "alpha", usedBytes: 6_000, usedPages: 6))
        #expect(await refusal { try await $0.delete("alpha") } == .notEmpty("alpha", namespaces: ["alpha.a"]))
        try await run { try await $0.release(namespace: "alpha.a") }
        try await run { try await $0.claim("alpha", namespace: "alpha.b", bytes: 10_000, pages: 10) }
        #expect(try await run { try await $0.owner(of: "alpha.a") } == nil)
    }

    @Test func theSumOfQuotasMustFitTheClustersCapacity() async throws {
        try await run { try await $0.create("alpha", quota: TenantQuota(bytes: 600, pages: 1), capacityBytes: 1_000) }
        #expect(await refusal { try await $0.create("beta", quota: TenantQuota(bytes: 500, pages: 1), capacityBytes: 1_000) } == .overcommitted(quotaBytes: 1_100, capacityBytes: 1_000))
        try await run { try await $0.create("beta", quota: TenantQuota(bytes: 400, pages: 1), capacityBytes: 1_000) }
        // Changing a quota counts the others, not the tenant's old one.
        try await run { try await $0.setQuota("alpha", TenantQuota(bytes: 500, pages: 1), capacityBytes: 1_000) }
        #expect(await refusal { try await $0.setQuota("alpha", TenantQuota(bytes: 700, pages: 1), capacityBytes: 1_000) } == .overcommitted(quotaBytes: 1_100, capacityBytes: 1_000))
    }

    @Test func requestsRepliesAndErrorsRoundTripTheWire() throws {
        let requests: [KVRequest] = [
            .tenant(.create(name: "a", quota: TenantQuota(bytes: 1, pages: 2), capacityBytes: 3)), .tenant(.delete(name: "a")), .tenant(.list),
            .tenant(.info(name: "a")), .tenant(.setQuota(name: "a", quota: TenantQuota(bytes: 4, pages: 5), capacityBytes: 6)),
            .tenant(.addToken(tenant: "a", id: "t", hash: Self.digest(9))), .tenant(.revokeToken(tenant: "a", id: "t")),
            .tenant(.authenticate(hash: Self.digest(8))), .tenant(.ensure(name: "admin", quota: TenantQuota(bytes: 0, pages: 0))),
            .createOwnedNamespace(owner: "a", name: "a.n", pageBytes: 4_096, capacityPages: 8, files: 1, durability: .cache),
        ]
        for r in requests { #expect(try KVRequest(wireBytes: r.wireBytes()) == r) }
        let errors: [TenantError] = [
            .invalidName("x", reason: "y"), .noSuchTenant("a"), .tenantExists("a"), .notEmpty("a", namespaces: ["a.n"]), .unauthenticated,
            .forbidden("no"), .tooManyTokens("a", limit: 3), .noSuchToken(tenant: "a", id: "t"),
            .quotaExceeded(tenant: "a", needBytes: 1, needPages: 2, freeBytes: 3, freePages: 4), .overcommitted(quotaBytes: 5, capacityBytes: 6),
            .quotaBelowUse(tenant: "a", usedBytes: 7, usedPages: 8), .limit("z"),
        ]
        for e in errors {
            #expect(try KVReply(wireBytes: KVReply.refused(.tenant(e)).wireBytes()) == .refused(.tenant(e)))
            #expect(!e.description.isEmpty)
        }
        let info = TenantInfo(name: "a", quota: TenantQuota(bytes: 1, pages: 2), used: TenantQuota(bytes: 0, pages: 1), namespaces: ["a.n"], tokenIDs: ["t"])
        #expect(try KVReply(wireBytes: KVReply.tenants([info]).wireBytes()) == .tenants([info]))
        #expect(try KVReply(wireBytes: KVReply.tenantName("a").wireBytes()) == .tenantName("a"))
    }
}
