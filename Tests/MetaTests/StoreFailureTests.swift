import CisternCore
import CisternMeta
import CisternNIO
@testable import CisternSQLite
import Synchronization
import Testing

/// A real SQLite store whose transactions can be made to fail with a chosen error,
/// as a full volume or a broken store makes them fail.
final class FailingKV: TransactionalKV {
    let base: SQLiteKV
    let failure = Mutex<KVError?>(nil)
    init() throws { base = try SQLiteKV() }
    func attempt<T: Sendable>(_ body: (any KVTransaction) async throws -> T) async throws -> T {
        if let e = failure.withLock({ $0 }) { throw e }
        return try await base.attempt(body)
    }
}

@Suite struct StoreFailureTests {
    @Test func aFullStoreIsRefusedAtOnceALastingFailureTooAndPassingOnesAreRetried() async throws {
        let kv = try FailingKV()
        let m = MetaService(kv: kv, runtime: ProductionRuntime(nodeName: "meta-test", baseSeed: 1, logLevel: .critical), policy: policy)
        func mkdir(_ p: String, _ request: UInt64) async -> MetaReply {
            await m.execute(MetaRequest(client: 1, request: request, op: .mkdir(p, parents: false)))
        }
        guard case .inode = await mkdir("/a", 1) else { Issue.record("mkdir on a healthy store failed"); return }

        kv.failure.withLock { $0 = .noSpace(detail: "COMMIT on /v/meta.sqlite: database or disk is full; free space on the volume holding /v/meta.sqlite") }
        let full = await mkdir("/b", 2)
        guard case .refused(let code, let text) = full else { Issue.record("a full store answered \(full), not a refusal"); return }
        #expect(code == .noSpace)
        #expect(text.contains("out of space") && text.contains("/v/meta.sqlite") && text.contains("free space"), "\(text)")
        // A store that fails for good is refused at once too.
        kv.failure.withLock { $0 = .storage(detail: "the database file /v/meta.sqlite is damaged") }
        guard case .refused(.store, let broken) = await mkdir("/b", 3) else { Issue.record("a broken store is not refused"); return }
        #expect(broken.contains("damaged"))
        for passing: KVError in [.conflict, .unavailable(reason: "server restarting"), .maybeCommitted, .retriesExhausted(attempts: 12, last: .conflict)] {
            kv.failure.withLock { $0 = passing }
            let r = await mkdir("/b", 4)
            guard case .unavailable = r else { Issue.record("\(passing) answered \(r), not unavailable (the client retries those)"); continue }
        }
        // Space comes back: the same request works, without a restart.
        kv.failure.withLock { $0 = nil }
        guard case .inode = await mkdir("/b", 4) else { Issue.record("mkdir after space came back failed"); return }
    }

    @Test func sqliteCallsAFullVolumeNoSpaceAndNamesTheFile() throws {
        // The mapping itself: SQLITE_FULL is noSpace, with the path and the fix.
        let kv = try SQLiteKV()
        let e = kv.database.withLock { $0.failure(13, "COMMIT") }
        guard case .noSpace(let detail) = e else { Issue.record("SQLITE_FULL gave \(e)"); return }
        #expect(detail.contains("free space on the volume holding"), "\(detail)")
    }
}
