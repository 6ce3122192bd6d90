import CisternCore
import Synchronization

/// The behavior every `TransactionalKV` implementation must show. Each case runs on a
/// fresh store from the harness; the suite never calls `finish()` (the caller does).
///
/// Runs inside the simulator too: it takes time, sleeps and spawns only through
/// `harness.runtime`, and does not depend on hash ordering. Every committed
/// transaction is idempotent (the concurrent ones through a per-transaction marker
/// key) and runs through `transact(idempotent: true)`, so the suite stays exact when a
/// store injects conflicts or `maybeCommitted`. Each case uses its own keys and reads
/// only its own key ranges, so it also passes on a store shared between cases.
public enum KVConformance {
    public static func run(_ harness: some KVHarness) async throws {
        try await setGetClear(harness)
        try await readYourWrites(harness)
        try await bodyThrowsAppliesNothing(harness)
        try await rangeReads(harness)
        try await clearRange(harness)
        try await transactionClosed(harness)
        try await limits(harness)
        try await serializableCounter(harness)
        try await bankTransfers(harness)
        try await relaxedCommits(harness)
    }

    struct SuiteError: Error, Equatable {}

    // MARK: - Cases

    static func setGetClear(_ harness: some KVHarness) async throws {
        let store = try await harness.makeStore()
        let runtime = harness.runtime
        let key = bytes("k")
        try await checkAsync(try await read(store, runtime, key) == nil, "a new store has no value for a key")
        try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in try await tx.set(key, bytes("v1")) }
        try await checkAsync(try await read(store, runtime, key) == bytes("v1"), "get returns the committed value")
        try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in try await tx.set(key, bytes("v2")) }
        try await checkAsync(try await read(store, runtime, key) == bytes("v2"), "set replaces the value")
        try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in try await tx.set(bytes("empty"), []) }
        try await checkAsync(try await read(store, runtime, bytes("empty")) == [], "an empty value is stored as empty, not absent")
        try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in try await tx.set([], bytes("empty key")) }
        try await checkAsync(try await read(store, runtime, []) == bytes("empty key"), "the empty key is a key")
        try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in try await tx.clear(key) }
        try await checkAsync(try await read(store, runtime, key) == nil, "clear removes the value")
        try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in try await tx.clear(bytes("never set")) }
        try await checkAsync(try await read(store, runtime, bytes("empty")) == [], "clearing one key leaves the others")
        try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in try await tx.clear([]) }
        try await checkAsync(try await read(store, runtime, []) == nil, "the empty key can be cleared")
    }

    static func readYourWrites(_ harness: some KVHarness) async throws {
        let store = try await harness.makeStore()
        let runtime = harness.runtime
        try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in try await tx.set(bytes("p/b"), bytes("old")) }
        try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in
            try await tx.set(bytes("p/a"), bytes("1"))
            try await checkAsync(try await tx.get(bytes("p/a")) == bytes("1"), "a transaction reads its own set")
            try await tx.set(bytes("p/b"), bytes("new"))
            try await checkAsync(try await tx.get(bytes("p/b")) == bytes("new"), "a transaction reads its own overwrite")
            try await tx.set(bytes("p/c"), bytes("3"))
            try await tx.clear(bytes("p/c"))
            try await checkAsync(try await tx.get(bytes("p/c")) == nil, "a transaction reads its own clear")
            let range = try await tx.getRange(.prefix(bytes("p/")), limit: 10, reverse: false)
            try check(
                range == [KVPair(key: bytes("p/a"), value: bytes("1")), KVPair(key: bytes("p/b"), value: bytes("new"))],
                "a range read in a transaction sees its own writes: \(describe(range))")
        }
        let after = try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in
            try await tx.getRange(.prefix(bytes("p/")), limit: 10, reverse: false)
        }
        try check(
            after == [KVPair(key: bytes("p/a"), value: bytes("1")), KVPair(key: bytes("p/b"), value: bytes("new"))],
            "the writes are there after commit: \(describe(after))")
    }

    static func bodyThrowsAppliesNothing(_ harness: some KVHarness) async throws {
        let store = try await harness.makeStore()
        let runtime = harness.runtime
        try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in try await tx.set(bytes("kept"), bytes("before")) }
        try await checkThrows("a transaction whose body throws") {
            try await store.attempt { tx in
                try await tx.set(bytes("kept"), bytes("after"))
                try await tx.set(bytes("new"), bytes("x"))
                try await tx.clearRange(KVRange(begin: [], end: [0xFF]))
                throw SuiteError()
            }
        } matches: { $0 is SuiteError }
        try await checkAsync(try await read(store, runtime, bytes("kept")) == bytes("before"), "a failed body's overwrite is not applied")
        try await checkAsync(try await read(store, runtime, bytes("new")) == nil, "a failed body's set is not applied")
    }

    static func rangeReads(_ harness: some KVHarness) async throws {
        let store = try await harness.makeStore()
        let runtime = harness.runtime
        let prefix = bytes("r/")
        // Unsigned byte order: 0x00 < 0x01 < 0x7F < 0x80 < 0xFF, and a key sorts before
        // its extensions.
        let suffixes: [[UInt8]] = [
            [], [0x00], [0x00, 0x00], [0x00, 0xFF], [0x01], [0x7F], [0x80], [0x80, 0x00], [0xFE], [0xFF], [0xFF, 0x00],
            [0xFF, 0xFF], [0xFF, 0xFF, 0xFF],
        ]
        let ordered = suffixes.map { prefix + $0 }
        // Neighbors outside the prefix, just below and just above it.
        let outside = [bytes("r."), bytes("r0"), bytes("q"), bytes("s")]
        try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in
            // Written in a scrambled order so storage order cannot fake sorted output.
            for index in [7, 2, 12, 0, 9, 4, 11, 1, 6, 10, 3, 8, 5] {
                try await tx.set(ordered[index], [UInt8(index)])
            }
            for key in outside { try await tx.set(key, bytes("out")) }
        }
        let expected = ordered.enumerated().map { KVPair(key: $0.element, value: [UInt8($0.offset)]) }
        let range = KVRange.prefix(prefix)

        let ascending = try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in
            try await tx.getRange(range, limit: 100, reverse: false)
        }
        try check(ascending == expected, "ascending prefix range in unsigned byte order: \(describe(ascending))")

        let descending = try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in
            try await tx.getRange(range, limit: 100, reverse: true)
        }
        try check(descending == expected.reversed(), "descending prefix range: \(describe(descending))")

        let firstThree = try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in
            try await tx.getRange(range, limit: 3, reverse: false)
        }
        try check(firstThree == Array(expected.prefix(3)), "limit 3 ascending gives the 3 smallest: \(describe(firstThree))")

        let lastThree = try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in
            try await tx.getRange(range, limit: 3, reverse: true)
        }
        try check(lastThree == Array(expected.reversed().prefix(3)), "limit 3 descending gives the 3 largest: \(describe(lastThree))")

        let none = try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in
            try await tx.getRange(range, limit: 0, reverse: false)
        }
        try check(none.isEmpty, "limit 0 gives nothing")

        // Half-open: begin included, end excluded.
        let window = try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in
            try await tx.getRange(KVRange(begin: prefix + [0x00, 0xFF], end: prefix + [0xFF]), limit: 100, reverse: false)
        }
        try check(window == Array(expected[3..<9]), "a [begin, end) range includes begin and excludes end: \(describe(window))")

        // A prefix ending in 0xFF bytes.
        let high = try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in
            try await tx.getRange(.prefix(prefix + [0xFF]), limit: 100, reverse: false)
        }
        try check(high == Array(expected[9...]), "a prefix ending in 0xFF covers its extensions: \(describe(high))")

        let zero = try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in
            try await tx.getRange(.prefix(prefix + [0x00]), limit: 100, reverse: true)
        }
        try check(zero == Array(expected[1..<4].reversed()), "a prefix ending in 0x00, descending: \(describe(zero))")

        let empty = try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in
            try await tx.getRange(KVRange(begin: prefix + [0x80], end: prefix + [0x80]), limit: 100, reverse: false)
        }
        try check(empty.isEmpty, "an empty range gives nothing")

        // Everything from "q" to "t": the prefix's keys and its neighbors.
        let everything = try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in
            try await tx.getRange(KVRange(begin: bytes("q"), end: bytes("t")), limit: 100, reverse: false)
        }
        try check(everything.count == ordered.count + outside.count, "a range over every key sees all \(ordered.count + outside.count)")
        try check(isSorted(everything.map(\.key)), "a wide range is in unsigned byte order: \(describe(everything))")
    }

    static func clearRange(_ harness: some KVHarness) async throws {
        let store = try await harness.makeStore()
        let runtime = harness.runtime
        let keys = (0..<10).map { bytes("c/\($0)") }
        try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in
            for key in keys { try await tx.set(key, key) }
            try await tx.set(bytes("d/0"), bytes("other"))
        }
        try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in
            try await tx.clearRange(KVRange(begin: keys[3], end: keys[7]))
        }
        let left = try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in
            try await tx.getRange(.prefix(bytes("c/")), limit: 100, reverse: false)
        }
        let expected = [0, 1, 2, 7, 8, 9].map { KVPair(key: keys[$0], value: keys[$0]) }
        try check(left == expected, "clearRange removes [begin, end) only: \(describe(left))")

        try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in
            try await tx.clearRange(.prefix(bytes("c/")))
            try await checkAsync(try await tx.get(keys[0]) == nil, "a transaction sees its own clearRange")
            try await tx.set(keys[5], bytes("again"))
        }
        let final = try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in
            try await tx.getRange(KVRange(begin: bytes("c/"), end: bytes("d/1")), limit: 100, reverse: false)
        }
        try check(
            final == [KVPair(key: keys[5], value: bytes("again")), KVPair(key: bytes("d/0"), value: bytes("other"))],
            "a set after clearRange in one transaction survives, keys outside are kept: \(describe(final))")
    }

    static func transactionClosed(_ harness: some KVHarness) async throws {
        let store = try await harness.makeStore()
        let runtime = harness.runtime
        let escaped = try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx -> any KVTransaction in
            try await tx.set(bytes("x"), bytes("1"))
            return tx
        }
        let isClosed: (any Error) -> Bool = { ($0 as? KVError) == .transactionClosed }
        try await checkThrows("get after the body returned", { try await escaped.get(bytes("x")) }, matches: isClosed)
        try await checkThrows("set after the body returned", { try await escaped.set(bytes("y"), bytes("2")) }, matches: isClosed)
        try await checkThrows("clear after the body returned", { try await escaped.clear(bytes("x")) }, matches: isClosed)
        try await checkThrows("getRange after the body returned", {
            try await escaped.getRange(.prefix([]), limit: 10, reverse: false)
        }, matches: isClosed)
        try await checkThrows("clearRange after the body returned", { try await escaped.clearRange(.prefix([])) }, matches: isClosed)
        try await checkAsync(try await read(store, runtime, bytes("x")) == bytes("1"), "the transaction's own writes committed")
        try await checkAsync(try await read(store, runtime, bytes("y")) == nil, "a late set is not applied")

        // Also after a body that threw.
        let box = TransactionBox()
        try await checkThrows("a throwing body") {
            try await store.attempt { tx in
                box.tx.withLock { $0 = tx }
                throw SuiteError()
            }
        } matches: { $0 is SuiteError }
        guard let failed = box.tx.withLock({ $0 }) else { throw ConformanceFailure(message: "no transaction captured", file: #fileID, line: #line) }
        try await checkThrows("get after a throwing body", { try await failed.get(bytes("x")) }, matches: isClosed)
    }

    static func limits(_ harness: some KVHarness) async throws {
        let store = try await harness.makeStore()
        let runtime = harness.runtime
        let isTooLarge: (any Error) -> Bool = {
            if case .tooLarge = $0 as? KVError { return true }
            return false
        }
        let big = [UInt8](repeating: 7, count: KVLimits.valueBytesMax + 1)
        try await checkThrows("a value over valueBytesMax", {
            try await store.attempt { tx in try await tx.set(bytes("big"), big) }
        }, matches: isTooLarge)
        let longKey = [UInt8](repeating: 1, count: KVLimits.keyBytesMax + 1)
        try await checkThrows("a key over keyBytesMax", {
            try await store.attempt { tx in try await tx.set(longKey, bytes("v")) }
        }, matches: isTooLarge)
        try await checkAsync(try await read(store, runtime, bytes("big")) == nil, "an oversized value is not stored")
        // The largest allowed value fits.
        let largest = [UInt8](repeating: 9, count: KVLimits.valueBytesMax)
        try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in try await tx.set(bytes("largest"), largest) }
        try await checkAsync(try await read(store, runtime, bytes("largest")) == largest, "a value of exactly valueBytesMax is stored")
    }

    /// 8 workers × 25 read-increment-write transactions on one counter: exactly 200.
    static func serializableCounter(_ harness: some KVHarness) async throws {
        let store = try await harness.makeStore()
        let final = try await concurrentIncrements(store, harness.runtime, prefix: "", workers: 8, rounds: 25) { _, _ in .synced }
        try check(final == 200, "8 × 25 concurrent increments give 200, got \(final)")
    }

    /// Relaxed commits are transactions like any other: visible to the next
    /// transaction, all or nothing, and serializable with synced ones running
    /// alongside (only their survival of a machine crash differs).
    static func relaxedCommits(_ harness: some KVHarness) async throws {
        let store = try await harness.makeStore()
        let runtime = harness.runtime
        try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true, durability: .relaxed) { tx in
            try await tx.set(bytes("relaxed/a"), bytes("1"))
        }
        try await checkAsync(try await read(store, runtime, bytes("relaxed/a")) == bytes("1"), "a relaxed commit is visible to the next transaction")
        try await checkThrows("a relaxed transaction whose body throws") {
            try await store.attempt(durability: .relaxed) { tx in
                try await tx.set(bytes("relaxed/a"), bytes("2"))
                throw SuiteError()
            }
        } matches: { $0 is SuiteError }
        try await checkAsync(try await read(store, runtime, bytes("relaxed/a")) == bytes("1"), "a failed relaxed body applies nothing")
        let final = try await concurrentIncrements(store, runtime, prefix: "relaxed/", workers: 6, rounds: 10) { worker, round in
            (worker + round) % 2 == 0 ? .relaxed : .synced
        }
        try check(final == 60, "6 × 10 increments, half of them relaxed, give 60, got \(final)")
    }

    /// `workers` tasks each commit `rounds` read-increment-write transactions on the
    /// counter `PREFIX counter` (idempotent through a marker key per transaction),
    /// each with the durability `durability(worker, round)` gives; returns the final
    /// count.
    static func concurrentIncrements(
        _ store: any TransactionalKV, _ runtime: any Runtime, prefix: String, workers: Int, rounds: Int,
        durability: @escaping @Sendable (Int, Int) -> CommitDurability
    ) async throws -> UInt64 {
        let counter = bytes(prefix + "counter")
        let tally = Tally()
        for worker in 0..<workers {
            runtime.spawn("kv-conformance.\(prefix)counter.\(worker)") {
                do {
                    for round in 0..<rounds {
                        let marker = bytes("\(prefix)done/\(worker)/\(round)")
                        try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true, durability: durability(worker, round)) { tx in
                            if try await tx.get(marker) != nil { return }
                            let value = decode(try await tx.get(counter))
                            try await tx.set(counter, encode(value + 1))
                            try await tx.set(marker, [])
                        }
                    }
                } catch {
                    tally.fail("\(prefix)counter worker \(worker): \(error)")
                }
                tally.finish()
            }
        }
        try await tally.wait(for: workers, runtime: runtime, what: "\(prefix)counter workers")
        return decode(try await read(store, runtime, counter))
    }

    /// Concurrent transfers between 4 accounts keep the total; read-only transactions
    /// running alongside always see the total.
    static func bankTransfers(_ harness: some KVHarness) async throws {
        let store = try await harness.makeStore()
        let runtime = harness.runtime
        let accounts = (0..<4).map { bytes("acct/\($0)") }
        let opening: UInt64 = 1000
        let total = opening * UInt64(accounts.count)
        try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in
            for account in accounts { try await tx.set(account, encode(opening)) }
        }
        let transferers = 4
        let transfers = 15
        let auditors = 2
        let audits = 10
        let tally = Tally()
        for worker in 0..<transferers {
            var rng = runtime.random("kv-conformance.bank.\(worker)")
            var plan: [(from: Int, to: Int, amount: UInt64)] = []
            for _ in 0..<transfers {
                let from = Int(rng.next() % 4)
                let to = (from + 1 + Int(rng.next() % 3)) % 4
                plan.append((from, to, 1 + rng.next() % 300))
            }
            let steps = plan.map { [$0.from, $0.to, Int($0.amount)] }
            runtime.spawn("kv-conformance.bank.\(worker)") {
                do {
                    for (index, step) in steps.enumerated() {
                        let marker = bytes("xfer/\(worker)/\(index)")
                        let (from, to, amount) = (accounts[step[0]], accounts[step[1]], UInt64(step[2]))
                        try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in
                            if try await tx.get(marker) != nil { return }
                            let fromBalance = decode(try await tx.get(from))
                            let toBalance = decode(try await tx.get(to))
                            try await tx.set(marker, [])
                            guard fromBalance >= amount else { return }
                            try await tx.set(from, encode(fromBalance - amount))
                            try await tx.set(to, encode(toBalance + amount))
                        }
                    }
                } catch {
                    tally.fail("transfer worker \(worker): \(error)")
                }
                tally.finish()
            }
        }
        for auditor in 0..<auditors {
            runtime.spawn("kv-conformance.audit.\(auditor)") {
                do {
                    for _ in 0..<audits {
                        let sum = try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in
                            try await tx.getRange(.prefix(bytes("acct/")), limit: 10, reverse: false)
                                .reduce(UInt64(0)) { $0 + decode($1.value) }
                        }
                        if sum != total { tally.fail("auditor \(auditor) saw a total of \(sum), expected \(total)") }
                        try await runtime.sleep(nanoseconds: 200_000)
                    }
                } catch {
                    tally.fail("auditor \(auditor): \(error)")
                }
                tally.finish()
            }
        }
        try await tally.wait(for: transferers + auditors, runtime: runtime, what: "bank workers")
        let balances = try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in
            try await tx.getRange(.prefix(bytes("acct/")), limit: 10, reverse: false)
        }
        try check(balances.map(\.key) == accounts, "the 4 accounts still exist: \(describe(balances))")
        let sum = balances.reduce(UInt64(0)) { $0 + decode($1.value) }
        try check(sum == total, "transfers keep the total at \(total), got \(sum)")
        let done = try await store.transact(runtime: runtime, attemptsMax: 40, idempotent: true) { tx in
            try await tx.getRange(.prefix(bytes("xfer/")), limit: 1000, reverse: false).count
        }
        try check(done == transferers * transfers, "every transfer ran exactly once (\(done) markers)")
    }

    // MARK: - Helpers

    /// Smuggles a transaction out of a body that throws.
    final class TransactionBox: Sendable {
        let tx = Mutex<(any KVTransaction)?>(nil)
    }

    /// `check` for conditions that await (`check`'s autoclosure cannot).
    static func checkAsync(
        _ condition: @autoclosure () async throws -> Bool, _ message: @autoclosure () -> String,
        file: String = #fileID, line: Int = #line
    ) async throws {
        let holds = try await condition()
        try check(holds, message(), file: file, line: line)
    }

    /// Counts finished workers and collects their failures; `wait` polls it on the
    /// runtime's clock.
    final class Tally: Sendable {
        private let state = Mutex<(finished: Int, failures: [String])>((0, []))

        func finish() { state.withLock { $0.finished += 1 } }
        func fail(_ message: String) { state.withLock { $0.failures.append(message) } }

        func wait(for count: Int, runtime: any Runtime, what: String) async throws {
            let deadline = runtime.nowNanoseconds() + 300_000_000_000
            while true {
                let (finished, failures) = state.withLock { ($0.finished, $0.failures) }
                if !failures.isEmpty {
                    throw ConformanceFailure(message: failures.joined(separator: "; "), file: #fileID, line: #line)
                }
                if finished >= count { return }
                if runtime.nowNanoseconds() > deadline {
                    throw ConformanceFailure(
                        message: "\(what): only \(finished) of \(count) finished within 300 s", file: #fileID, line: #line)
                }
                try await runtime.sleep(nanoseconds: 2_000_000)
            }
        }
    }

    static func read(_ store: any TransactionalKV, _ runtime: any Runtime, _ key: [UInt8]) async throws -> [UInt8]? {
        try await store.transact(runtime: runtime, idempotent: true) { tx in try await tx.get(key) }
    }

    static func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    static func encode(_ value: UInt64) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * $0)) }
    }

    /// A big-endian UInt64 (absent or malformed reads as 0).
    static func decode(_ bytes: [UInt8]?) -> UInt64 {
        guard let bytes, bytes.count == 8 else { return 0 }
        return bytes.reduce(0) { $0 << 8 | UInt64($1) }
    }

    static func isSorted(_ keys: [[UInt8]]) -> Bool {
        zip(keys, keys.dropFirst()).allSatisfy { $0.lexicographicallyPrecedes($1) }
    }

    static func describe(_ pairs: [KVPair]) -> String {
        "[" + pairs.map { pair in pair.key.map { hex($0) }.joined() + "=" + pair.value.map { hex($0) }.joined() }
            .joined(separator: ", ") + "]"
    }

    static func hex(_ byte: UInt8) -> String {
        let digits: [Character] = Array("0123456789abcdef")
        return String([digits[Int(byte >> 4)], digits[Int(byte & 0xF)]])
    }
}
