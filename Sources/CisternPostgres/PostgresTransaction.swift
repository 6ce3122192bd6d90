import CisternCore
import Synchronization

/// One transaction of a `PostgresKV`: every call runs on the connection `attempt`
/// lent it, inside the server transaction `attempt` began, and fails with
/// `transactionClosed` once the body has returned (or thrown).
final class PostgresTransaction: KVTransaction {
    private let store: PostgresKV
    private let connection: PooledConnection
    private let serial: UInt64
    /// Set when the body has returned; the connection's serial check is the
    /// authority, this only keeps late calls off the connection.
    private let ended = Atomic<Bool>(false)

    init(store: PostgresKV, connection: PooledConnection, serial: UInt64) {
        self.store = store
        self.connection = connection
        self.serial = serial
    }

    /// Marks the body as returned.
    func end() {
        ended.store(true, ordering: .releasing)
    }

    func get(_ key: [UInt8]) async throws(KVError) -> [UInt8]? {
        try KVLimits.check(key: key)
        let serial = self.serial
        return try await run { (db) throws(KVError) -> [UInt8]? in
            try db.checkCurrent(serial)
            return try db.get(key)
        }
    }

    func getRange(_ range: KVRange, limit: Int, reverse: Bool) async throws(KVError) -> [KVPair] {
        if limit > KVLimits.rangeLimitMax {
            throw .tooLarge(what: "range read limit (pairs)", bytes: limit, limitBytes: KVLimits.rangeLimitMax)
        }
        let serial = self.serial
        return try await run { (db) throws(KVError) -> [KVPair] in
            try db.checkCurrent(serial)
            if limit <= 0 { return [] }
            return try db.getRange(begin: range.begin, end: range.end, limit: limit, reverse: reverse)
        }
    }

    func set(_ key: [UInt8], _ value: [UInt8]) async throws(KVError) {
        try KVLimits.check(key: key)
        try KVLimits.check(value: value)
        let serial = self.serial
        try await run { (db) throws(KVError) in
            try db.checkCurrent(serial)
            try db.charge(key.count + value.count)
            try db.set(key, value)
        }
    }

    func clear(_ key: [UInt8]) async throws(KVError) {
        try KVLimits.check(key: key)
        let serial = self.serial
        try await run { (db) throws(KVError) in
            try db.checkCurrent(serial)
            try db.charge(key.count)
            try db.clear(key)
        }
    }

    func clearRange(_ range: KVRange) async throws(KVError) {
        let serial = self.serial
        try await run { (db) throws(KVError) in
            try db.checkCurrent(serial)
            try db.charge(range.begin.count + range.end.count)
            try db.clearRange(begin: range.begin, end: range.end)
        }
    }

    private func run<T: Sendable>(
        _ body: @escaping @Sendable (PostgresConnection) throws(KVError) -> T
    ) async throws(KVError) -> T {
        if ended.load(ordering: .acquiring) { throw .transactionClosed }
        return try await store.perform(connection, body)
    }
}
