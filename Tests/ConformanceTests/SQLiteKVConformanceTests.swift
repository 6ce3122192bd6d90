import CisternConformance
import CisternCore
import CisternNIO
import CisternSQLite
import Foundation
import Synchronization
import Testing

/// Fresh `SQLiteKV` stores: each a new database file under one temporary directory
/// (removed by `finish()`), or private in-memory databases.
final class SQLiteKVHarness: KVHarness {
    let runtime: any Runtime = ProductionRuntime(nodeName: "sqlite-kv-test")
    let base: String
    let inMemory: Bool
    private let stores = Mutex(0)

    init(inMemory: Bool = false) throws {
        self.inMemory = inMemory
        base = FileManager.default.temporaryDirectory.path + "/cistern-sqlite-\(UInt64.random(in: 0...UInt64.max))"
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
    }

    func makeStore() async throws -> any TransactionalKV {
        if inMemory { return try SQLiteKV() }
        let index = stores.withLock { count in
            count += 1
            return count
        }
        return try SQLiteKV(path: "\(base)/store\(index)/kv.sqlite")
    }

    func finish() async {
        try? FileManager.default.removeItem(atPath: base)
    }

    /// Runs `body` with the harness and removes the temporary directory afterwards.
    static func with(inMemory: Bool = false, _ body: (SQLiteKVHarness) async throws -> Void) async throws {
        let harness = try SQLiteKVHarness(inMemory: inMemory)
        do {
            try await body(harness)
        } catch {
            await harness.finish()
            throw error
        }
        await harness.finish()
    }
}

@Suite struct SQLiteKVConformanceTests {
    @Test func aFileStorePassesTheKVConformanceSuite() async throws {
        try await SQLiteKVHarness.with { harness in
            try await KVConformance.run(harness)
        }
    }

    @Test func aRelaxedCommitSurvivesClosingAndReopeningAndLeavesCommitsSyncedAfterIt() async throws {
        try await SQLiteKVHarness.with { harness in
            let path = harness.base + "/relaxed/kv.sqlite"
            let store = try SQLiteKV(path: path)
            try await store.transact(runtime: harness.runtime, durability: .relaxed) { tx in try await tx.set(Array("lease".utf8), [1]) }
            try await store.transact(runtime: harness.runtime) { tx in try await tx.set(Array("confirm".utf8), [2]) }
            #expect(store.synchronousNow() == "2", "a relaxed commit puts synchronous back to FULL (2) for the next commit")
            await store.close()
            let reopened = try SQLiteKV(path: path)
            let values = try await reopened.transact(runtime: harness.runtime) { tx in
                [try await tx.get(Array("lease".utf8)), try await tx.get(Array("confirm".utf8))]
            }
            #expect(values == [[1], [2]])
            await reopened.close()
        }
    }

    @Test func anInMemoryStorePassesTheKVConformanceSuite() async throws {
        try await SQLiteKVHarness.with(inMemory: true) { harness in
            try await KVConformance.run(harness)
        }
    }

    @Test func reopeningTheFileKeepsCommittedData() async throws {
        try await SQLiteKVHarness.with { harness in
            let path = harness.base + "/reopen/kv.sqlite"
            let first = try SQLiteKV(path: path)
            try await first.attempt { tx in
                try await tx.set([1], [10])
                try await tx.set([2], [20])
            }
            // A transaction that throws leaves nothing behind, across a reopen too.
            struct Abandon: Error {}
            await #expect(throws: Abandon.self) {
                try await first.attempt { tx in
                    try await tx.set([3], [30])
                    throw Abandon()
                }
            }
            await first.close()
            await #expect(throws: KVError.self) { try await first.attempt { tx in try await tx.get([1]) } }

            let second = try SQLiteKV(path: path)
            let pairs = try await second.attempt { tx in
                try await tx.getRange(KVRange(begin: [], end: [0xFF]), limit: 10, reverse: false)
            }
            #expect(pairs == [KVPair(key: [1], value: [10]), KVPair(key: [2], value: [20])])
            #expect(FileManager.default.fileExists(atPath: path + "-wal"), "the database runs in WAL mode")
            await second.close()
        }
    }

    @Test func anotherConnectionHoldingTheWriteLockIsAConflict() async throws {
        try await SQLiteKVHarness.with { harness in
            let path = harness.base + "/busy/kv.sqlite"
            let holder = try SQLiteKV(path: path, busyTimeoutMilliseconds: 50)
            let other = try SQLiteKV(path: path, busyTimeoutMilliseconds: 50)
            try await holder.attempt { tx in
                try await tx.set([1], [1])
                // `other` is a second connection: it stands in for another process.
                await #expect(throws: KVError.conflict) {
                    try await other.attempt { tx in try await tx.set([2], [2]) }
                }
            }
            let value = try await other.attempt { tx in try await tx.get([1]) }
            #expect(value == [1])
            await holder.close()
            await other.close()
        }
    }

    @Test func rangeLimitsOverTheMaximumAreRefused() async throws {
        let store = try SQLiteKV()
        await #expect(throws: KVError.self) {
            try await store.attempt { tx in
                try await tx.getRange(.prefix([]), limit: KVLimits.rangeLimitMax + 1, reverse: false)
            }
        }
    }

    @Test func anUnwritableLocationIsAStorageError() async throws {
        try await SQLiteKVHarness.with { harness in
            _ = FileManager.default.createFile(atPath: harness.base + "/file", contents: Data([1]))
            do {
                _ = try SQLiteKV(path: harness.base + "/file/kv.sqlite")
                Issue.record("opening a database under a regular file should fail")
            } catch let error as KVError {
                guard case .storage(let detail) = error else {
                    Issue.record("expected storage, got \(error)")
                    return
                }
                #expect(detail.contains("file"))
            } catch {
                Issue.record("expected a KVError, got \(error)")
            }
        }
    }
}
