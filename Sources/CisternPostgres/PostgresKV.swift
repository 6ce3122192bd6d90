import CisternCore
import NIOPosix
import Synchronization

/// A `TransactionalKV` in one PostgreSQL database: the store several metadata servers
/// share.
///
/// Promises:
/// - Data lives in one table, `kv(key BYTEA PRIMARY KEY, value BYTEA NOT NULL)`, created
///   if missing; keys order as unsigned bytes (PostgreSQL compares bytea with `memcmp`,
///   whatever the database's collation).
/// - Transactions are serializable: `attempt` runs the body in `BEGIN ISOLATION LEVEL
///   SERIALIZABLE … COMMIT` on a connection lent to it alone. Stores in other processes
///   (or other `PostgresKV` objects) on the same database see a serial order of
///   transactions. If the body throws, the transaction rolls back and the error is
///   rethrown.
/// - Errors, by SQLSTATE: a serialization failure (40001) or deadlock (40P01) is
///   `conflict`, which `transact` retries. Losing the connection during `COMMIT` is
///   `maybeCommitted` (the server may have applied it); losing it earlier, or not
///   reaching the server when a transaction begins, is `unavailable` with libpq's message
///   and what to check. Anything else is `storage` with the server's message and
///   SQLSTATE. A broken connection is discarded; the next transaction opens a new one.
///   Once a statement of a transaction has failed, the server has aborted it: later
///   calls and the commit fail with that statement's error, even if the body caught it.
/// - Statements are parameterized: keys, values and limits travel as binary
///   parameters (`PQexecParams`), never inside SQL text.
/// - A transaction object fails with `transactionClosed` once its body has returned.
///   Its calls may be made concurrently; they run one at a time, in order.
/// - `KVLimits` are enforced: keys, values, a transaction's written bytes and a range
///   read's limit over their maximums fail with `tooLarge` before reaching the server.
/// - Connections: up to `maxConnections`, the first opened by `init`, the others when
///   transactions need them. A transaction that finds all of them lent waits for one,
///   in arrival order; the wait is not cancellable (and neither is a statement once
///   sent, so a cancelled task's transaction still ends cleanly).
/// - libpq blocks; every libpq call of a transaction runs on this store's own thread
///   pool of `maxConnections` threads, never on the caller's thread. With one thread per
///   connection, a statement waiting for a row lock never keeps the transaction holding
///   that lock from getting a thread to commit. `init` and `close` block the calling
///   thread briefly (connecting, disconnecting).
/// - The connection string is libpq's (`host=… port=… dbname=… user=…` or a
///   `postgresql://` URI). Set `connect_timeout` in it to bound how long an unreachable
///   host can stall a transaction's start.
public final class PostgresKV: TransactionalKV {
    /// The server, database and user, for messages (never the password).
    public let server: String
    /// The most connections (and threads) this store uses.
    public let maxConnections: Int
    private let conninfo: String
    private let pool: ConnectionPool
    private let threadPool: NIOThreadPool
    private let serials = Atomic<UInt64>(0)

    /// Connects to the server `conninfo` names and creates the `kv` table if it is
    /// missing. A connection string libpq cannot parse is `storage`; a server that
    /// cannot be reached or refuses the login is `unavailable`.
    public init(conninfo: String, maxConnections: Int = 4) throws(KVError) {
        try PostgresConnection.validate(conninfo)
        let first = try PostgresConnection(conninfo: conninfo)
        try first.createTableIfNeeded()
        self.conninfo = conninfo
        self.server = first.target
        self.maxConnections = max(1, maxConnections)
        pool = ConnectionPool(capacity: self.maxConnections, first: PooledConnection(first))
        threadPool = NIOThreadPool(numberOfThreads: self.maxConnections)
        threadPool.start()
    }

    deinit {
        // No transaction can be running: each holds a reference to this store.
        pool.closeIdleNow()
        threadPool.shutdownGracefully { _ in }
    }

    /// Runs `body` in one serializable transaction on a connection of its own and
    /// commits it if `body` returns; see the type's promises for the errors.
    public func attempt<T: Sendable>(_ body: (any KVTransaction) async throws -> T) async throws -> T {
        try await attempt(durability: .synced, body)
    }

    /// A `relaxed` commit sets `synchronous_commit = off` for its transaction.
    public func attempt<T: Sendable>(durability: CommitDurability, _ body: (any KVTransaction) async throws -> T) async throws -> T {
        let serial = serials.add(1, ordering: .relaxed).newValue
        let connection = try await begin(serial, relaxed: durability == .relaxed)
        let transaction = PostgresTransaction(store: self, connection: connection, serial: serial)
        let value: T
        do {
            value = try await body(transaction)
        } catch {
            transaction.end()
            try? await perform(connection) { db in db.rollback(serial) }
            pool.release(connection)
            throw error
        }
        transaction.end()
        do {
            try await perform(connection) { (db) throws(KVError) in try db.commit(serial) }
        } catch {
            pool.release(connection)
            throw error
        }
        pool.release(connection)
        return value
    }

    /// Waits for the running transactions to finish, then closes every connection and
    /// the thread pool. Later transactions fail with `KVError.storage`.
    public func close() async {
        await pool.close()
        try? await threadPool.shutdownGracefully()
    }

    // MARK: - Internals

    /// A connection with transaction `serial` begun on it. An idle connection that
    /// turns out to be dead (the server restarted, or dropped it) is discarded and the
    /// next one tried, up to a new connection; failing to connect is `unavailable`.
    private func begin(_ serial: UInt64, relaxed: Bool) async throws(KVError) -> PooledConnection {
        var tries = 0
        while true {
            tries += 1
            let connection: PooledConnection
            let reused: Bool
            switch await pool.acquire() {
            case .closed:
                throw PostgresConnection.closedError
            case .connection(let idle):
                connection = idle
                reused = true
            case .create:
                let conninfo = self.conninfo
                let created = await blocking { () -> Result<PooledConnection, KVError> in
                    do throws(KVError) {
                        return .success(PooledConnection(try PostgresConnection(conninfo: conninfo)))
                    } catch {
                        return .failure(error)
                    }
                }
                switch created {
                case .success(let fresh):
                    connection = fresh
                    reused = false
                case .failure(let error):
                    pool.abandon()
                    throw error
                }
            }
            do {
                try await perform(connection) { (db) throws(KVError) in try db.begin(serial, relaxed: relaxed) }
                return connection
            } catch {
                let broken = connection.database.withLock { $0.broken }
                pool.release(connection)
                if broken && reused && tries <= maxConnections { continue }
                throw error
            }
        }
    }

    /// Runs `body` on `connection` on the thread pool, after the connection's earlier
    /// calls (at most one call per connection is ever queued on the pool).
    func perform<T: Sendable>(
        _ connection: PooledConnection, _ body: @escaping @Sendable (PostgresConnection) throws(KVError) -> T
    ) async throws(KVError) -> T {
        await connection.gate.lock()
        defer { connection.gate.unlock() }
        return try await blocking { () -> Result<T, KVError> in
            connection.database.withLock { db -> Result<T, KVError> in
                do throws(KVError) {
                    return .success(try body(db))
                } catch {
                    return .failure(error)
                }
            }
        }.get()
    }

    /// Runs `body` on the thread pool; once submitted it runs to the end even if the
    /// calling task is cancelled.
    private func blocking<T: Sendable>(
        _ body: @escaping @Sendable () -> Result<T, KVError>
    ) async -> Result<T, KVError> {
        await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, KVError>, Never>) in
            threadPool.submit { state in
                switch state {
                case .active: continuation.resume(returning: body())
                case .cancelled: continuation.resume(returning: .failure(PostgresConnection.closedError))
                }
            }
        }
    }
}
