import CSQLite
import CisternCore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A `TransactionalKV` in one SQLite database: the embedded default store.
///
/// Promises:
/// - Data lives in one table, `kv(key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT
///   ROWID`; keys order as unsigned bytes (SQLite compares blobs with `memcmp`).
/// - The database runs in WAL mode with `synchronous = FULL` by default: every commit
///   fsyncs the WAL before `attempt` returns, so a committed transaction survives power
///   loss. (`NORMAL` only syncs at checkpoints, so a crash can lose the last commits —
///   not acceptable for metadata a storage system has acknowledged.)
/// - Transactions are serializable: `attempt` holds an in-process FIFO lock for the
///   whole transaction and runs it as `BEGIN IMMEDIATE … COMMIT`, so one transaction at
///   a time runs on this object and it holds SQLite's write lock from its first read.
///   Another process holding the write lock longer than the busy timeout gives
///   `KVError.conflict`, which `transact` retries. If the body throws, the transaction
///   rolls back and the error is rethrown. Waiting for the lock is not cancellable.
/// - A transaction object fails with `transactionClosed` once its body has returned.
/// - `KVLimits` are enforced: keys, values, a transaction's written bytes and a range
///   read's limit over their maximums fail with `tooLarge`.
/// - SQLite errors become `KVError.storage` with SQLite's message and what to do.
/// - SQLite calls block the calling thread (commits wait for fsync, a busy database
///   waits up to the busy timeout). That is acceptable for the embedded store; callers
///   on an event loop that cannot block should use a store that offloads.
public final class SQLiteKV: TransactionalKV {
    /// How hard SQLite syncs on commit (`PRAGMA synchronous`).
    public enum Synchronous: String, Sendable {
        /// fsync the WAL at every commit: commits are durable on return.
        case full = "FULL"
        /// fsync only at checkpoints: faster; the last commits can be lost on power loss
        /// (never corrupted).
        case normal = "NORMAL"
    }

    /// The database file (":memory:" for an in-memory store).
    public let path: String
    /// The sync level of synced commits.
    public let synchronous: Synchronous
    let database: Mutex<SQLiteDatabase>
    private let gate = AsyncFIFOLock()

    /// Opens or creates the database at `path`, creating its parent directory.
    public init(
        path: String, synchronous: Synchronous = .full, busyTimeoutMilliseconds: Int = 5_000
    ) throws(KVError) {
        self.path = path
        self.synchronous = synchronous
        try Self.makeParentDirectory(of: path)
        let timeout = Int32(clamping: busyTimeoutMilliseconds)
        database = Mutex(try SQLiteDatabase(path: path, synchronous: synchronous.rawValue, busyTimeoutMilliseconds: timeout))
    }

    /// A private in-memory database, gone when this object is (for tests and tools).
    public convenience init() throws(KVError) {
        try self.init(path: ":memory:")
    }

    public func attempt<T: Sendable>(_ body: (any KVTransaction) async throws -> T) async throws -> T {
        try await attempt(durability: .synced, body)
    }

    /// A `relaxed` commit runs with `synchronous = NORMAL` when the store is
    /// configured `FULL`: in WAL mode the commit is appended to the log without an
    /// fsync, so a power loss can drop it (and any relaxed commits after it) but not
    /// tear it; the next synced commit's fsync of the log makes it durable.
    public func attempt<T: Sendable>(durability: CommitDurability, _ body: (any KVTransaction) async throws -> T) async throws -> T {
        await gate.lock()
        defer { gate.unlock() }
        let relax = durability == .relaxed && synchronous == .full
        let serial = try database.withLock { (db) throws(KVError) -> UInt64 in
            guard db.isOpen else { throw SQLiteDatabase.closedError }
            if relax { try db.setSynchronous(Synchronous.normal.rawValue) }
            do throws(KVError) {
                return try db.begin()
            } catch {
                if relax { try? db.setSynchronous(synchronous.rawValue) }
                throw error
            }
        }
        defer {
            if relax { database.withLock { db in if db.isOpen { try? db.setSynchronous(synchronous.rawValue) } } }
        }
        let transaction = SQLiteTransaction(store: self, serial: serial)
        let value: T
        do {
            value = try await body(transaction)
        } catch {
            database.withLock { $0.rollback(serial) }
            throw error
        }
        try database.withLock { (db) throws(KVError) in try db.commit(serial) }
        return value
    }

    /// This connection's `PRAGMA synchronous` now ("2" is FULL, "1" NORMAL), for tests.
    public func synchronousNow() -> String {
        database.withLock { db in (try? db.synchronousLevel()) ?? "" }
    }

    /// Waits for the running transaction to finish, then closes the database. Later
    /// transactions fail with `KVError.storage`.
    public func close() async {
        await gate.lock()
        defer { gate.unlock() }
        database.withLock { $0.close() }
    }

    private static func makeParentDirectory(of path: String) throws(KVError) {
        guard path != ":memory:", let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return }
        let directory = String(path[..<slash])
        var prefix = directory.hasPrefix("/") ? "" : "."
        for component in directory.split(separator: "/") {
            prefix += "/" + component
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
                let text = strerror(errno).map { String(cString: $0) } ?? "unknown error"
                throw .storage(detail: "cannot create directory \(prefix) for \(path): \(text); check permissions")
            }
        }
    }
}
