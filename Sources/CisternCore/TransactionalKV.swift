/// A half-open key range [begin, end) in unsigned byte order.
public struct KVRange: Sendable, Equatable {
    public var begin: [UInt8]
    public var end: [UInt8]
    public init(begin: [UInt8], end: [UInt8]) {
        self.begin = begin
        self.end = end
    }

    /// Every key that starts with `prefix`.
    public static func prefix(_ prefix: [UInt8]) -> KVRange {
        var end = prefix
        while let last = end.last, last == 0xFF { end.removeLast() }
        if end.isEmpty { return KVRange(begin: prefix, end: [0xFF, 0xFF, 0xFF, 0xFF]) }
        end[end.count - 1] += 1
        return KVRange(begin: prefix, end: end)
    }

    public func contains(_ key: [UInt8]) -> Bool {
        !key.lexicographicallyPrecedes(begin) && key.lexicographicallyPrecedes(end)
    }
}

public struct KVPair: Sendable, Equatable {
    public var key: [UInt8]
    public var value: [UInt8]
    public init(key: [UInt8], value: [UInt8]) {
        self.key = key
        self.value = value
    }
}

/// Why a transaction did not commit.
public enum KVError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Another transaction changed what this one read; retry.
    case conflict
    /// The commit may or may not have been applied (the store went away mid-commit).
    /// Retry only transactions that are idempotent.
    case maybeCommitted
    /// The store cannot be reached now; retry later.
    case unavailable(reason: String)
    case tooLarge(what: String, bytes: Int, limitBytes: Int)
    /// The transaction was used after its body returned.
    case transactionClosed
    /// The store failed in a way retrying will not fix.
    case storage(detail: String)
    /// The store's volume is full: nothing of the transaction was committed, and
    /// retrying does not help until space is freed (the text says where).
    case noSpace(detail: String)
    /// Retries ran out; `last` is the final attempt's error.
    indirect case retriesExhausted(attempts: Int, last: KVError)

    public var isRetryable: Bool {
        switch self {
        case .conflict, .unavailable: return true
        default: return false
        }
    }

    public var description: String {
        switch self {
        case .conflict: return "transaction conflict: a concurrent transaction changed what this one read"
        case .maybeCommitted: return "commit result unknown: the transaction may have been applied"
        case .unavailable(let r): return "KV store unavailable: \(r)"
        case .tooLarge(let w, let b, let l): return "\(w) of \(b) bytes exceeds the \(l)-byte limit"
        case .transactionClosed: return "transaction used after it ended"
        case .storage(let d): return "KV store failure: \(d)"
        case .noSpace(let d): return "KV store out of space: \(d)"
        case .retriesExhausted(let n, let last): return "gave up after \(n) attempts: \(last)"
        }
    }
}

public enum KVLimits {
    public static let keyBytesMax = 10_000
    public static let valueBytesMax = 100_000
    /// Total bytes of keys and values written by one transaction.
    public static let transactionBytesMax = 10 << 20
    /// Most pairs one range read returns.
    public static let rangeLimitMax = 100_000

    public static func check(key: [UInt8]) throws(KVError) {
        if key.count > keyBytesMax { throw .tooLarge(what: "key", bytes: key.count, limitBytes: keyBytesMax) }
    }

    public static func check(value: [UInt8]) throws(KVError) {
        if value.count > valueBytesMax { throw .tooLarge(what: "value", bytes: value.count, limitBytes: valueBytesMax) }
    }
}

/// One transaction: reads see a consistent snapshot plus this transaction's own
/// writes; writes apply atomically at commit or not at all.
public protocol KVTransaction: Sendable {
    func get(_ key: [UInt8]) async throws(KVError) -> [UInt8]?
    /// Pairs in `range`, ascending (descending when `reverse`), at most `limit`.
    func getRange(_ range: KVRange, limit: Int, reverse: Bool) async throws(KVError) -> [KVPair]
    func set(_ key: [UInt8], _ value: [UInt8]) async throws(KVError)
    func clear(_ key: [UInt8]) async throws(KVError)
    func clearRange(_ range: KVRange) async throws(KVError)
}

extension KVTransaction {
    /// Every pair in `range` in key order, read `pagePairs` at a time (one range read
    /// may return at most `KVLimits.rangeLimitMax`), each passed to `body`. For scans
    /// of ranges of any size inside one transaction.
    public func scan(_ range: KVRange, pagePairs: Int = KVLimits.rangeLimitMax, _ body: (KVPair) async throws -> Void) async throws {
        let pagePairs = min(max(1, pagePairs), KVLimits.rangeLimitMax)
        var begin = range.begin
        while true {
            let page = try await getRange(KVRange(begin: begin, end: range.end), limit: pagePairs, reverse: false)
            for pair in page { try await body(pair) }
            guard page.count == pagePairs, let last = page.last else { return }
            // The smallest key after the last one read.
            begin = last.key + [0]
        }
    }

    /// How many pairs `range` holds, counted a page at a time.
    public func count(_ range: KVRange, pagePairs: Int = KVLimits.rangeLimitMax) async throws -> Int {
        var n = 0
        try await scan(range, pagePairs: pagePairs) { _ in n += 1 }
        return n
    }
}

/// How durable a commit must be before `attempt` returns.
public enum CommitDurability: Sendable, Equatable {
    /// On stable storage before the commit returns (the store's configured sync).
    case synced
    /// Atomic, isolated and visible to every later transaction, and kept if the
    /// process crashes, but a machine crash or power loss may lose the last relaxed
    /// commits: always a suffix in commit order, never part of one, and never one
    /// that a later `synced` commit followed (that commit makes every earlier one
    /// durable). For writes whose loss only costs work, such as read leases and
    /// access times: the index is then as it was a moment earlier.
    case relaxed
}

/// A transactional key-value store with serializable transactions. Implementations:
/// simulated (with injected conflicts, "maybe committed" and outages), SQLite,
/// PostgreSQL.
public protocol TransactionalKV: Sendable {
    /// Runs `body` in one transaction and commits it if `body` returns. Throws
    /// `KVError` for commit failures (`conflict` when a concurrent transaction
    /// interfered) and rethrows `body`'s errors after rolling back. Makes one attempt;
    /// `transact` retries.
    func attempt<T: Sendable>(_ body: (any KVTransaction) async throws -> T) async throws -> T

    /// `attempt` with a chosen commit durability. Stores that cannot relax a commit
    /// (or never need to: the simulated store is a replicated service that does not
    /// lose commits) use the default, which syncs every commit.
    func attempt<T: Sendable>(durability: CommitDurability, _ body: (any KVTransaction) async throws -> T) async throws -> T
}

extension TransactionalKV {
    public func attempt<T: Sendable>(durability: CommitDurability, _ body: (any KVTransaction) async throws -> T) async throws -> T {
        try await attempt(body)
    }
}

/// How `transact` retries: waits from 1 ms doubling to 500 ms, jittered.
public enum TransactionalKVRetry {
    public static let policy = RetryPolicy(attemptsMax: 12, firstDelayNanoseconds: 1_000_000, delayNanosecondsMax: 500_000_000, jitter: true)
}

extension TransactionalKV {
    /// Runs `body` in a transaction, retrying conflicts and outages with capped
    /// exponential backoff on `runtime`'s clock. `maybeCommitted` is retried only when
    /// `idempotent` is true (the body must then give the same result if applied twice).
    /// `durability` says how durable the commit must be (see `CommitDurability`).
    public func transact<T: Sendable>(
        runtime: any Runtime,
        attemptsMax: Int = 12,
        idempotent: Bool = false,
        durability: CommitDurability = .synced,
        _ body: (any KVTransaction) async throws -> T
    ) async throws -> T {
        var policy = TransactionalKVRetry.policy
        policy.attemptsMax = attemptsMax
        // A stream per call: concurrent transactions that conflict back off apart.
        var rng = runtime.freshRandom("kv.retry")
        for attempt in policy.attempts {
            if attempt > 0 { try await runtime.sleep(nanoseconds: policy.delayNanoseconds(beforeAttempt: attempt, using: &rng)) }
            do {
                return try await self.attempt(durability: durability, body)
            } catch let error as KVError {
                let retry = error.isRetryable || (idempotent && error == .maybeCommitted)
                guard retry else { throw error }
                if attempt == policy.attemptsMax - 1 { throw KVError.retriesExhausted(attempts: attempt + 1, last: error) }
            }
        }
        preconditionFailure("unreachable: the loop returns or throws")
    }
}
