import CisternCore

/// One transaction of a `SQLiteKV`: every call runs against the store's connection,
/// inside the SQLite transaction `attempt` opened, and fails with `transactionClosed`
/// once that transaction has ended.
final class SQLiteTransaction: KVTransaction {
    private let store: SQLiteKV
    private let serial: UInt64

    init(store: SQLiteKV, serial: UInt64) {
        self.store = store
        self.serial = serial
    }

    func get(_ key: [UInt8]) async throws(KVError) -> [UInt8]? {
        try KVLimits.check(key: key)
        return try store.database.withLock { (db) throws(KVError) -> [UInt8]? in
            try db.checkCurrent(serial)
            return try db.get(key)
        }
    }

    func getRange(_ range: KVRange, limit: Int, reverse: Bool) async throws(KVError) -> [KVPair] {
        if limit > KVLimits.rangeLimitMax {
            throw .tooLarge(what: "range read limit (pairs)", bytes: limit, limitBytes: KVLimits.rangeLimitMax)
        }
        return try store.database.withLock { (db) throws(KVError) -> [KVPair] in
            try db.checkCurrent(serial)
            if limit <= 0 { return [] }
            return try db.getRange(begin: range.begin, end: range.end, limit: limit, reverse: reverse)
        }
    }

    func set(_ key: [UInt8], _ value: [UInt8]) async throws(KVError) {
        try KVLimits.check(key: key)
        try KVLimits.check(value: value)
        try store.database.withLock { (db) throws(KVError) in
            try db.checkCurrent(serial)
            try db.charge(key.count + value.count)
            try db.set(key, value)
        }
    }

    func clear(_ key: [UInt8]) async throws(KVError) {
        try KVLimits.check(key: key)
        try store.database.withLock { (db) throws(KVError) in
            try db.checkCurrent(serial)
            try db.charge(key.count)
            try db.clear(key)
        }
    }

    func clearRange(_ range: KVRange) async throws(KVError) {
        try store.database.withLock { (db) throws(KVError) in
            try db.checkCurrent(serial)
            try db.charge(range.begin.count + range.end.count)
            try db.clearRange(begin: range.begin, end: range.end)
        }
    }
}
