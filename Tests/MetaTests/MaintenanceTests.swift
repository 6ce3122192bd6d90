import CisternCore
import CisternMeta
import CisternNIO
import CisternRouting
import CisternSQLite
import CisternStorage
import Synchronization
import Logging
import Testing

/// A chunk remover that fails for chosen files and records what it was asked.
final class RecordingRemover: ChunkRemover {
    let failing: Set<InodeID>
    let asked = Mutex<[InodeID]>([])
    init(failing: Set<InodeID>) { self.failing = failing }
    struct Unreachable: Error {}
    func removeChunks(of inode: InodeID, layout: Layout, range: Range<UInt64>) async throws {
        asked.withLock { $0.append(inode) }
        if failing.contains(inode) { throw Unreachable() }
    }
}

/// Storage as a length probe: chunk 0 of every file holds `bytes`, no other chunk exists.
struct OneChunkProbe: ChunkLengthProbe {
    let bytes: Int
    func length(of chunk: ChunkID, chain: ChainID) async throws -> Int? { chunk.index == 0 ? bytes : nil }
}

/// A production runtime whose clock moves only when the test says so: the lease and
/// expiry rules are exercised at exact instants, whatever the load on the machine.
final class SteppedClockRuntime: Runtime {
    let base = ProductionRuntime(nodeName: "meta-test", baseSeed: 1, logLevel: .critical)
    let now = Mutex<UInt64>(1_000_000_000)
    var nodeName: String { base.nodeName }
    func advance(nanoseconds: UInt64) { now.withLock { $0 += nanoseconds } }
    func nowNanoseconds() -> UInt64 { now.withLock { $0 } }
    func sleep(nanoseconds: UInt64) async throws { try await base.sleep(nanoseconds: nanoseconds) }
    func spawn(_ name: String, _ operation: sending @escaping () async -> Void) { base.spawn(name, operation) }
    func random(_ stream: String) -> DeterministicRandom { base.random(stream) }
    func freshRandom(_ stream: String) -> DeterministicRandom { base.freshRandom(stream) }
    func logger(_ label: String) -> Logger { base.logger(label) }
    func makeActorExecutor() -> UnownedSerialExecutor { base.makeActorExecutor() }
}

func keys(_ m: MetaService, _ prefix: String) async throws -> Int {
    try await m.read { try await $0.tx.getRange(.prefix(Array(prefix.utf8)), limit: 10_000, reverse: false).count }
}

@Suite struct MaintenanceTests {
    @Test func theLeaseRuleTakesLapsedLeasesRenewsItsOwnAndRespectsOthers() {
        let now: UInt64 = 1_000
        typealias L = MaintenanceLease
        #expect(L.decide(current: nil, me: 1, nowNanoseconds: now) == .take)
        #expect(L.decide(current: L(owner: 1, expiresAtNanoseconds: now + 1), me: 1, nowNanoseconds: now) == .renew)
        #expect(L.decide(current: L(owner: 2, expiresAtNanoseconds: now + 1), me: 1, nowNanoseconds: now) == .standBy(owner: 2))
        // Expiry is exclusive: at the instant it ends the lease is free, for anyone.
        #expect(L.decide(current: L(owner: 2, expiresAtNanoseconds: now), me: 1, nowNanoseconds: now) == .take)
        #expect(L.decide(current: L(owner: 1, expiresAtNanoseconds: now), me: 1, nowNanoseconds: now) == .take)
        #expect(L.decide(current: L(owner: 2, expiresAtNanoseconds: 0), me: 1, nowNanoseconds: now) == .take)
    }

    @Test func oneServerHoldsTheLeaseAndAnotherTakesOverWhenItLapses() async throws {
        let kv = try SQLiteKV()
        let rt = SteppedClockRuntime()
        let a = MetaService(kv: kv, runtime: rt, policy: policy)
        let b = MetaService(kv: kv, runtime: rt, policy: policy)
        let lease: UInt64 = 300_000_000
        #expect(try await a.acquireMaintenanceLease(me: 10, leaseNanoseconds: lease))
        #expect(try await !b.acquireMaintenanceLease(me: 11, leaseNanoseconds: lease))
        #expect(try await a.acquireMaintenanceLease(me: 10, leaseNanoseconds: lease), "the holder renews")
        #expect(try await !b.acquireMaintenanceLease(me: 11, leaseNanoseconds: lease))
        // a stops renewing (it died); up to the last instant of its lease b waits...
        rt.advance(nanoseconds: lease - 1)
        #expect(try await !b.acquireMaintenanceLease(me: 11, leaseNanoseconds: lease))
        // ...and once it ends b takes over and a is out.
        rt.advance(nanoseconds: 1)
        #expect(try await b.acquireMaintenanceLease(me: 11, leaseNanoseconds: lease))
        #expect(try await !a.acquireMaintenanceLease(me: 10, leaseNanoseconds: lease))
    }

    @Test func garbageCollectionResumesPastFilesItCannotCollectYet() async throws {
        let m = try service()
        var files: [InodeID] = []
        for i in 0..<5 {
            files.append(try await m.create("/f\(i)").id)
            try await m.remove("/f\(i)")
        }
        // The first two files' replicas cannot be reached; with two files a round, a
        // collector that always started from the beginning would never get past them.
        let remover = RecordingRemover(failing: [files[0], files[1]])
        var settings = MaintenanceSettings()
        settings.garbageDelayNanoseconds = 0
        settings.batchMax = 2
        let maintenance = MetaMaintenance(meta: m, me: 10, remover: remover, probe: OneChunkProbe(bytes: 0), settings: settings,
                                          runtime: ProductionRuntime(nodeName: "meta-test", baseSeed: 1, logLevel: .critical))
        let r1 = try await maintenance.round()
        #expect(r1.owner && r1.filesCollected == 0 && r1.filesFailed == 2)
        let r2 = try await maintenance.round()
        #expect(r2.filesCollected == 2)
        let r3 = try await maintenance.round()
        #expect(r3.filesCollected == 1)
        #expect(Set(remover.asked.withLock { $0 }) == Set(files), "every removed file was tried")
        #expect(try await m.read { try await $0.statfs() }.garbage == 2, "the unreachable files stay queued")
        // The next round wraps around and tries them again.
        let r4 = try await maintenance.round()
        #expect(r4.filesFailed == 2 && r4.filesCollected == 0)
    }

    @Test func writeSessionsOfSilentClientsAreReconciledAndLiveOnesKept() async throws {
        let rt = SteppedClockRuntime()
        let m = MetaService(kv: try SQLiteKV(), runtime: rt, policy: policy)
        let a = try await m.create("/a")
        let b = try await m.create("/b")
        let dead: UInt64 = 7
        let alive: UInt64 = 8
        _ = try await m.mutate { try await $0.open("/a", write: true, session: dead << 32 | 1) }
        _ = try await m.mutate { try await $0.open("/b", write: true, session: alive << 32 | 1) }
        var settings = MaintenanceSettings()
        settings.sessionTimeoutNanoseconds = 400_000_000
        let maintenance = MetaMaintenance(meta: m, me: 10, remover: RecordingRemover(failing: []), probe: OneChunkProbe(bytes: 1_000),
                                          settings: settings, runtime: rt)
        // Before the timeout nothing is touched.
        #expect(try await maintenance.round().sessionsReconciled == 0)
        rt.advance(nanoseconds: 500_000_000)
        try await m.keepAlive(client: alive)
        let r = try await maintenance.round()
        #expect(r.sessionsReconciled == 1)
        #expect(try await m.read { try await $0.inode(a.id) }?.length == 1_000, "the silent client's file got its length from storage")
        #expect(try await m.read { try await $0.inode(b.id) }?.length == 0, "the live client's file was left to it")
        #expect(try await keys(m, "s/") == 1)
        // The live client falls silent too.
        rt.advance(nanoseconds: 500_000_000)
        #expect(try await maintenance.round().sessionsReconciled == 1)
        #expect(try await m.read { try await $0.inode(b.id) }?.length == 1_000)
        #expect(try await keys(m, "s/") == 0)
        // A close after the reconciliation still works (the session is already gone).
        _ = try await m.mutate { try await $0.close(b.id, session: alive << 32 | 1, length: 2_000) }
        #expect(try await m.read { try await $0.inode(b.id) }?.length == 2_000)
    }

    @Test func idempotencyRecordsExpireOldestFirstAndRecentOnesStillAnswerRetries() async throws {
        let rt = SteppedClockRuntime()
        let m = MetaService(kv: try SQLiteKV(), runtime: rt, policy: policy)
        for r in 1...3 { _ = try await m.mkdir("/d\(r)", client: 5, request: UInt64(r)) }
        #expect(try await keys(m, "x/") == 3)
        #expect(try await keys(m, "t/") == 3)
        var settings = MaintenanceSettings()
        settings.idempotencyRetentionNanoseconds = 300_000_000
        settings.batchMax = 2
        let maintenance = MetaMaintenance(meta: m, me: 10, remover: RecordingRemover(failing: []), probe: OneChunkProbe(bytes: 0),
                                          settings: settings, runtime: rt)
        #expect(try await maintenance.round().recordsExpired == 0)
        rt.advance(nanoseconds: 400_000_000)
        let recent = try await m.mkdir("/d4", client: 5, request: 4)
        #expect(try await maintenance.round().recordsExpired == 2, "a round expires at most a batch")
        #expect(try await maintenance.round().recordsExpired == 1)
        #expect(try await keys(m, "x/") == 1)
        #expect(try await keys(m, "t/") == 1)
        // A retry of the recent request still gets its first answer instead of EEXIST.
        #expect(try await m.mkdir("/d4", client: 5, request: 4) == recent)
    }
}
