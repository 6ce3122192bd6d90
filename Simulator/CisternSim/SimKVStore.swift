import CisternCore

/// The simulated transactional KV store: one ordered map with a version per key
/// (kept for cleared keys too), so a transaction that read something a later
/// commit changed is refused with `conflict`. Reads see a snapshot at the
/// transaction's read version; faults inject spurious conflicts, "maybe committed"
/// answers and outages.
public final class SimKVStore: @unchecked Sendable {
    unowned let world: SimWorld
    public var config: KVConfig
    var rng: DeterministicRandom
    /// Every key ever written, sorted; cleared keys stay with a nil value.
    private(set) var keys: [[UInt8]] = []
    private var values: [[UInt8]: [UInt8]] = [:]
    private var versions: [[UInt8]: UInt64] = [:]
    public private(set) var version: UInt64 = 0
    /// The store refuses every operation until this virtual time.
    public var unavailableUntilNanoseconds: UInt64 = 0
    public private(set) var commits: UInt64 = 0
    public internal(set) var conflicts: UInt64 = 0

    init(world: SimWorld, config: KVConfig, rng: DeterministicRandom) {
        self.world = world
        self.config = config
        self.rng = rng
    }

    var isUnavailable: Bool { world.nowNanoseconds < unavailableUntilNanoseconds }

    func index(of key: [UInt8]) -> (found: Bool, at: Int) {
        var lo = 0, hi = keys.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if keys[mid].lexicographicallyPrecedes(key) { lo = mid + 1 } else { hi = mid }
        }
        return (lo < keys.count && keys[lo] == key, lo)
    }

    func value(_ key: [UInt8]) -> [UInt8]? { values[key] }
    func versionOf(_ key: [UInt8]) -> UInt64 { versions[key] ?? 0 }

    /// Keys (cleared ones included) in `range`, ascending.
    func keys(in range: KVRange) -> ArraySlice<[UInt8]> {
        let lo = index(of: range.begin).at
        let hi = index(of: range.end).at
        return lo < hi ? keys[lo..<hi] : []
    }

    /// A committed snapshot of every live pair, ascending (for checkers).
    public func snapshot() -> [KVPair] {
        keys.compactMap { k in values[k].map { KVPair(key: k, value: $0) } }
    }

    func apply(_ writes: [SimKVTransaction.Write]) {
        version += 1
        commits += 1
        for w in writes {
            switch w {
            case .set(let k, let v):
                let (found, at) = index(of: k)
                if !found { keys.insert(k, at: at) }
                values[k] = v
                versions[k] = version
            case .clear(let k):
                if values.removeValue(forKey: k) != nil { versions[k] = version }
            case .clearRange(let r):
                for k in keys(in: r) where values[k] != nil {
                    values[k] = nil
                    versions[k] = version
                }
            }
        }
    }
}

/// The `TransactionalKV` handle of a simulated process. Operations take virtual
/// time on the process's clock; a dead process's transactions never finish.
public final class SimKV: TransactionalKV, @unchecked Sendable {
    unowned let process: SimProcess
    init(process: SimProcess) { self.process = process }

    var store: SimKVStore { process.world.kvStore }

    func latency() async throws(KVError) {
        try? await process.runtime.sleep(nanoseconds: store.config.operationNanoseconds)
        if process.status == .dead {
            await withUnsafeContinuation { (_: UnsafeContinuation<Void, Never>) in }
        }
        if store.isUnavailable { throw .unavailable(reason: "simulated outage of the KV store") }
        let network = process.world.network!
        let me = process.node.id
        if network.isBlocked(from: me, to: SimWorld.kvNodeID) || network.isBlocked(from: SimWorld.kvNodeID, to: me) {
            throw .unavailable(reason: "cannot reach the KV store: network partition")
        }
    }

    public func attempt<T: Sendable>(_ body: (any KVTransaction) async throws -> T) async throws -> T {
        try await latency()
        let tx = SimKVTransaction(kv: self, readVersion: store.version)
        let result: T
        do {
            result = try await body(tx)
        } catch {
            tx.closed = true
            throw error
        }
        tx.closed = true
        try await commit(tx)
        return result
    }

    private func commit(_ tx: SimKVTransaction) async throws(KVError) {
        let world = process.world
        if tx.writes.isEmpty {
            try tx.validateReads()
            return
        }
        try await latency()
        do {
            try tx.validateReads()
        } catch {
            store.conflicts += 1
            world.trace.record(.kvConflict, at: world.nowNanoseconds, tx.readVersion)
            throw error
        }
        if store.config.conflictProbability > 0, store.rng.chance(store.config.conflictProbability) {
            store.conflicts += 1
            world.trace.note(.kvFault, at: world.nowNanoseconds, "injected conflict")
            throw .conflict
        }
        if store.config.maybeCommittedProbability > 0, store.rng.chance(store.config.maybeCommittedProbability) {
            let applied = store.rng.chance(0.5)
            if applied { store.apply(tx.writes) }
            world.trace.note(.kvFault, at: world.nowNanoseconds, "maybe committed (applied: \(applied))")
            throw .maybeCommitted
        }
        store.apply(tx.writes)
        world.trace.record(.kvCommit, at: world.nowNanoseconds, store.version, UInt64(tx.writes.count))
    }
}

/// One simulated transaction: buffered writes, a read set checked at every read and
/// again at commit.
final class SimKVTransaction: KVTransaction, @unchecked Sendable {
    enum Write {
        case set([UInt8], [UInt8])
        case clear([UInt8])
        case clearRange(KVRange)
    }

    unowned let kv: SimKV
    let readVersion: UInt64
    var closed = false
    var writes: [Write] = []
    var writeBytes = 0
    private var readKeys: [[UInt8]] = []
    private var readRanges: [KVRange] = []

    init(kv: SimKV, readVersion: UInt64) {
        self.kv = kv
        self.readVersion = readVersion
    }

    private var store: SimKVStore { kv.store }

    private func open() throws(KVError) {
        if closed { throw .transactionClosed }
    }

    /// Conflict if anything this transaction read changed after its read version.
    func validateReads() throws(KVError) {
        for k in readKeys where store.versionOf(k) > readVersion { throw .conflict }
        for r in readRanges {
            for k in store.keys(in: r) where store.versionOf(k) > readVersion { throw .conflict }
        }
    }

    /// This transaction's own effect on `key`: .some(value or nil) if it wrote it.
    private func local(_ key: [UInt8]) -> [UInt8]?? {
        var out: [UInt8]?? = .none
        for w in writes {
            switch w {
            case .set(let k, let v) where k == key: out = .some(v)
            case .clear(let k) where k == key: out = .some(nil)
            case .clearRange(let r) where r.contains(key): out = .some(nil)
            default: break
            }
        }
        return out
    }

    func get(_ key: [UInt8]) async throws(KVError) -> [UInt8]? {
        try open()
        try KVLimits.check(key: key)
        try await kv.latency()
        try open()
        if let mine = local(key) { return mine }
        if store.versionOf(key) > readVersion { throw .conflict }
        readKeys.append(key)
        return store.value(key)
    }

    func getRange(_ range: KVRange, limit: Int, reverse: Bool) async throws(KVError) -> [KVPair] {
        try open()
        guard limit > 0 else { return [] }
        try await kv.latency()
        try open()
        var merged: [[UInt8]: [UInt8]] = [:]
        for k in store.keys(in: range) {
            if store.versionOf(k) > readVersion { throw .conflict }
            if let v = store.value(k) { merged[k] = v }
        }
        readRanges.append(range)
        for w in writes {
            switch w {
            case .set(let k, let v) where range.contains(k): merged[k] = v
            case .clear(let k): merged[k] = nil
            case .clearRange(let r):
                for k in merged.keys.sorted(by: { $0.lexicographicallyPrecedes($1) }) where r.contains(k) { merged[k] = nil }
            default: break
            }
        }
        var sorted = merged.keys.sorted { $0.lexicographicallyPrecedes($1) }
        if reverse { sorted.reverse() }
        return sorted.prefix(min(limit, KVLimits.rangeLimitMax)).map { KVPair(key: $0, value: merged[$0]!) }
    }

    private func account(_ bytes: Int) throws(KVError) {
        writeBytes += bytes
        if writeBytes > KVLimits.transactionBytesMax {
            throw .tooLarge(what: "transaction", bytes: writeBytes, limitBytes: KVLimits.transactionBytesMax)
        }
    }

    func set(_ key: [UInt8], _ value: [UInt8]) async throws(KVError) {
        try open()
        try KVLimits.check(key: key)
        try KVLimits.check(value: value)
        try account(key.count + value.count)
        writes.append(.set(key, value))
    }

    func clear(_ key: [UInt8]) async throws(KVError) {
        try open()
        try KVLimits.check(key: key)
        try account(key.count)
        writes.append(.clear(key))
    }

    func clearRange(_ range: KVRange) async throws(KVError) {
        try open()
        try account(range.begin.count + range.end.count)
        writes.append(.clearRange(range))
    }
}
