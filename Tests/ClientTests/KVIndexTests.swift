import Cistern
import CisternCore
@testable import CisternKV
import CisternMeta
import CisternRouting
import CisternSQLite
import CisternStorage
import Testing

/// The KV cache index's slab of page slots, exercised directly on a real
/// transactional KV (SQLite in memory) with a virtual clock.
struct IndexHarness {
    let kv: SQLiteKV
    let ns = "t"
    var now: UInt64 = 1_000_000_000

    init(capacity: UInt64) async throws {
        kv = try SQLiteKV()
        let config = KVNamespaceConfig(name: ns, pageBytes: 4_096, capacityPages: capacity, slotsPerFile: capacity,
                                       files: [KVDataFile(inode: InodeID(10), layout: Layout(chunkBytes: 4_096, table: 1, tableVersion: 1, chains: [ChainID(1)], seed: 0))])
        try await kv.attempt { tx in try await KVIndex(tx, now: 0).putConfig(config) }
    }

    func run<T: Sendable>(_ body: @Sendable (KVIndex) async throws -> T) async throws -> T {
        let now = self.now
        return try await kv.attempt { tx in try await body(KVIndex(tx, now: now)) }
    }

    func audit() async throws -> [String] { try await run { try await $0.audit("t") } }
}

@Suite struct KVIndexTests {
    static let reservation: UInt64 = 60_000_000_000

    @Test func aPageIsInvisibleUntilConfirmedAndAPutOfAStoredKeyIsANoOp() async throws {
        let h = try await IndexHarness(capacity: 8)
        let (r, _) = try await h.run { try await $0.reserve("t", keys: ["a"], tokens: [7], reservationNanoseconds: Self.reservation) }
        guard case .reserved(let slot, let token) = r[0] else { Issue.record("expected a reservation, got \(r)"); return }
        #expect(try await h.run { try await $0.lookup("t", keys: ["a"], leaseNanoseconds: 1_000) } == [nil])
        #expect(try await h.run { try await $0.exists("t", keys: ["a"]) } == [false])
        let done = try await h.run { try await $0.confirm("t", [KVConfirmItem(key: "a", slot: slot, token: token, length: 3, checksum: 9)]) }
        #expect(done == [.confirmed])
        #expect(try await h.run { try await $0.exists("t", keys: ["a", "b"]) } == [true, false])
        #expect(try await h.run { try await $0.lookup("t", keys: ["a"], leaseNanoseconds: 1_000) } == [KVPageLocation(slot: slot, length: 3, checksum: 9, leaseNanoseconds: 1_000)])
        // Again: a no-op, and a repeated confirm (a retry) answers the same.
        let again = try await h.run { try await $0.reserve("t", keys: ["a"], tokens: [8], reservationNanoseconds: Self.reservation) }
        #expect(again.outcomes == [.exists])
        #expect(try await h.run { try await $0.confirm("t", [KVConfirmItem(key: "a", slot: slot, token: token, length: 3, checksum: 9)]) } == [.confirmed])
        #expect(try await h.audit().isEmpty)
    }

    @Test func twoConcurrentPutsOfOneKeyStoreItOnceAndFreeTheLosersSlot() async throws {
        let h = try await IndexHarness(capacity: 8)
        let (r, _) = try await h.run { try await $0.reserve("t", keys: ["k", "k"], tokens: [1, 2], reservationNanoseconds: Self.reservation) }
        guard case .reserved(let s1, _) = r[0], case .reserved(let s2, _) = r[1] else { Issue.record("\(r)"); return }
        #expect(s1 != s2)
        let done = try await h.run { try await $0.confirm("t", [KVConfirmItem(key: "k", slot: s2, token: 2, length: 1, checksum: 1), KVConfirmItem(key: "k", slot: s1, token: 1, length: 1, checksum: 1)]) }
        #expect(done == [.confirmed, .exists])
        let u = try await h.run { try await $0.usage("t") }
        #expect(u.confirmed == 1 && u.free == 1 && u.reserved == 0)
        #expect(try await h.audit().isEmpty)
    }

    @Test func usageAndAuditReadNamespacesLargerThanOneRangeReadInPages() async throws {
        let h = try await IndexHarness(capacity: 64)
        let keys = (0..<40).map { "k\($0)" }
        let (r, _) = try await h.run { try await $0.reserve("t", keys: keys, tokens: keys.indices.map { UInt64($0) + 1 }, reservationNanoseconds: Self.reservation) }
        var confirms: [KVConfirmItem] = []
        for (i, o) in r.enumerated() where i < 30 {
            guard case .reserved(let slot, let token) = o else { Issue.record("\(o)"); return }
            confirms.append(KVConfirmItem(key: keys[i], slot: slot, token: token, length: 1, checksum: 1))
        }
        _ = try await h.run { [confirms] in try await $0.confirm("t", confirms) }
        _ = try await h.run { try await $0.delete("t", keys: Array(keys[0..<5])) }
        let whole = try await h.run { try await $0.usage("t") }
        #expect(whole.confirmed == 25 && whole.reserved == 10 && whole.free == 5 && whole.highWater == 40, "\(whole)")
        // Pages of a few records give the same answer as one range read of all.
        for pagePairs in [1, 2, 3, 7, 39, 40, 41] {
            #expect(try await h.run { try await $0.usage("t", pagePairs: pagePairs) } == whole, "pages of \(pagePairs)")
            #expect(try await h.run { try await $0.audit("t", pagePairs: pagePairs) }.isEmpty, "pages of \(pagePairs)")
        }
        // A problem past the first page is still found.
        try await h.kv.attempt { tx in try await tx.clear(KVKeys.lru("t", h.now, "k29")) }
        let found = try await h.run { try await $0.audit("t", pagePairs: 2) }
        #expect(found.contains { $0.contains("LRU entries") }, "\(found)")
    }

    @Test func consecutiveHitsCountFromTheFirstKey() {
        #expect(KVExistsResult(present: [true, true, false, true]).consecutiveHits == 2)
        #expect(KVExistsResult(present: [false, true]).consecutiveHits == 0)
        #expect(KVExistsResult(present: [true, true]).consecutiveHits == 2)
        #expect(KVExistsResult(present: []).consecutiveHits == 0)
    }

    @Test func leasedSlotsAreNeitherEvictedNorReusedUntilTheLeaseEnds() async throws {
        var h = try await IndexHarness(capacity: 2)
        for (i, key) in ["a", "b"].enumerated() {
            let (r, _) = try await h.run { try await $0.reserve("t", keys: [key], tokens: [UInt64(i + 1)], reservationNanoseconds: Self.reservation) }
            guard case .reserved(let s, let t) = r[0] else { Issue.record("\(r)"); return }
            _ = try await h.run { try await $0.confirm("t", [KVConfirmItem(key: key, slot: s, token: t, length: 1, checksum: 1)]) }
            h.now += 2_000_000_000
        }
        // Both are read under a 10 s lease; "a" is the least recently used after.
        _ = try await h.run { try await $0.lookup("t", keys: ["a"], leaseNanoseconds: 10_000_000_000) }
        h.now += 2_000_000_000
        _ = try await h.run { try await $0.lookup("t", keys: ["b"], leaseNanoseconds: 10_000_000_000) }
        h.now += 1_000_000_000
        let full = try await h.run { try await $0.reserve("t", keys: ["c"], tokens: [3], reservationNanoseconds: Self.reservation) }
        #expect(full.outcomes == [.full], "nothing may be evicted while both slots are leased")
        // Deleting a leased key frees its slot only when the lease ends.
        #expect(try await h.run { try await $0.delete("t", keys: ["b"]) } == 1)
        #expect(try await h.run { try await $0.reserve("t", keys: ["c"], tokens: [4], reservationNanoseconds: Self.reservation) }.outcomes == [.full])
        h.now += 20_000_000_000
        let later = try await h.run { try await $0.reserve("t", keys: ["c", "d"], tokens: [5, 6], reservationNanoseconds: Self.reservation) }
        #expect(later.outcomes.allSatisfy { if case .reserved = $0 { return true } else { return false } }, "\(later)")
        #expect(later.evicted == 1, "a (least recently used, lease over) is evicted; b's slot comes from the free list")
        #expect(try await h.run { try await $0.exists("t", keys: ["a", "b"]) } == [false, false])
        #expect(try await h.audit().isEmpty)
    }

    /// Fills the namespace with confirmed keys k0..k(n-1), one slot each.
    static func fill(_ h: IndexHarness, _ n: Int) async throws {
        let keys = (0..<n).map { "k\($0)" }
        let (r, _) = try await h.run { try await $0.reserve("t", keys: keys, tokens: keys.indices.map { UInt64($0) + 1 }, reservationNanoseconds: Self.reservation) }
        var confirms: [KVConfirmItem] = []
        for (i, o) in r.enumerated() {
            guard case .reserved(let slot, let token) = o else { Issue.record("\(o)"); return }
            confirms.append(KVConfirmItem(key: keys[i], slot: slot, token: token, length: 1, checksum: 1))
        }
        _ = try await h.run { [confirms] in try await $0.confirm("t", confirms) }
    }

    /// The monitoring test's failure: the least recently used keys are all under read
    /// leases (read just after their put, so their LRU place did not move) while
    /// evictable keys follow them. A put must evict one of those, not answer full
    /// (eviction used to read one bounded window of the LRU list).
    @Test func aPutEvictsPastAHeadOfLeasedKeysInsteadOfAnsweringFull() async throws {
        var h = try await IndexHarness(capacity: 400)
        try await Self.fill(h, 400)
        let leased = (0..<300).map { "k\($0)" }
        _ = try await h.run { try await $0.lookup("t", keys: leased, leaseNanoseconds: 5_000_000_000) }
        h.now += 100_000_000
        let r = try await h.run { try await $0.reserve("t", keys: ["new0", "new1"], tokens: [9001, 9002], reservationNanoseconds: Self.reservation) }
        #expect(r.outcomes.allSatisfy { if case .reserved = $0 { return true } else { return false } }, "\(r.outcomes)")
        #expect(r.evicted == 2)
        let present = try await h.run { try await $0.exists("t", keys: leased + ["k300", "k301", "k302"]) }
        #expect(present.prefix(300).allSatisfy { $0 }, "no leased key is evicted")
        #expect(Array(present.suffix(3)) == [false, false, true], "the two least recently used unleased keys are")
        // With every key leased the namespace is full.
        let rest = (300..<400).map { "k\($0)" }
        _ = try await h.run { try await $0.lookup("t", keys: rest, leaseNanoseconds: 5_000_000_000) }
        let full = try await h.run { try await $0.reserve("t", keys: ["new2"], tokens: [9003], reservationNanoseconds: Self.reservation) }
        #expect(full.outcomes == [.full])
    }

    /// The soak's failure: the lowest-numbered free slots all wait on read leases while
    /// later free slots are usable now. A put must take a usable one, not evict a live
    /// page (the free list used to be read in slot order through a bounded window).
    @Test func aPutTakesAUsableFreeSlotBehindManyLeasedOnesInsteadOfEvicting() async throws {
        var h = try await IndexHarness(capacity: 300)
        try await Self.fill(h, 300)
        let leased = (0..<200).map { "k\($0)" }
        _ = try await h.run { try await $0.lookup("t", keys: leased, leaseNanoseconds: 5_000_000_000) }
        h.now += 1_000_000_000
        #expect(try await h.run { try await $0.delete("t", keys: leased) } == 200)
        #expect(try await h.run { try await $0.delete("t", keys: (200..<220).map { "k\($0)" }) } == 20)
        let put = try await h.run { try await $0.reserve("t", keys: ["new0", "new1"], tokens: [1_001, 1_002], reservationNanoseconds: Self.reservation) }
        #expect(put.evicted == 0, "usable free slots exist: nothing may be evicted")
        for o in put.outcomes {
            guard case .reserved(let slot, _) = o else { Issue.record("\(o)"); continue }
            #expect((200..<220).contains(slot.rawValue), "\(slot) must be one of the deleted, unleased slots")
        }
        let live = (220..<300).map { "k\($0)" }
        #expect(try await h.run { try await $0.exists("t", keys: live) }.allSatisfy { $0 })
        // After the leases end the other deleted slots serve puts, still without eviction.
        h.now += 10_000_000_000
        let more = (0..<200).map { "m\($0)" }
        let later = try await h.run { try await $0.reserve("t", keys: more, tokens: more.indices.map { UInt64($0) + 2_000 }, reservationNanoseconds: Self.reservation) }
        #expect(later.evicted == 0)
        #expect(later.outcomes.allSatisfy { if case .reserved = $0 { return true } else { return false } })
        #expect(try await h.run { try await $0.exists("t", keys: live) }.allSatisfy { $0 })
        #expect(try await h.audit().isEmpty)
    }

    /// An index written by an older build keeps its free list by slot with the usable
    /// time in the value: those slots are still counted, audited and handed out.
    @Test func freeSlotsInTheOlderLayoutAreStillUsed() async throws {
        var h = try await IndexHarness(capacity: 4)
        try await Self.fill(h, 4)
        _ = try await h.run { try await $0.delete("t", keys: ["k1", "k2"]) }
        // Rewrite those two free records in the older layout: k1's usable now, k2's later.
        let now = h.now
        _ = try await h.run { index in
            for (raw, from) in [(UInt64(1), now), (UInt64(2), now + 5_000_000_000)] {
                try await index.tx.clear(KVKeys.free("t", usableFrom: now, PageSlot(raw)))
                try await index.tx.set(KVKeys.legacyFree("t", PageSlot(raw)), KeyCoding.bigEndian(from))
            }
        }
        #expect(try await h.run { try await $0.usage("t") }.free == 2)
        #expect(try await h.audit().isEmpty)
        let first = try await h.run { try await $0.reserve("t", keys: ["a"], tokens: [50], reservationNanoseconds: Self.reservation) }
        #expect(first.outcomes == [.reserved(slot: PageSlot(1), token: 50)] && first.evicted == 0, "\(first)")
        h.now += 6_000_000_000
        let second = try await h.run { try await $0.reserve("t", keys: ["b"], tokens: [51], reservationNanoseconds: Self.reservation) }
        #expect(second.outcomes == [.reserved(slot: PageSlot(2), token: 51)] && second.evicted == 0, "\(second)")
        #expect(try await h.audit().isEmpty)
    }

    @Test func evictionTakesTheLeastRecentlyReadKey() async throws {
        var h = try await IndexHarness(capacity: 3)
        for (i, key) in ["a", "b", "c"].enumerated() {
            let (r, _) = try await h.run { try await $0.reserve("t", keys: [key], tokens: [UInt64(i + 1)], reservationNanoseconds: Self.reservation) }
            guard case .reserved(let s, let t) = r[0] else { Issue.record("\(r)"); return }
            _ = try await h.run { try await $0.confirm("t", [KVConfirmItem(key: key, slot: s, token: t, length: 1, checksum: 1)]) }
            h.now += 2_000_000_000
        }
        _ = try await h.run { try await $0.lookup("t", keys: ["a"], leaseNanoseconds: 1) }
        h.now += 2_000_000_000
        let r = try await h.run { try await $0.reserve("t", keys: ["d"], tokens: [9], reservationNanoseconds: Self.reservation) }
        #expect(r.evicted == 1)
        #expect(try await h.run { try await $0.exists("t", keys: ["a", "b", "c"]) } == [true, false, true])
        #expect(try await h.audit().isEmpty)
    }

    /// Random puts, confirms, aborts, abandoned reservations (clients that die between
    /// reserve and confirm), reads under leases, deletes and time passing, over many
    /// seeds: the slab's invariants hold after every step; no reservation ever hands
    /// out a slot that is held or under a live lease; and after every client "crashes"
    /// and the reservations expire, every slot is accounted for and usable again.
    @Test(arguments: 1...40)
    func noSlotIsHandedOutTwiceAndNoneLeaksAfterCrashes(seed: UInt64) async throws {
        let capacity: UInt64 = 24
        var h = try await IndexHarness(capacity: capacity)
        var rng = DeterministicRandom(seed: seed)
        var nextToken: UInt64 = 1
        // The model: who holds each slot, and each slot's latest lease end.
        var reservedUntil: [PageSlot: UInt64] = [:]
        var leaseEnd: [PageSlot: UInt64] = [:]
        var open: [(key: String, slot: PageSlot, token: UInt64)] = []
        let keys = (0..<40).map { "key\($0)" }
        for step in 0..<300 {
            let roll = rng.unit()
            if roll < 0.35 {
                let batch = (0..<Int.random(in: 1...4, using: &rng)).map { _ in keys[Int.random(in: 0..<keys.count, using: &rng)] }
                let tokens = batch.map { _ in defer { nextToken += 1 }; return nextToken }
                let (r, _) = try await h.run { try await $0.reserve("t", keys: batch, tokens: tokens, reservationNanoseconds: Self.reservation) }
                for (i, o) in r.enumerated() {
                    guard case .reserved(let s, let t) = o else { continue }
                    #expect(s.rawValue < capacity)
                    #expect((reservedUntil[s] ?? 0) <= h.now, "step \(step): \(s) handed out while another put's reservation holds it")
                    #expect((leaseEnd[s] ?? 0) <= h.now, "step \(step): \(s) reused under a live lease")
                    reservedUntil[s] = h.now + Self.reservation
                    open.append((batch[i], s, t))
                }
            } else if roll < 0.6, !open.isEmpty {
                let i = Int.random(in: 0..<open.count, using: &rng)
                let p = open.remove(at: i)
                reservedUntil[p.slot] = nil
                _ = try await h.run { try await $0.confirm("t", [KVConfirmItem(key: p.key, slot: p.slot, token: p.token, length: 1, checksum: 1)]) }
            } else if roll < 0.65, !open.isEmpty {
                let p = open.removeFirst()
                reservedUntil[p.slot] = nil
                try await h.run { try await $0.abort("t", [(p.slot, p.token)]) }
            } else if roll < 0.7, !open.isEmpty {
                open.removeFirst()   // the putting client died: never confirmed, never aborted
            } else if roll < 0.85 {
                let batch = (0..<3).map { _ in keys[Int.random(in: 0..<keys.count, using: &rng)] }
                let lease = UInt64.random(in: 1...5, using: &rng) * 1_000_000_000
                let found = try await h.run { try await $0.lookup("t", keys: batch, leaseNanoseconds: lease) }
                for loc in found.compactMap({ $0 }) {
                    #expect(loc.leaseNanoseconds >= lease / 2, "a lease shorter than half the request")
                    leaseEnd[loc.slot] = max(leaseEnd[loc.slot] ?? 0, h.now + loc.leaseNanoseconds)
                }
            } else if roll < 0.9 {
                let key = keys[Int.random(in: 0..<keys.count, using: &rng)]
                _ = try await h.run { try await $0.delete("t", keys: [key]) }
            } else {
                h.now += UInt64.random(in: 1...4, using: &rng) * 1_000_000_000
            }
            let problems = try await h.audit()
            #expect(problems.isEmpty, "seed \(seed) step \(step): \(problems)")
            if !problems.isEmpty { return }
        }
        // Every client crashes; the reservations expire; every slot comes back.
        h.now += Self.reservation + 10_000_000_000
        _ = try await h.run { try await $0.reclaimExpired("t", limit: 10_000) }
        let u = try await h.run { try await $0.usage("t") }
        #expect(u.reserved == 0, "\(u)")
        #expect(u.confirmed + u.free == u.highWater, "leaked slots: \(u)")
        #expect(try await h.audit().isEmpty)
        // And the whole capacity can be reserved again by new keys.
        let fresh = (0..<Int(capacity)).map { "new\($0)" }
        let (r, _) = try await h.run { try await $0.reserve("t", keys: fresh, tokens: fresh.indices.map { UInt64($0) + 1_000_000 }, reservationNanoseconds: Self.reservation) }
        let slots = r.compactMap { o -> PageSlot? in if case .reserved(let s, _) = o { return s } else { return nil } }
        #expect(slots.count == Int(capacity), "only \(slots.count) of \(capacity) slots could be reserved after recovery")
        #expect(Set(slots).count == slots.count, "a slot was handed out twice")
        #expect(try await h.audit().isEmpty)
    }
}


@Suite struct KVSubBatchTests {
    @Test func subBatchesStayWithinTheWriteLimitsAndKeepEveryPageInOrder() {
        var rng = DeterministicRandom(seed: 7)
        for _ in 0..<200 {
            let pages = (0..<Int.random(in: 0...300, using: &rng)).map { i in (i, Int.random(in: 1...(4 << 20), using: &rng)) }
            let groups = KVNamespace.split(pages, bytes: { $0.1 })
            #expect(groups.flatMap { $0 }.map(\.0) == pages.map(\.0))
            for g in groups {
                #expect(!g.isEmpty && g.count <= StorageLimits.writeBatchItemsMax)
                let bytes = g.reduce(0) { $0 + $1.1 }
                // A group over the target holds one page (a page larger than it).
                #expect(bytes <= StorageLimits.subBatchBytesTarget || g.count == 1)
                #expect(bytes <= StorageLimits.writeBatchBytesMax)
            }
        }
        // 128 pages of 1 MiB: one request per page, each far below the message limit;
        // 128 of 64 KiB: 8 requests.
        #expect(KVNamespace.split(Array(repeating: 1 << 20, count: 128), bytes: { $0 }).count == 128)
        #expect(KVNamespace.split(Array(repeating: 64 << 10, count: 128), bytes: { $0 }).count == 8)
    }
}

@Suite struct KVReadGroupTests {
    @Test func aBatchOf128PagesOf1MiBIsReadWithBoundedRequestsEachBelowTheMessageLimit() {
        for (count, bytes) in [(128, 1 << 20), (128, 64 << 10), (1, 16 << 20), (5_000, 4 << 10), (300, 0)] {
            let groups = StorageClient.readGroups(count: count, expectedBytes: bytes)
            #expect(groups.flatMap { Array($0) } == Array(0..<count))
            for g in groups {
                #expect(g.count <= StorageLimits.batchChunksMax)
                if bytes > 0 { #expect(g.count * bytes <= max(StorageLimits.subBatchBytesTarget, bytes)) }
                #expect(g.count * bytes < TransportLimits.messageBytesMax)
            }
        }
        #expect(StorageClient.readGroups(count: 128, expectedBytes: 1 << 20).count == 128)
        #expect(StorageClient.readGroups(count: 128, expectedBytes: 64 << 10).count == 8)
    }
}
