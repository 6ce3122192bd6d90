import CSQLite
import CisternCore

/// One SQLite connection holding the `kv` table, with its prepared statements.
///
/// Not thread-safe by itself: `SQLiteKV` keeps it inside a `Mutex`, so exactly one
/// thread uses it at a time (the connection is opened with `SQLITE_OPEN_NOMUTEX`).
/// It also records which transaction is open, so a transaction object can tell
/// whether it is still the current one.
final class SQLiteDatabase {
    let path: String
    private var handle: OpaquePointer?
    private var statements: [String: OpaquePointer] = [:]
    /// The serial number of the open transaction, if any.
    private(set) var transaction: UInt64?
    private var nextSerial: UInt64 = 1
    /// Key and value bytes written by the open transaction.
    private var transactionBytes = 0

    /// Opens (creating if needed) the database at `path` (":memory:" for a private
    /// in-memory one), switches it to WAL, sets `synchronous` and the busy timeout, and
    /// creates the `kv` table.
    init(path: String, synchronous: String, busyTimeoutMilliseconds: Int32) throws(KVError) {
        self.path = path
        var db: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        handle = db
        guard rc == SQLITE_OK, db != nil else {
            let error = failure(rc, "open")
            close()
            throw error
        }
        sqlite3_extended_result_codes(db, 1)
        sqlite3_busy_timeout(db, busyTimeoutMilliseconds)
        do throws(KVError) {
            let mode = try pragma("journal_mode = WAL")
            if path != ":memory:" && mode.lowercased() != "wal" {
                throw .storage(
                    detail: "\(path): could not switch to WAL journal mode (got '\(mode)'); "
                        + "put the database on a local file system that supports shared memory")
            }
            _ = try pragma("synchronous = \(synchronous)")
            try execute("CREATE TABLE IF NOT EXISTS kv (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID")
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    var isOpen: Bool { handle != nil }

    /// Finalizes the statements and closes the connection (idempotent).
    func close() {
        for statement in statements.values { sqlite3_finalize(statement) }
        statements.removeAll()
        if let handle { sqlite3_close_v2(handle) }
        handle = nil
        transaction = nil
    }

    // MARK: - Transactions

    /// Starts a write transaction (`BEGIN IMMEDIATE`) and returns its serial number.
    /// Another process holding the write lock past the busy timeout gives `conflict`.
    func begin() throws(KVError) -> UInt64 {
        precondition(transaction == nil, "SQLiteDatabase.begin with a transaction already open")
        try execute("BEGIN IMMEDIATE", operation: "begin transaction")
        let serial = nextSerial
        nextSerial += 1
        transaction = serial
        transactionBytes = 0
        return serial
    }

    /// Fails with `transactionClosed` unless `serial` is the open transaction.
    func checkCurrent(_ serial: UInt64) throws(KVError) {
        guard transaction == serial, handle != nil else { throw .transactionClosed }
    }

    /// Counts `bytes` against the open transaction's write budget.
    func charge(_ bytes: Int) throws(KVError) {
        transactionBytes += bytes
        if transactionBytes > KVLimits.transactionBytesMax {
            throw .tooLarge(what: "transaction writes", bytes: transactionBytes, limitBytes: KVLimits.transactionBytesMax)
        }
    }

    /// Commits transaction `serial`. A failed commit is rolled back; an I/O error
    /// during commit leaves the outcome unknown (`maybeCommitted`).
    func commit(_ serial: UInt64) throws(KVError) {
        try checkCurrent(serial)
        transaction = nil
        do {
            try execute("COMMIT", operation: "commit")
        } catch {
            let code = sqlite3_extended_errcode(handle) & 0xFF
            rollbackIfOpen()
            if code == SQLITE_IOERR { throw .maybeCommitted }
            throw error
        }
    }

    /// Rolls back transaction `serial` if it is still open (errors are ignored: the
    /// caller is already failing, and SQLite rolls back on the next BEGIN anyway).
    func rollback(_ serial: UInt64) {
        guard transaction == serial else { return }
        transaction = nil
        rollbackIfOpen()
    }

    private func rollbackIfOpen() {
        guard let handle, sqlite3_get_autocommit(handle) == 0 else { return }
        try? execute("ROLLBACK", operation: "rollback")
    }

    // MARK: - Data

    func get(_ key: [UInt8]) throws(KVError) -> [UInt8]? {
        let statement = try prepared("SELECT value FROM kv WHERE key = ?1")
        defer { sqlite3_reset(statement) }
        try bind(statement, 1, key, "get")
        switch sqlite3_step(statement) {
        case SQLITE_ROW: return column(statement, 0)
        case SQLITE_DONE: return nil
        case let rc: throw failure(rc, "get")
        }
    }

    func getRange(begin: [UInt8], end: [UInt8], limit: Int, reverse: Bool) throws(KVError) -> [KVPair] {
        let sql = reverse
            ? "SELECT key, value FROM kv WHERE key >= ?1 AND key < ?2 ORDER BY key DESC LIMIT ?3"
            : "SELECT key, value FROM kv WHERE key >= ?1 AND key < ?2 ORDER BY key ASC LIMIT ?3"
        let statement = try prepared(sql)
        defer { sqlite3_reset(statement) }
        try bind(statement, 1, begin, "range read")
        try bind(statement, 2, end, "range read")
        try check(sqlite3_bind_int64(statement, 3, Int64(limit)), "range read")
        var pairs: [KVPair] = []
        while true {
            switch sqlite3_step(statement) {
            case SQLITE_ROW: pairs.append(KVPair(key: column(statement, 0), value: column(statement, 1)))
            case SQLITE_DONE: return pairs
            case let rc: throw failure(rc, "range read")
            }
        }
    }

    func set(_ key: [UInt8], _ value: [UInt8]) throws(KVError) {
        let statement = try prepared("INSERT OR REPLACE INTO kv (key, value) VALUES (?1, ?2)")
        defer { sqlite3_reset(statement) }
        try bind(statement, 1, key, "set")
        try bind(statement, 2, value, "set")
        try finish(statement, "set")
    }

    func clear(_ key: [UInt8]) throws(KVError) {
        let statement = try prepared("DELETE FROM kv WHERE key = ?1")
        defer { sqlite3_reset(statement) }
        try bind(statement, 1, key, "clear")
        try finish(statement, "clear")
    }

    func clearRange(begin: [UInt8], end: [UInt8]) throws(KVError) {
        let statement = try prepared("DELETE FROM kv WHERE key >= ?1 AND key < ?2")
        defer { sqlite3_reset(statement) }
        try bind(statement, 1, begin, "clear range")
        try bind(statement, 2, end, "clear range")
        try finish(statement, "clear range")
    }

    // MARK: - Statements

    /// A cached prepared statement for `sql`, reset and with bindings cleared.
    private func prepared(_ sql: String) throws(KVError) -> OpaquePointer {
        guard let handle else { throw Self.closedError }
        if let statement = statements[sql] {
            sqlite3_clear_bindings(statement)
            return statement
        }
        var statement: OpaquePointer?
        let rc = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard rc == SQLITE_OK, let statement else { throw failure(rc, "prepare '\(sql)'") }
        statements[sql] = statement
        return statement
    }

    /// Runs `sql` (a cached statement that returns no rows).
    private func execute(_ sql: String, operation: String? = nil) throws(KVError) {
        let statement = try prepared(sql)
        defer { sqlite3_reset(statement) }
        try finish(statement, operation ?? sql)
    }

    /// Sets this connection's `synchronous` level (between transactions only).
    func setSynchronous(_ level: String) throws(KVError) {
        precondition(transaction == nil, "SQLiteDatabase.setSynchronous inside a transaction")
        _ = try pragma("synchronous = \(level)")
    }

    /// This connection's `synchronous` level as SQLite reports it.
    func synchronousLevel() throws(KVError) -> String { try pragma("synchronous") }

    /// Runs a PRAGMA and returns the first column of its first row ("" if none).
    private func pragma(_ text: String) throws(KVError) -> String {
        let statement = try prepared("PRAGMA " + text)
        defer { sqlite3_reset(statement) }
        switch sqlite3_step(statement) {
        case SQLITE_ROW:
            guard let value = sqlite3_column_text(statement, 0) else { return "" }
            return String(cString: value)
        case SQLITE_DONE: return ""
        case let rc: throw failure(rc, "PRAGMA \(text)")
        }
    }

    private func finish(_ statement: OpaquePointer, _ operation: String) throws(KVError) {
        let rc = sqlite3_step(statement)
        if rc != SQLITE_DONE && rc != SQLITE_ROW { throw failure(rc, operation) }
    }

    private func bind(_ statement: OpaquePointer, _ index: Int32, _ bytes: [UInt8], _ operation: String) throws(KVError) {
        // A NULL pointer would bind SQL NULL, not an empty blob.
        let rc = bytes.isEmpty
            ? sqlite3_bind_zeroblob(statement, index, 0)
            : bytes.withUnsafeBytes { sqlite3_bind_blob(statement, index, $0.baseAddress, Int32($0.count), Self.transient) }
        try check(rc, operation)
    }

    private func check(_ rc: Int32, _ operation: String) throws(KVError) {
        if rc != SQLITE_OK { throw failure(rc, operation) }
    }

    private func column(_ statement: OpaquePointer, _ index: Int32) -> [UInt8] {
        guard let base = sqlite3_column_blob(statement, index) else { return [] }
        let count = Int(sqlite3_column_bytes(statement, index))
        return Array(UnsafeRawBufferPointer(start: base, count: count))
    }

    /// SQLITE_TRANSIENT: SQLite copies the bound bytes before the call returns.
    private static var transient: sqlite3_destructor_type {
        unsafeBitCast(-1 as Int, to: sqlite3_destructor_type.self)
    }

    static var closedError: KVError {
        .storage(detail: "the SQLite store was closed; open a new SQLiteKV")
    }

    // MARK: - Errors

    /// The `KVError` for result code `rc` from `operation`: busy and locked are
    /// `conflict` (another process holds the write lock); everything else is `storage`
    /// with SQLite's message and what to do about it.
    func failure(_ rc: Int32, _ operation: String) -> KVError {
        let primary = rc & 0xFF
        if primary == SQLITE_BUSY || primary == SQLITE_LOCKED { return .conflict }
        let message: String
        if let handle, let text = sqlite3_errmsg(handle) {
            message = String(cString: text)
        } else if let text = sqlite3_errstr(rc) {
            message = String(cString: text)
        } else {
            message = "unknown error"
        }
        if primary == SQLITE_FULL {
            return .noSpace(detail: "\(operation) on \(path): \(message) (SQLite code \(rc)); free space on the volume holding \(path)")
        }
        let advice: String
        switch primary {
        case SQLITE_CORRUPT, SQLITE_NOTADB:
            advice = "the database file \(path) is damaged; restore it from a backup or a replica"
        case SQLITE_CANTOPEN, SQLITE_PERM, SQLITE_READONLY, SQLITE_AUTH:
            advice = "check that \(path) and its directory exist and are writable by this process"
        case SQLITE_IOERR:
            advice = "the device holding \(path) may be failing; check the kernel log"
        case SQLITE_NOMEM:
            advice = "the process ran out of memory"
        default:
            advice = "this is unexpected; report it with this message"
        }
        return .storage(detail: "\(operation) on \(path): \(message) (SQLite code \(rc)); \(advice)")
    }
}
