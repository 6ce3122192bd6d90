import CSQLite
import CisternCore
import CisternMeta
import CisternNIO
import CisternRouting
import CisternSQLite
import Foundation
import Synchronization

/// `cistern bench meta`: raw SQLite limits and the metadata service's figures on the
/// same disk in one run, side by side, each service figure with the raw figure it
/// compares with and the ratio. A benchmark: it reports figures, never pass/fail.
///
/// Raw: one database file in WAL mode with `synchronous = FULL` (as `SQLiteKV` opens
/// it), table `kv(key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID`, one
/// `BEGIN IMMEDIATE; INSERT × rows; COMMIT` per create, the rows sized as one
/// `Namespace.create` writes them (measured first); then `SELECT value FROM kv WHERE
/// key = ?` on random keys of that table. Service: `MetaService` on `SQLiteKV` in the
/// same scratch directory: creates of `/bench/d<k>/f<i>` over a few directories
/// created first, then stats of the same paths, one at a time and with several tasks
/// in flight. The raw inserts and the creates run interleaved in rounds, and so do the
/// raw selects and the stats, so a drifting disk latency affects both sides alike.
public enum MetaBenchmark {
    /// What to measure, and where.
    public struct Options: Sendable {
        /// Where to create the scratch directory (a fresh subdirectory, removed
        /// afterwards); nil: the system temporary directory.
        public var directory: String?
        /// Creates per service pass, and insert transactions in the raw pass.
        public var creates: Int
        /// Tasks in flight for the concurrent service pass (1: only the serial pass).
        public var concurrency: Int
        /// Directories the creates are spread over.
        public var directories: Int
        /// Minimum duration of the raw point-select pass (it also runs at least as
        /// many selects as the raw pass inserted rows).
        public var selectSeconds: Double
        /// Rounds the raw passes and the service passes are interleaved in.
        public var rounds: Int

        /// - Parameters:
        ///   - directory: parent of the scratch directory (default: the system temp dir).
        ///   - creates: creates per service pass and raw insert transactions (default 2000).
        ///   - concurrency: tasks in flight for the second service pass (default 8).
        ///   - directories: directories the creates are spread over (default 16).
        ///   - selectSeconds: minimum length of the raw point-select pass (default 0.5 s).
        ///   - rounds: rounds the raw and service passes are interleaved in (default 8).
        public init(
            directory: String? = nil, creates: Int = 2_000, concurrency: Int = 8, directories: Int = 16, selectSeconds: Double = 0.5,
            rounds: Int = 8
        ) {
            self.rounds = rounds
            self.directory = directory
            self.creates = creates
            self.concurrency = concurrency
            self.directories = directories
            self.selectSeconds = selectSeconds
        }
    }

    /// What one create and one stat do to the KV, counted on a private in-memory store
    /// for paths shaped like the benchmark's.
    public struct Shape: Sendable, Codable {
        /// Keys written (`set`) by one create.
        public var setsPerCreate: Int
        /// Key bytes one create writes, in total.
        public var keyBytesPerCreate: Int
        /// Value bytes one create writes, in total.
        public var valueBytesPerCreate: Int
        /// Point reads (`get`) one create makes.
        public var getsPerCreate: Int
        /// Point reads one stat makes.
        public var getsPerStat: Int
    }

    /// The raw SQLite figures. Rates are per wall-clock second.
    public struct RawResult: Sendable, Codable {
        /// Transactions in the insert pass, one per create.
        public var transactions: Int
        /// Rows each transaction inserts.
        public var rowsPerTransaction: Int
        /// Bytes of each inserted key.
        public var keyBytes: Int
        /// Bytes of each inserted value.
        public var valueBytes: Int
        /// `BEGIN IMMEDIATE; INSERT × rowsPerTransaction; COMMIT` per second.
        public var transactionsPerSecond: Double
        /// Rows inserted per second.
        public var rowsPerSecond: Double
        /// Point selects in the select pass.
        public var selects: Int
        /// `SELECT value FROM kv WHERE key = ?` (autocommit, random existing keys) per second.
        public var selectsPerSecond: Double
    }

    /// One `MetaService` pass. Rates are per wall-clock second.
    public struct ServiceResult: Sendable, Codable {
        /// Tasks in flight.
        public var concurrency: Int
        /// Files created, then stat'ed.
        public var creates: Int
        /// Creates per second.
        public var createsPerSecond: Double
        /// Stats per second.
        public var statsPerSecond: Double
        /// Creates and stats per second as pairs: `creates / (create time + stat time)`.
        public var pairsPerSecond: Double
    }

    /// One line of the comparison: a figure, the raw figure it compares with, and
    /// `value / raw`. Raw rows have no `raw` and no `ratio`.
    public struct Row: Sendable, Codable {
        /// What was measured, e.g. "meta create x8".
        public var name: String
        /// The figure, in `unit`.
        public var value: Double
        /// E.g. "creates/s".
        public var unit: String
        /// The raw figure's name, when this row compares with one.
        public var rawName: String?
        /// The raw figure, in `rawUnit`.
        public var raw: Double?
        /// The raw figure's unit.
        public var rawUnit: String?
        /// `value / raw`.
        public var ratio: Double?
        /// A second figure for the same run.
        public var detail: String?
    }

    /// Everything one run measured.
    public struct Report: Sendable, Codable {
        /// What one create and one stat do to the KV.
        public var shape: Shape
        /// The raw SQLite figures.
        public var raw: RawResult
        /// The service passes: one task in flight, then `concurrency` (if above 1).
        public var services: [ServiceResult]
        /// The comparison table, raw rows first.
        public var rows: [Row]
        /// What the figures mean.
        public var notes: [String]
        /// The scratch directory (already removed).
        public var directory: String
        /// Wall-clock seconds of the whole run.
        public var wallSeconds: Double
    }

    /// Counts the shape, then runs the raw passes and the service passes, each on its
    /// own database file in one scratch directory that is removed afterwards (also when
    /// a pass throws), interleaved in rounds: inserts with creates, then selects with
    /// stats. `progress` gets a line before each phase.
    public static func run(_ options: Options, progress: (String) -> Void = { _ in }) async throws -> Report {
        guard options.creates >= 1, options.concurrency >= 1, options.directories >= 1 else {
            throw DiskBenchError("creates, concurrency and directories must be at least 1")
        }
        let clock = ContinuousClock()
        let begin = clock.now
        let parent = options.directory ?? FileManager.default.temporaryDirectory.path
        let directory = parent + "/cistern-bench-meta-\(UInt64.random(in: 0...UInt64.max) >> 16)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }

        let runtime = ProductionRuntime(nodeName: "bench-meta", baseSeed: 1, logLevel: .critical)
        progress("shape: counting what one create and one stat read and write")
        let shape = try await measureShape(runtime: runtime, directories: options.directories)
        let rowsPerTransaction = max(1, shape.setsPerCreate)
        // Keys hold an 8-byte counter, so they are at least 9 bytes.
        let keyBytes = max(9, (shape.keyBytesPerCreate + rowsPerTransaction / 2) / rowsPerTransaction)
        let valueBytes = max(1, (shape.valueBytesPerCreate + rowsPerTransaction / 2) / rowsPerTransaction)

        let raw = try RawPass(
            path: directory + "/raw.db", rowsPerTransaction: rowsPerTransaction, keyBytes: keyBytes, valueBytes: valueBytes)
        defer { raw.close() }
        var passes: [ServicePass] = []
        func interleave() async throws -> (RawResult, [ServiceResult]) {
            for concurrency in options.concurrency > 1 ? [1, options.concurrency] : [1] {
                passes.append(
                    try await ServicePass(
                        path: directory + "/meta-x\(concurrency).db", runtime: runtime, directories: options.directories,
                        concurrency: concurrency))
            }

            // The disk's fsync latency drifts (other work on the machine): rounds interleave
            // the raw inserts with each pass's creates, and the raw selects with the stats,
            // so every figure sees the same conditions. The order rotates each round.
            let rounds = max(1, min(options.rounds, options.creates))
            func bounds(_ r: Int) -> Range<Int> { (options.creates * r / rounds)..<(options.creates * (r + 1) / rounds) }
            let steps = passes.count + 1
            var insertSeconds = 0.0
            var createSeconds = [Double](repeating: 0, count: passes.count)
            progress(
                "\(options.creates) raw transactions of \(rowsPerTransaction) x (\(keyBytes) + \(valueBytes)) B rows, interleaved "
                    + "with \(options.creates) creates per pass (\(passes.map { "x\($0.concurrency)" }.joined(separator: ", "))), "
                    + "\(rounds) rounds, in \(directory)")
            for r in 0..<rounds {
                for step in 0..<steps {
                    let which = (step + r) % steps
                    if which == passes.count {
                        insertSeconds += try raw.insert(bounds(r))
                    } else {
                        createSeconds[which] += try await passes[which].run(bounds(r)) { meta, path in _ = try await meta.create(path) }
                    }
                }
            }
            progress("raw point selects interleaved with stats of the same paths")
            let selectsPerRound = max(1, raw.rows / rounds)
            let selectSecondsPerRound = options.selectSeconds / Double(rounds)
            var selects = 0
            var selectSeconds = 0.0
            var statSeconds = [Double](repeating: 0, count: passes.count)
            for r in 0..<rounds {
                for step in 0..<steps {
                    let which = (step + r) % steps
                    if which == passes.count {
                        let (n, t) = try raw.select(atLeast: selectsPerRound, seconds: selectSecondsPerRound)
                        selects += n
                        selectSeconds += t
                    } else {
                        statSeconds[which] += try await passes[which].run(bounds(r)) { meta, path in _ = try await meta.stat(path) }
                    }
                }
            }

            let rawResult = RawResult(
                transactions: options.creates, rowsPerTransaction: rowsPerTransaction, keyBytes: keyBytes, valueBytes: valueBytes,
                transactionsPerSecond: Double(options.creates) / insertSeconds, rowsPerSecond: Double(raw.rows) / insertSeconds,
                selects: selects, selectsPerSecond: Double(selects) / selectSeconds)
            let services = passes.indices.map { i in
                ServiceResult(
                    concurrency: passes[i].concurrency, creates: options.creates, createsPerSecond: Double(options.creates) / createSeconds[i],
                    statsPerSecond: Double(options.creates) / statSeconds[i],
                    pairsPerSecond: Double(options.creates) / (createSeconds[i] + statSeconds[i]))
            }
            return (rawResult, services)
        }
        let rawResult: RawResult
        let services: [ServiceResult]
        do {
            (rawResult, services) = try await interleave()
        } catch {
            for pass in passes { await pass.close() }
            throw error
        }
        for pass in passes { await pass.close() }

        let notes = [
            "one create = one serializable transaction: \(shape.getsPerCreate) point reads and \(shape.setsPerCreate) writes "
                + "(\(shape.keyBytesPerCreate) key + \(shape.valueBytesPerCreate) value bytes); two of its writes overwrite the same "
                + "keys every time (the inode counter and the directory's chain cursor); raw rows are all new keys, one in each of "
                + "\(shape.setsPerCreate) key ranges, so a raw commit dirties about as many B-tree leaves as a create",
            "one stat = \(shape.getsPerStat) point reads in one transaction (SQLiteKV runs reads as BEGIN IMMEDIATE too; "
                + "its commit writes nothing, so it does not fsync); raw selects are single autocommit statements",
            "every create commit fsyncs the WAL (synchronous=FULL), like every raw insert transaction",
            "SQLiteKV runs one transaction at a time on one connection, so tasks in flight queue for it: "
                + "commits are not batched and the x\(options.concurrency) rows show the queueing cost, not parallelism",
            "raw pair rate = 1 / (1/raw txn/s + 1/raw selects/s)",
            "raw and service passes run interleaved in rounds (order rotating), so a drifting fsync latency hits them alike",
        ]
        return Report(
            shape: shape, raw: rawResult, services: services, rows: rows(raw: rawResult, services: services, shape: shape),
            notes: options.concurrency > 1 ? notes : notes.filter { !$0.hasPrefix("SQLiteKV runs one") },
            directory: directory, wallSeconds: seconds(begin.duration(to: clock.now)))
    }

    /// The comparison rows of `raw` and `services`.
    public static func rows(raw: RawResult, services: [ServiceResult], shape: Shape) -> [Row] {
        let insert = Row(
            name: "raw insert txn (\(raw.rowsPerTransaction) x \(raw.keyBytes)+\(raw.valueBytes) B rows)",
            value: raw.transactionsPerSecond, unit: "txn/s",
            detail: "\(DiskBenchmark.format(raw.rowsPerSecond)) rows/s")
        let select = Row(name: "raw point select", value: raw.selectsPerSecond, unit: "selects/s")
        let pairRaw = raw.transactionsPerSecond > 0 && raw.selectsPerSecond > 0
            ? 1 / (1 / raw.transactionsPerSecond + 1 / raw.selectsPerSecond) : 0
        let pair = Row(name: "raw txn + select", value: pairRaw, unit: "pairs/s")
        var rows = [insert, select, pair]
        func compare(_ name: String, _ value: Double, _ unit: String, _ with: Row, detail: String? = nil) -> Row {
            Row(
                name: name, value: value, unit: unit, rawName: with.name, raw: with.value, rawUnit: with.unit,
                ratio: with.value > 0 ? value / with.value : 0, detail: detail)
        }
        for s in services {
            let x = "x\(s.concurrency)"
            rows.append(compare(
                "meta create \(x)", s.createsPerSecond, "creates/s", insert,
                detail: "\(DiskBenchmark.format(s.createsPerSecond * Double(shape.getsPerCreate))) gets/s + "
                    + "\(DiskBenchmark.format(s.createsPerSecond * Double(shape.setsPerCreate))) sets/s"))
            rows.append(compare(
                "meta stat \(x)", s.statsPerSecond, "stats/s", select,
                detail: "\(DiskBenchmark.format(s.statsPerSecond * Double(shape.getsPerStat))) gets/s"))
            rows.append(compare("meta create+stat \(x)", s.pairsPerSecond, "pairs/s", pair))
        }
        return rows
    }

    /// The report as aligned text: a header, the table, and the notes.
    public static func table(_ report: Report) -> String {
        let r = report.raw
        var lines = [
            "metadata benchmark: SQLite WAL synchronous=FULL; raw: \(r.transactions) transactions of \(r.rowsPerTransaction) rows, "
                + "\(r.selects) point selects; meta: \(report.services.first?.creates ?? 0) creates + stats per pass, "
                + report.services.map { "x\($0.concurrency)" }.joined(separator: " and "),
            "",
        ]
        let f = DiskBenchmark.format
        let nameWidth = report.rows.map(\.name.count).max() ?? 0
        let valueWidth = report.rows.map { f($0.value).count + 1 + $0.unit.count }.max() ?? 0
        let rawWidth = report.rows.compactMap { row in row.raw.map { f($0).count + 1 + (row.rawUnit ?? "").count } }.max() ?? 0
        for row in report.rows {
            var line = DiskBenchmark.pad(row.name, nameWidth) + "  " + DiskBenchmark.pad("\(f(row.value)) \(row.unit)", valueWidth, left: true)
            if let raw = row.raw, let ratio = row.ratio {
                line += "   raw " + DiskBenchmark.pad("\(f(raw)) \(row.rawUnit ?? "")", rawWidth, left: true)
                    + "   " + DiskBenchmark.pad(String(format: "%.2fx", ratio), 7, left: true)
            }
            if let detail = row.detail {
                if row.raw == nil && row.name.hasPrefix("raw") && rawWidth > 0 {
                    line += String(repeating: " ", count: 4 + rawWidth + 3 + 7)
                }
                line += "   " + detail
            }
            while line.hasSuffix(" ") { line.removeLast() }
            lines.append(line)
        }
        lines.append("")
        for note in report.notes { lines.append("note: \(note)") }
        lines.append("xN = N tasks in flight. Scratch directory removed; run took \(String(format: "%.1f", report.wallSeconds)) s.")
        return lines.joined(separator: "\n")
    }

    // MARK: - Shape

    static let policy = LayoutPolicy(table: 1, tableVersion: 1, chains: (1...16).map { ChainID($0) }, chunkBytes: 1 << 20, stripe: 4)

    static func path(directory k: Int, file i: Int) -> String { "/bench/d\(k)/f\(i)" }

    /// Counts one create's and one stat's KV traffic on a private in-memory store,
    /// averaged over a few creates spread over the directories.
    static func measureShape(runtime: any Runtime, directories: Int) async throws -> Shape {
        let kv = CountingKV(try SQLiteKV())
        let meta = MetaService(kv: kv, runtime: runtime, policy: policy)
        for k in 0..<directories { _ = try await meta.mkdir("/bench/d\(k)", parents: true) }
        let samples = 32
        kv.reset()
        for i in 0..<samples { _ = try await meta.create(path(directory: i % directories, file: i)) }
        let c = kv.counts
        kv.reset()
        for i in 0..<samples { _ = try await meta.stat(path(directory: i % directories, file: i)) }
        let s = kv.counts
        func per(_ n: Int) -> Int { (n + samples / 2) / samples }
        return Shape(
            setsPerCreate: per(c.sets), keyBytesPerCreate: per(c.keyBytes), valueBytesPerCreate: per(c.valueBytes),
            getsPerCreate: per(c.gets), getsPerStat: per(s.gets))
    }

}

/// One `MetaService` on its own `SQLiteKV` file, with its directories created.
private final class ServicePass {
    let kv: SQLiteKV
    let meta: MetaService
    let directories: Int
    let concurrency: Int

    init(path: String, runtime: any Runtime, directories: Int, concurrency: Int) async throws {
        kv = try SQLiteKV(path: path, synchronous: .full)
        meta = MetaService(kv: kv, runtime: runtime, policy: MetaBenchmark.policy)
        self.directories = directories
        self.concurrency = concurrency
        do {
            for k in 0..<directories { _ = try await meta.mkdir("/bench/d\(k)", parents: true) }
        } catch {
            await kv.close()
            throw error
        }
    }

    /// Runs `body` on the paths of files `range`, `concurrency` at a time; the seconds it took.
    func run(_ range: Range<Int>, _ body: @escaping @Sendable (MetaService, String) async throws -> Void) async throws -> Double {
        let clock = ContinuousClock()
        let start = clock.now
        let (meta, directories, concurrency) = (self.meta, self.directories, self.concurrency)
        if concurrency == 1 {
            for i in range { try await body(meta, MetaBenchmark.path(directory: i % directories, file: i)) }
        } else {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<min(concurrency, range.count) {
                    group.addTask {
                        for i in stride(from: range.lowerBound + worker, to: range.upperBound, by: concurrency) {
                            try await body(meta, MetaBenchmark.path(directory: i % directories, file: i))
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        return seconds(start.duration(to: clock.now))
    }

    /// Closes the database.
    func close() async { await kv.close() }
}

/// The raw SQLite passes on one database file: inserts shaped like creates, and
/// point selects of the rows inserted.
private final class RawPass {
    let db: RawSQLite
    let rowsPerTransaction: Int
    let keyBytes: Int
    private let begin, insertStatement, commit, selectStatement: OpaquePointer
    private var value: [UInt8]
    private var random = DeterministicRandom(seed: 0x5E7A_DA7A)
    /// Rows inserted so far.
    private(set) var rows = 0

    init(path: String, rowsPerTransaction: Int, keyBytes: Int, valueBytes: Int) throws {
        db = try RawSQLite(path: path)
        self.rowsPerTransaction = rowsPerTransaction
        self.keyBytes = keyBytes
        try db.execute("PRAGMA journal_mode = WAL", expect: "wal")
        try db.execute("PRAGMA synchronous = FULL")
        try db.execute("CREATE TABLE kv (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID")
        begin = try db.prepare("BEGIN IMMEDIATE")
        insertStatement = try db.prepare("INSERT INTO kv (key, value) VALUES (?1, ?2)")
        commit = try db.prepare("COMMIT")
        selectStatement = try db.prepare("SELECT value FROM kv WHERE key = ?1")
        value = [UInt8](repeating: 0, count: valueBytes)
        for i in value.indices { value[i] = UInt8(truncatingIfNeeded: random.next()) }
    }

    func close() { db.close() }

    /// Row `j` of transaction `t`: in key range `j`, so one transaction touches as many
    /// ranges (B-tree leaves) as a create's keys do.
    private func key(transaction t: Int, row j: Int) -> [UInt8] {
        var k = [UInt8(truncatingIfNeeded: 0x61 + j)] + KeyCoding.bigEndian(UInt64(t))
        if k.count < keyBytes { k += [UInt8](repeating: 0x2E, count: keyBytes - k.count) }
        return k
    }

    /// One `BEGIN IMMEDIATE; INSERT × rowsPerTransaction; COMMIT` per transaction in
    /// `range`; the seconds it took.
    func insert(_ range: Range<Int>) throws -> Double {
        let clock = ContinuousClock()
        let start = clock.now
        for t in range {
            try db.step(begin, "BEGIN IMMEDIATE")
            for j in 0..<rowsPerTransaction {
                value[0] = UInt8(truncatingIfNeeded: rows)
                try db.bind(insertStatement, 1, key(transaction: t, row: j))
                try db.bind(insertStatement, 2, value)
                try db.step(insertStatement, "INSERT")
                rows += 1
            }
            try db.step(commit, "COMMIT")
        }
        return seconds(start.duration(to: clock.now))
    }

    /// `SELECT value FROM kv WHERE key = ?` on random inserted keys, at least `count`
    /// of them and for at least `seconds`; how many and the seconds they took.
    func select(atLeast count: Int, seconds minimum: Double) throws -> (Int, Double) {
        let transactions = UInt64(max(1, rows / max(1, rowsPerTransaction)))
        let keys = (0..<1_024).map { _ in
            key(transaction: Int(random.next(upperBound: transactions)), row: Int(random.next(upperBound: UInt64(rowsPerTransaction))))
        }
        let clock = ContinuousClock()
        let start = clock.now
        var done = 0
        var elapsed = 0.0
        repeat {
            for k in keys {
                try db.bind(selectStatement, 1, k)
                guard try db.step(selectStatement, "SELECT") else { throw DiskBenchError("raw select: key missing from \(db.path)") }
                _ = sqlite3_column_bytes(selectStatement, 0)
                sqlite3_reset(selectStatement)
            }
            done += keys.count
            elapsed = seconds(start.duration(to: clock.now))
        } while elapsed < minimum || done < count
        return (done, elapsed)
    }
}

/// One SQLite connection used directly through the C API (no Cistern layer), with the
/// statements it prepared. Used by one thread.
private final class RawSQLite {
    let path: String
    private var handle: OpaquePointer?
    private var statements: [OpaquePointer] = []

    init(path: String) throws {
        self.path = path
        var db: OpaquePointer?
        let rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nil)
        handle = db
        guard rc == SQLITE_OK, db != nil else {
            let error = failure(rc, "open")
            close()
            throw error
        }
        sqlite3_busy_timeout(db, 5_000)
    }

    deinit { close() }

    func close() {
        for s in statements { sqlite3_finalize(s) }
        statements.removeAll()
        if let handle { sqlite3_close_v2(handle) }
        handle = nil
    }

    /// Runs `sql` once; with `expect`, checks the first column of its first row.
    func execute(_ sql: String, expect: String? = nil) throws {
        var statement: OpaquePointer?
        let rc = sqlite3_prepare_v2(handle, sql, -1, &statement, nil)
        guard rc == SQLITE_OK, let statement else { throw failure(rc, sql) }
        defer { sqlite3_finalize(statement) }
        let row = try step(statement, sql)
        if let expect {
            let got = row ? sqlite3_column_text(statement, 0).map { String(cString: $0) } ?? "" : ""
            guard got.lowercased() == expect else { throw DiskBenchError("\(sql) on \(path) gave '\(got)', not '\(expect)'") }
        }
    }

    /// A statement kept until `close`.
    func prepare(_ sql: String) throws -> OpaquePointer {
        var statement: OpaquePointer?
        let rc = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard rc == SQLITE_OK, let statement else { throw failure(rc, sql) }
        statements.append(statement)
        return statement
    }

    func bind(_ statement: OpaquePointer, _ index: Int32, _ bytes: [UInt8]) throws {
        let rc = bytes.withUnsafeBytes {
            sqlite3_bind_blob(statement, index, $0.baseAddress, Int32($0.count), unsafeBitCast(-1 as Int, to: sqlite3_destructor_type.self))
        }
        guard rc == SQLITE_OK else { throw failure(rc, "bind") }
    }

    /// Steps once: true for a row (the statement is left on it), false when done (the
    /// statement is reset).
    @discardableResult
    func step(_ statement: OpaquePointer, _ operation: String) throws -> Bool {
        let rc = sqlite3_step(statement)
        if rc == SQLITE_ROW { return true }
        sqlite3_reset(statement)
        guard rc == SQLITE_DONE else { throw failure(rc, operation) }
        return false
    }

    private func failure(_ rc: Int32, _ operation: String) -> DiskBenchError {
        let message = handle.flatMap { sqlite3_errmsg($0) }.map { String(cString: $0) } ?? String(cString: sqlite3_errstr(rc))
        return DiskBenchError("\(operation) on \(path): \(message) (SQLite code \(rc))")
    }
}

/// A `TransactionalKV` that counts the reads and writes passing through to `base`.
private final class CountingKV: TransactionalKV {
    struct Counts: Sendable {
        var gets = 0
        var sets = 0
        var keyBytes = 0
        var valueBytes = 0
    }

    let base: any TransactionalKV
    let state = Mutex(Counts())

    init(_ base: any TransactionalKV) { self.base = base }

    var counts: Counts { state.withLock { $0 } }
    func reset() { state.withLock { $0 = Counts() } }

    func attempt<T: Sendable>(_ body: (any KVTransaction) async throws -> T) async throws -> T {
        try await base.attempt { tx in try await body(CountingTransaction(base: tx, owner: self)) }
    }
}

private struct CountingTransaction: KVTransaction {
    let base: any KVTransaction
    let owner: CountingKV

    func get(_ key: [UInt8]) async throws(KVError) -> [UInt8]? {
        owner.state.withLock { $0.gets += 1 }
        return try await base.get(key)
    }

    func getRange(_ range: KVRange, limit: Int, reverse: Bool) async throws(KVError) -> [KVPair] {
        try await base.getRange(range, limit: limit, reverse: reverse)
    }

    func set(_ key: [UInt8], _ value: [UInt8]) async throws(KVError) {
        owner.state.withLock {
            $0.sets += 1
            $0.keyBytes += key.count
            $0.valueBytes += value.count
        }
        try await base.set(key, value)
    }

    func clear(_ key: [UInt8]) async throws(KVError) { try await base.clear(key) }

    func clearRange(_ range: KVRange) async throws(KVError) { try await base.clearRange(range) }
}
