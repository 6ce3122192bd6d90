import CLibPQ
import CisternCore

/// One libpq connection to the server holding the `kv` table.
///
/// Not thread-safe by itself: `PooledConnection` keeps it inside a `Mutex`, and
/// `PostgresKV` lends it to one transaction at a time, so exactly one thread uses it at
/// a time. Every call blocks the calling thread until the server answers; `PostgresKV`
/// makes them on its own thread pool. It also records which transaction is open, so a
/// transaction object can tell whether it is still the current one, and whether a
/// statement of that transaction failed (the server then refuses everything but
/// `ROLLBACK`, and turns a `COMMIT` into a rollback).
final class PostgresConnection {
    private var handle: OpaquePointer?
    /// "PostgreSQL at host:port, database d, user u" for messages (never the password).
    let target: String
    /// The serial number of the open transaction, if any.
    private(set) var transaction: UInt64?
    /// Key and value bytes written by the open transaction.
    private var transactionBytes = 0
    /// The error of the open transaction's first failed statement: the server has
    /// aborted that transaction, so later statements and the commit fail with it.
    private var aborted: KVError?
    /// The connection to the server was lost (or is in an unknown state); `PostgresKV`
    /// discards it instead of lending it again.
    private(set) var broken = false

    /// The server's `CREATE TABLE` for the store.
    static let createTable = "CREATE TABLE IF NOT EXISTS kv (key BYTEA PRIMARY KEY, value BYTEA NOT NULL)"

    /// Connects with `conninfo` (checked by `PostgresConnection.validate` first). A
    /// server that cannot be reached, or that refuses the login, is `unavailable`.
    init(conninfo: String) throws(KVError) {
        let conn = PQconnectdb(conninfo)
        target = Self.describe(conn)
        handle = conn
        guard let conn, PQstatus(conn) == CONNECTION_OK else {
            let message = Self.errorMessage(conn)
            close()
            throw .unavailable(
                reason: "cannot connect to \(target): \(message); check that the server is running and listening "
                    + "on that address and port (listen_addresses, port), that pg_hba.conf admits this host, user "
                    + "and database, that the database exists, and the credentials in the connection string")
        }
        // Notices ("relation kv already exists, skipping") would go to stderr.
        PQsetNoticeProcessor(conn, { _, _ in }, nil)
        let version = PQserverVersion(conn)
        if version < 90500 {
            close()
            throw .storage(
                detail: "\(target) runs PostgreSQL server version \(version); PostgresKV needs 9.5 or newer "
                    + "(INSERT … ON CONFLICT); upgrade the server")
        }
    }

    deinit { close() }

    /// Closes the connection (idempotent).
    func close() {
        if let handle { PQfinish(handle) }
        handle = nil
        transaction = nil
        broken = true
    }

    /// Whether the connection can be lent to another transaction: open, not broken,
    /// and idle on the server (no transaction left open by accident).
    var isReusable: Bool {
        guard let handle, !broken, transaction == nil else { return false }
        return PQstatus(handle) == CONNECTION_OK && PQtransactionStatus(handle) == PQTRANS_IDLE
    }

    /// Fails with `storage` unless `conninfo` parses (an unknown keyword or bad quoting
    /// is a configuration mistake that retrying will not fix).
    static func validate(_ conninfo: String) throws(KVError) {
        var errorText: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(conninfo, &errorText) else {
            var message = "libpq could not parse it (out of memory?)"
            if let errorText {
                message = clean(String(cString: errorText))
                PQfreemem(errorText)
            }
            throw .storage(
                detail: "invalid PostgreSQL connection string: \(message); use libpq's "
                    + "\"host=… port=… dbname=… user=…\" keywords or a postgresql:// URI")
        }
        PQconninfoFree(options)
    }

    // MARK: - Schema

    /// Creates the `kv` table if it is missing. Two stores starting at once can race
    /// in the catalog (a unique violation on `pg_type`); that is retried.
    func createTableIfNeeded() throws(KVError) {
        var attempt = 0
        while true {
            attempt += 1
            do throws(KVError) {
                try query(Self.createTable, [], operation: "create table kv") { _ in }
                return
            } catch {
                aborted = nil
                if attempt < 3, case .storage(let detail) = error,
                    detail.contains("SQLSTATE 23505") || detail.contains("SQLSTATE 42P07")
                {
                    continue
                }
                throw error
            }
        }
    }

    // MARK: - Transactions

    /// Starts transaction `serial` (`BEGIN ISOLATION LEVEL SERIALIZABLE`).
    /// `relaxed` commits with `synchronous_commit = off` for this transaction only:
    /// the server acknowledges before its WAL is flushed (a server crash may lose the
    /// last such commits, never part of one).
    func begin(_ serial: UInt64, relaxed: Bool = false) throws(KVError) {
        precondition(transaction == nil, "PostgresConnection.begin with a transaction already open")
        aborted = nil
        try query("BEGIN ISOLATION LEVEL SERIALIZABLE", [], operation: "begin transaction") { _ in }
        if relaxed {
            do throws(KVError) {
                try query("SET LOCAL synchronous_commit = off", [], operation: "relax commit") { _ in }
            } catch {
                rollbackIfOpen()
                throw error
            }
        }
        transaction = serial
        transactionBytes = 0
    }

    /// Fails with `transactionClosed` unless `serial` is the open transaction, and with
    /// the first failure's error if a statement of this transaction already failed.
    func checkCurrent(_ serial: UInt64) throws(KVError) {
        guard transaction == serial, handle != nil else { throw .transactionClosed }
        if let aborted { throw aborted }
    }

    /// Counts `bytes` against the open transaction's write budget.
    func charge(_ bytes: Int) throws(KVError) {
        transactionBytes += bytes
        if transactionBytes > KVLimits.transactionBytesMax {
            throw .tooLarge(what: "transaction writes", bytes: transactionBytes, limitBytes: KVLimits.transactionBytesMax)
        }
    }

    /// Commits transaction `serial`. A transaction with a failed statement is rolled
    /// back and fails with that statement's error. A serialization failure at commit is
    /// `conflict`; losing the connection during `COMMIT` leaves the outcome unknown
    /// (`maybeCommitted`).
    func commit(_ serial: UInt64) throws(KVError) {
        try checkCurrentAllowingAbort(serial)
        transaction = nil
        if let aborted {
            rollbackIfOpen()
            throw aborted
        }
        let status = try query("COMMIT", [], operation: "commit", committing: true) { result in
            PQcmdStatus(result).map { String(cString: $0) } ?? ""
        }
        if status != "COMMIT" {
            // The server answered COMMIT with ROLLBACK: the transaction had failed.
            throw .storage(
                detail: "commit on \(target): the server rolled the transaction back (\(status)); "
                    + "this is unexpected; report it with this message")
        }
    }

    /// Rolls back transaction `serial` if it is still open (errors are ignored: the
    /// caller is already failing; a connection that fails here is marked broken).
    func rollback(_ serial: UInt64) {
        guard transaction == serial else { return }
        transaction = nil
        rollbackIfOpen()
    }

    private func checkCurrentAllowingAbort(_ serial: UInt64) throws(KVError) {
        guard transaction == serial, handle != nil else { throw .transactionClosed }
    }

    private func rollbackIfOpen() {
        aborted = nil
        guard let handle, !broken, PQtransactionStatus(handle) != PQTRANS_IDLE else { return }
        try? query("ROLLBACK", [], operation: "rollback") { _ in }
        aborted = nil
    }

    // MARK: - Data

    func get(_ key: [UInt8]) throws(KVError) -> [UInt8]? {
        try query("SELECT value FROM kv WHERE key = $1", [.bytea(key)], operation: "get") { result in
            PQntuples(result) > 0 ? Self.column(result, 0, 0) : nil
        }
    }

    func getRange(begin: [UInt8], end: [UInt8], limit: Int, reverse: Bool) throws(KVError) -> [KVPair] {
        let sql = reverse
            ? "SELECT key, value FROM kv WHERE key >= $1 AND key < $2 ORDER BY key DESC LIMIT $3"
            : "SELECT key, value FROM kv WHERE key >= $1 AND key < $2 ORDER BY key ASC LIMIT $3"
        return try query(sql, [.bytea(begin), .bytea(end), .int8(Int64(limit))], operation: "range read") { result in
            (0..<PQntuples(result)).map { row in
                KVPair(key: Self.column(result, row, 0), value: Self.column(result, row, 1))
            }
        }
    }

    func set(_ key: [UInt8], _ value: [UInt8]) throws(KVError) {
        try query(
            "INSERT INTO kv (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            [.bytea(key), .bytea(value)], operation: "set"
        ) { _ in }
    }

    func clear(_ key: [UInt8]) throws(KVError) {
        try query("DELETE FROM kv WHERE key = $1", [.bytea(key)], operation: "clear") { _ in }
    }

    func clearRange(begin: [UInt8], end: [UInt8]) throws(KVError) {
        try query("DELETE FROM kv WHERE key >= $1 AND key < $2", [.bytea(begin), .bytea(end)], operation: "clear range") { _ in }
    }

    // MARK: - Statements

    /// A statement parameter, sent in binary format with its type.
    enum Parameter {
        case bytea([UInt8])
        case int8(Int64)

        /// The type's OID (`pg_type.oid`): bytea is 17, int8 is 20.
        var type: UInt32 {
            switch self {
            case .bytea: return 17
            case .int8: return 20
            }
        }

        /// The binary wire format: raw bytes for bytea, big-endian for int8.
        var bytes: [UInt8] {
            switch self {
            case .bytea(let bytes): return bytes
            case .int8(let value): return (0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * $0)) }
            }
        }
    }

    /// Runs `sql` with `parameters` bound in binary format (never interpolated), asks
    /// for binary results, and hands a successful result to `read`. A failure records
    /// the transaction as aborted and becomes the `KVError` `failure` gives.
    @discardableResult
    private func query<T>(
        _ sql: String, _ parameters: [Parameter], operation: String, committing: Bool = false,
        _ read: (OpaquePointer) -> T
    ) throws(KVError) -> T {
        guard let handle, !broken else { throw Self.closedError }
        // All parameter bytes in one buffer, so every pointer stays valid for the call.
        // One spare byte keeps the base address non-nil: a nil value pointer would send
        // SQL NULL, not an empty bytea.
        var buffer: [UInt8] = []
        var offsets: [Int] = []
        var lengths: [Int32] = []
        for parameter in parameters {
            let bytes = parameter.bytes
            offsets.append(buffer.count)
            lengths.append(Int32(bytes.count))
            buffer.append(contentsOf: bytes)
        }
        buffer.append(0)
        let types = parameters.map(\.type)
        let formats = [Int32](repeating: 1, count: parameters.count)
        let result: OpaquePointer? = buffer.withUnsafeBufferPointer { raw in
            raw.withMemoryRebound(to: CChar.self) { chars -> OpaquePointer? in
                let values: [UnsafePointer<CChar>?] = offsets.map { UnsafePointer(chars.baseAddress! + $0) }
                return PQexecParams(
                    handle, sql, Int32(parameters.count), types, values, lengths, formats, 1)
            }
        }
        defer { if let result { PQclear(result) } }
        if let result {
            let status = PQresultStatus(result)
            if status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK { return read(result) }
        }
        let error = failure(result, operation, committing: committing)
        if aborted == nil { aborted = error }
        throw error
    }

    private static func column(_ result: OpaquePointer, _ row: Int32, _ column: Int32) -> [UInt8] {
        guard PQgetisnull(result, row, column) == 0, let base = PQgetvalue(result, row, column) else { return [] }
        let count = Int(PQgetlength(result, row, column))
        return Array(UnsafeRawBufferPointer(start: base, count: count))
    }

    static var closedError: KVError {
        .storage(detail: "the PostgreSQL store was closed; open a new PostgresKV")
    }

    // MARK: - Errors

    /// The `KVError` for a failed statement (`result` nil when libpq got no answer):
    /// serialization failures and deadlocks are `conflict`; a lost connection is
    /// `unavailable` (nothing was committed), or `maybeCommitted` during `COMMIT`;
    /// everything else is `storage` with the server's message, SQLSTATE and what to do.
    private func failure(_ result: OpaquePointer?, _ operation: String, committing: Bool) -> KVError {
        let state = result.flatMap { PQresultErrorField($0, Int32(UInt8(ascii: "C"))) }.map { String(cString: $0) } ?? ""
        var message = result.flatMap { PQresultErrorField($0, Int32(UInt8(ascii: "M"))) }.map { String(cString: $0) } ?? ""
        if message.isEmpty { message = Self.errorMessage(handle) }
        if state == "40001" || state == "40P01" { return .conflict }
        let lost = handle.map { PQstatus($0) != CONNECTION_OK } ?? true
        // Class 08: connection exception; 57P01-57P03: the server is shutting down or
        // starting; the session is gone or about to be.
        let shuttingDown = state.hasPrefix("08") || state == "57P01" || state == "57P02" || state == "57P03"
        if lost || shuttingDown || result == nil {
            broken = true
            if committing { return .maybeCommitted }
            let code = state.isEmpty ? "" : " (SQLSTATE \(state))"
            return .unavailable(
                reason: "lost the connection to \(target) during \(operation): \(message)\(code); "
                    + "nothing of this transaction was committed; check that the server is running and reachable")
        }
        if state == "53100" {
            return .noSpace(detail: "\(operation) on \(target): \(message) (SQLSTATE 53100); free disk space on the PostgreSQL server")
        }
        let advice: String
        switch state.prefix(2) {
        case "53":
            advice = "the server is out of resources (disk space, memory or connections); free them or raise its limits"
        case "42":
            advice = "check that this user may create and use the table kv (and that kv has the columns key BYTEA, value BYTEA)"
        case "25":
            advice = "the transaction was in an unexpected state; report it with this message"
        case "XX", "58":
            advice = "the server reports an internal or system error; check its log"
        case "54":
            advice = "a program limit was exceeded; this is unexpected within KVLimits; report it with this message"
        default:
            advice = "this is unexpected; report it with this message"
        }
        return .storage(detail: "\(operation) on \(target): \(message) (SQLSTATE \(state.isEmpty ? "none" : state)); \(advice)")
    }

    /// libpq's last message for `conn`, on one line.
    private static func errorMessage(_ conn: OpaquePointer?) -> String {
        guard let conn, let text = PQerrorMessage(conn) else { return "out of memory" }
        let message = clean(String(cString: text))
        return message.isEmpty ? "no message from libpq" : message
    }

    /// Folds libpq's multi-line messages onto one line, without a final period (the
    /// caller's text follows).
    private static func clean(_ text: String) -> String {
        var line = text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" || $0 == "\r" })
            .joined(separator: " ")
        while line.last == "." { line.removeLast() }
        return line
    }

    private static func describe(_ conn: OpaquePointer?) -> String {
        guard let conn else { return "PostgreSQL" }
        func text(_ pointer: UnsafeMutablePointer<CChar>?) -> String { pointer.map { String(cString: $0) } ?? "" }
        let host = text(PQhost(conn))
        let port = text(PQport(conn))
        let database = text(PQdb(conn))
        let user = text(PQuser(conn))
        var place = host.isEmpty ? "the default socket" : (host.hasPrefix("/") ? "socket directory \(host)" : host)
        if !port.isEmpty { place += host.hasPrefix("/") ? " port \(port)" : ":\(port)" }
        return "PostgreSQL at \(place), database \(database.isEmpty ? "?" : database), user \(user.isEmpty ? "?" : user)"
    }
}
