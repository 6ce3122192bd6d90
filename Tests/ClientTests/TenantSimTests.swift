import Cistern
import CisternCore
import CisternKV
import CisternSim
import Testing

/// Two tenants in the simulator under lost, duplicated and reordered messages and a
/// metadata server's crash: every page either tenant reads is one that tenant wrote,
/// quota claims are never lost or counted twice across retries, and no tenant's
/// namespaces ever claim more than its quota.
@Suite struct TenantSimTests {
    static let quotaPages: UInt64 = 40
    static let pageBytes = 4_096

    /// A page that names its tenant and key, so a read of anyone else's is recognisable.
    static func page(_ tenant: String, _ key: String) -> [UInt8] {
        let stamp = Array("\(tenant)/\(key)/".utf8)
        return (0..<1_000).map { stamp[$0 % stamp.count] }
    }

    @Test(arguments: [UInt64(11), 12, 13, 14, 15])
    func tenantsNeverSeeEachOthersPagesAndQuotasHoldUnderFaults(seed: UInt64) {
        let log = withSimCluster(seed: seed, storage: 3, metaServers: 2) { world, client, log in
            let tenants = ["alpha", "beta"]
            do {
                for t in tenants {
                    _ = try await client.kvIndex.call(.tenant(.create(name: t, quota: TenantQuota(bytes: Self.quotaPages * UInt64(Self.pageBytes), pages: Self.quotaPages), capacityBytes: 0)))
                }
            } catch {
                log.failures.append("creating tenants: \(error)")
                return
            }
            world.network.config.lossProbability = 0.05
            world.network.config.duplicateProbability = 0.05
            world.network.config.reorderProbability = 0.1
            // Each tenant tries to create 6 namespaces of 10 pages (room for 4), with
            // the same names as the other tenant, while a metadata server crashes.
            let created = ResultBox()
            await withTaskGroup(of: Void.self) { group in
                for t in tenants {
                    for i in 0..<6 {
                        group.addTask {
                            let name = TenantNaming.indexName(tenant: t, namespace: "ns\(i)")
                            do {
                                _ = try await client.kvIndex.call(.createOwnedNamespace(owner: t, name: name, pageBytes: UInt32(Self.pageBytes), capacityPages: 10, files: 2, durability: .cache))
                                created.add(t, name)
                            } catch KVCacheError.tenant(.quotaExceeded) {
                                // Expected for the ones beyond the quota.
                            } catch {
                                log.failures.append("create \(name): \(error)")
                            }
                        }
                    }
                }
                group.addTask {
                    try? await client.runtime.sleep(nanoseconds: 300_000_000)
                    if let meta = try? world.node(named: "meta1") { world.restart(meta) }
                }
            }
            for t in tenants {
                let mine = created.names(t)
                log.check(mine.count == 4, "\(t) created \(mine.count) namespaces with room for 4: \(mine)")
                guard case .tenants(let info)? = try? await client.kvIndex.call(.tenant(.info(name: t))), let i = info.first else {
                    log.failures.append("no info for \(t)")
                    continue
                }
                log.check(Set(i.namespaces) == Set(mine), "\(t)'s claims \(i.namespaces) differ from what was created \(mine)")
                log.check(i.used.pages == UInt64(mine.count) * 10 && i.used.pages <= Self.quotaPages, "\(t) claims \(i.used.pages) pages")
            }
            // Both tenants write and read their own pages in namespaces of the same
            // local names; every page read back must be the reader's own.
            await withTaskGroup(of: Void.self) { group in
                for t in tenants {
                    group.addTask {
                        for name in created.names(t) {
                            guard let ns = try? await client.kvNamespace(name) else { log.failures.append("open \(name)"); continue }
                            let keys = (0..<12).map { "k\($0)" }
                            _ = try? await ns.put(keys.map { ($0, Self.page(t, $0)) })
                            guard let got = try? await ns.get(keys) else { continue }
                            for (k, g) in zip(keys, got) {
                                if let b = g.bytes, b != Self.page(t, k) { log.failures.append("\(t) read a page it did not write in \(name)/\(k)") }
                            }
                            if let u = try? await ns.usage() { log.check(u.confirmed + u.reserved <= 10, "\(name) holds \(u)") }
                        }
                    }
                }
            }
            // Dropping a namespace (retried under loss) releases its claim exactly once.
            world.network.config.lossProbability = 0.05
            let victim = created.names("alpha")[0]
            do {
                _ = try await client.kvIndex.call(.drop(name: victim))
            } catch KVCacheError.noSuchNamespace {
                // A retry of a drop that was applied.
            } catch {
                log.failures.append("drop \(victim): \(error)")
            }
            world.network.config.lossProbability = 0
            world.network.config.duplicateProbability = 0
            if case .tenants(let info)? = try? await client.kvIndex.call(.tenant(.info(name: "alpha"))), let i = info.first {
                log.check(i.used.pages == 30 && !i.namespaces.contains(victim), "after the drop alpha claims \(i.used.pages) pages: \(i.namespaces)")
            } else {
                log.failures.append("no info for alpha after the drop")
            }
        }
        #expect(log.failures.isEmpty, "seed \(seed): \(log.failures)")
    }
}

final class ResultBox: @unchecked Sendable {
    private var byTenant: [String: [String]] = [:]
    func add(_ t: String, _ name: String) { byTenant[t, default: []].append(name) }
    func names(_ t: String) -> [String] { (byTenant[t] ?? []).sorted() }
}
