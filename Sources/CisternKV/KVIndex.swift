import CisternCore
import CisternWire

/// The KV cache index's keys in the transactional KV, per namespace (names never
/// contain a zero byte, which ends them). Numbers are big-endian so keys sort
/// numerically.
enum KVKeys {
    static func tag(_ kind: String, _ ns: String) -> [UInt8] { Array("kv\(kind)/".utf8) + Array(ns.utf8) + [0] }
    /// The namespace's shape.
    static func config(_ ns: String) -> [UInt8] { tag("n", ns) }
    /// Every namespace's configuration key starts with this.
    static let configPrefix = Array(tag("n", "").dropLast())
    /// The next never-used slot (the high-water mark of the slab).
    static func alloc(_ ns: String) -> [UInt8] { tag("a", ns) }
    static func key(_ ns: String, _ key: String) -> [UInt8] { tag("k", ns) + Array(key.utf8) }
    /// LRU order: last access time, then key.
    static func lru(_ ns: String, _ access: UInt64, _ key: String) -> [UInt8] { tag("l", ns) + KeyCoding.bigEndian(access) + Array(key.utf8) }
    static func slot(_ ns: String, _ slot: PageSlot) -> [UInt8] { tag("s", ns) + KeyCoding.bigEndian(slot.rawValue) }
    /// A free slot, by the time it becomes usable (a deleted page's slot waits for its
    /// readers' leases), then slot: every slot usable now is one range read away, however
    /// many free slots still wait on leases.
    static func free(_ ns: String, usableFrom: UInt64, _ slot: PageSlot) -> [UInt8] { tag("u", ns) + KeyCoding.bigEndian(usableFrom) + KeyCoding.bigEndian(slot.rawValue) }
    /// The first layout of the free list (before 2026-12): by slot, the usable-from time
    /// in the value. Never written now; still read, so an index written by an older
    /// build drains into use.
    static func legacyFree(_ ns: String, _ slot: PageSlot) -> [UInt8] { tag("f", ns) + KeyCoding.bigEndian(slot.rawValue) }
    /// Reservations by expiry time, so abandoned puts are found without a scan.
    static func reservation(_ ns: String, _ expires: UInt64, _ slot: PageSlot) -> [UInt8] { tag("r", ns) + KeyCoding.bigEndian(expires) + KeyCoding.bigEndian(slot.rawValue) }
    static let kinds = ["n", "a", "k", "l", "s", "f", "u", "r"]
}

/// What a reservation found for one key.
public enum KVReserveOutcome: Hashable, Sendable {
    /// The key is already confirmed: putting it again is a no-op.
    case exists
    /// Write the page into `slot`, then confirm with `token`.
    case reserved(slot: PageSlot, token: UInt64)
    /// Every slot is reserved or being read; nothing could be evicted now.
    case full
}

/// What a confirm did for one key.
public enum KVConfirmOutcome: Hashable, Sendable {
    /// The page is visible to readers now.
    case confirmed
    /// Another put of the key was confirmed first; this one's slot was freed.
    case exists
    /// The reservation was no longer this put's (it expired): the page was not stored.
    case expired
}

/// One page to confirm after its bytes were written.
public struct KVConfirmItem: Hashable, Sendable, WireCodable {
    public var key: String
    public var slot: PageSlot
    public var token: UInt64
    public var length: UInt32
    public var checksum: UInt32
    public init(key: String, slot: PageSlot, token: UInt64, length: UInt32, checksum: UInt32) {
        self.key = key
        self.slot = slot
        self.token = token
        self.length = length
        self.checksum = checksum
    }
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.writeString(key)
            w.write(slot)
            w.writeVarint(token)
            w.write(length)
            w.write(checksum)
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        self = try reader.readMessage("KVConfirmItem") { r throws(WireError) in
            KVConfirmItem(key: try r.readString(), slot: try r.read(PageSlot.self), token: try r.readVarint(), length: try r.read(UInt32.self), checksum: try r.read(UInt32.self))
        }
    }
}

/// How a namespace's slots are used (from a full scan; for operators and tests).
public struct KVUsage: Hashable, Sendable, WireCodable, CustomStringConvertible {
    public var capacityPages: UInt64
    public var highWater: UInt64
    public var confirmed: UInt64
    public var reserved: UInt64
    public var free: UInt64
    public init(capacityPages: UInt64, highWater: UInt64, confirmed: UInt64, reserved: UInt64, free: UInt64) {
        self.capacityPages = capacityPages
        self.highWater = highWater
        self.confirmed = confirmed
        self.reserved = reserved
        self.free = free
    }
    public var description: String { "\(confirmed) confirmed, \(reserved) reserved, \(free) free of \(highWater) used slots (capacity \(capacityPages))" }
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            for v in [capacityPages, highWater, confirmed, reserved, free] { w.writeVarint(v) }
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        self = try reader.readMessage("KVUsage") { r throws(WireError) in
            KVUsage(capacityPages: try r.readVarint(), highWater: try r.readVarint(), confirmed: try r.readVarint(), reserved: try r.readVarint(), free: try r.readVarint())
        }
    }
}

/// The KV cache index as operations inside one transaction of the transactional KV,
/// at time `now` (the serving process's clock). The slab of page slots:
/// - a slot is either never used (at or above the high-water mark), free (a `free`
///   record, usable from a time), reserved by a put in progress (a `slot` record with
///   a token and an expiry, indexed by expiry), or holding a confirmed key (a `slot`
///   record and the key's record, indexed in LRU order);
/// - a reservation takes free slots first, then raises the high-water mark, then
///   evicts the least recently used keys whose slots no reader holds a lease on;
/// - abandoned reservations (a client died between reserve and confirm) return to the
///   free list once they expire, so a crash leaks no slot.
/// Serializable transactions make concurrent requests from any number of servers
/// equivalent to some order of them; `audit` checks the invariants.
public struct KVIndex: Sendable {
    let tx: any KVTransaction
    let now: UInt64
    /// LRU positions move at most this often per key (so hot reads stay read-only).
    public static let accessGranularityNanoseconds: UInt64 = 1_000_000_000

    public init(_ tx: any KVTransaction, now: UInt64) {
        self.tx = tx
        self.now = now
    }

    public func config(_ ns: String) async throws -> KVNamespaceConfig {
        guard let bytes = try await tx.get(KVKeys.config(ns)) else { throw KVCacheError.noSuchNamespace(ns) }
        return try KVNamespaceConfig(wireBytes: bytes)
    }

    public func putConfig(_ config: KVNamespaceConfig) async throws {
        try await tx.set(KVKeys.config(config.name), config.wireBytes())
    }

    func keyRecord(_ ns: String, _ key: String) async throws -> KVKeyRecord? {
        try await tx.get(KVKeys.key(ns, key)).map { try KVKeyRecord(wireBytes: $0) }
    }

    func slotRecord(_ ns: String, _ slot: PageSlot) async throws -> KVSlotRecord? {
        try await tx.get(KVKeys.slot(ns, slot)).map { try KVSlotRecord(wireBytes: $0) }
    }

    func highWater(_ ns: String) async throws -> UInt64 {
        guard let b = try await tx.get(KVKeys.alloc(ns)) else { return 0 }
        return KeyCoding.bigEndianValue(b) ?? 0
    }

    func freeSlot(_ ns: String, _ slot: PageSlot, from: UInt64) async throws {
        try await tx.clear(KVKeys.slot(ns, slot))
        try await tx.set(KVKeys.free(ns, usableFrom: from, slot), [])
    }

    // MARK: Put

    /// Reserves a slot for each key not yet confirmed (`tokens[i]` names the i-th
    /// reservation). Returns the outcomes in key order and how many keys were evicted.
    public func reserve(_ ns: String, keys: [String], tokens: [UInt64], reservationNanoseconds: UInt64) async throws -> (outcomes: [KVReserveOutcome], evicted: Int) {
        let config = try await config(ns)
        var outcomes = [KVReserveOutcome](repeating: .exists, count: keys.count)
        var needing: [Int] = []
        for (i, key) in keys.enumerated() where try await keyRecord(ns, key) == nil { needing.append(i) }
        if needing.isEmpty { return (outcomes, 0) }
        _ = try await reclaimExpired(ns, limit: needing.count + 16)
        var slots = try await takeFree(ns, count: needing.count)
        if slots.count < needing.count {
            let hw = try await highWater(ns)
            let fresh = min(UInt64(needing.count - slots.count), config.capacityPages - min(hw, config.capacityPages))
            if fresh > 0 {
                slots += (hw..<hw + fresh).map(PageSlot.init)
                try await tx.set(KVKeys.alloc(ns), KeyCoding.bigEndian(hw + fresh))
            }
        }
        var evicted = 0
        if slots.count < needing.count {
            let more = try await evict(ns, count: needing.count - slots.count, sparing: Set(keys))
            evicted = more.count
            slots += more
        }
        for (n, i) in needing.enumerated() {
            guard n < slots.count else {
                outcomes[i] = .full
                continue
            }
            let slot = slots[n]
            let expires = now + reservationNanoseconds
            let token = tokens[i]
            try await tx.set(KVKeys.slot(ns, slot), KVSlotRecord(state: .reserved(key: keys[i], token: token, expiresNanoseconds: expires)).wireBytes())
            try await tx.set(KVKeys.reservation(ns, expires, slot), [])
            outcomes[i] = .reserved(slot: slot, token: token)
        }
        return (outcomes, evicted)
    }

    /// Takes up to `count` free slots usable now: one range read of the free list up to
    /// `now` (it is ordered by usable time), then the older layout's records if short.
    func takeFree(_ ns: String, count: Int) async throws -> [PageSlot] {
        guard count > 0 else { return [] }
        let prefix = KVKeys.tag("u", ns)
        let usable = KVRange(begin: prefix, end: prefix + KeyCoding.bigEndian(now &+ 1))
        var out: [PageSlot] = []
        for p in try await tx.getRange(usable, limit: min(count, KVLimits.rangeLimitMax), reverse: false) {
            guard p.key.count == prefix.count + 16, let raw = KeyCoding.bigEndianValue(p.key.suffix(8)) else { continue }
            try await tx.clear(p.key)
            out.append(PageSlot(raw))
        }
        if out.count < count { out += try await takeLegacyFree(ns, count: count - out.count) }
        return out
    }

    /// The older free list (by slot, usable time in the value): read a bounded window,
    /// skip slots still waiting on leases.
    func takeLegacyFree(_ ns: String, count: Int) async throws -> [PageSlot] {
        let prefix = KVKeys.tag("f", ns)
        let pairs = try await tx.getRange(.prefix(prefix), limit: min(count * 4 + 64, KVLimits.rangeLimitMax), reverse: false)
        var out: [PageSlot] = []
        for p in pairs where out.count < count {
            guard let from = KeyCoding.bigEndianValue(p.value), from <= now,
                  let raw = KeyCoding.bigEndianValue(p.key.suffix(8)) else { continue }
            try await tx.clear(p.key)
            out.append(PageSlot(raw))
        }
        return out
    }

    /// Most LRU entries one eviction reads past keys it cannot evict (leased, or being
    /// put by the same batch) before it answers `.full`.
    public static let evictScanKeysMax = 16_384

    /// Evicts up to `count` least recently used keys whose slots no reader holds (and
    /// that this batch is not putting); returns their slots, now unowned. Reads the LRU
    /// list a window at a time, past leased keys, up to `evictScanKeysMax` entries: a
    /// head of recently read (leased) pages must not make a put find the namespace full
    /// while evictable pages follow them.
    func evict(_ ns: String, count: Int, sparing: Set<String>) async throws -> [PageSlot] {
        let prefix = KVKeys.tag("l", ns)
        let lru = KVRange.prefix(prefix)
        var begin = lru.begin
        var scanned = 0
        var out: [PageSlot] = []
        while out.count < count && scanned < Self.evictScanKeysMax {
            let limit = min((count - out.count) * 4 + 64, KVLimits.rangeLimitMax, Self.evictScanKeysMax - scanned)
            let pairs = try await tx.getRange(KVRange(begin: begin, end: lru.end), limit: limit, reverse: false)
            scanned += pairs.count
            try await evict(ns, pairs, prefix: prefix, count: count, sparing: sparing, into: &out)
            guard pairs.count == limit, let last = pairs.last else { break }
            begin = last.key + [0]
        }
        return out
    }

    private func evict(_ ns: String, _ pairs: [KVPair], prefix: [UInt8], count: Int, sparing: Set<String>, into out: inout [PageSlot]) async throws {
        for p in pairs where out.count < count {
            let rest = p.key.dropFirst(prefix.count)
            guard rest.count >= 8 else { continue }
            let key = String(decoding: rest.dropFirst(8), as: UTF8.self)
            guard !sparing.contains(key), let record = try await keyRecord(ns, key) else { continue }
            let slot = try await slotRecord(ns, record.slot)
            if let slot, slot.leaseUntilNanoseconds > now { continue }
            try await tx.clear(p.key)
            try await tx.clear(KVKeys.key(ns, key))
            try await tx.clear(KVKeys.slot(ns, record.slot))
            out.append(record.slot)
        }
    }

    /// Makes confirmed pages visible. A confirm that finds its reservation still held
    /// by its token commits the key; a repeated confirm (a retry) answers `confirmed`
    /// again.
    public func confirm(_ ns: String, _ items: [KVConfirmItem]) async throws -> [KVConfirmOutcome] {
        _ = try await config(ns)
        var out: [KVConfirmOutcome] = []
        for item in items {
            let slot = try await slotRecord(ns, item.slot)
            let existing = try await keyRecord(ns, item.key)
            switch slot?.state {
            case .confirmed(let k) where k == item.key && existing?.slot == item.slot:
                out.append(.confirmed)
            case .reserved(let k, let token, let expires) where k == item.key && token == item.token:
                try await tx.clear(KVKeys.reservation(ns, expires, item.slot))
                if existing != nil {
                    try await freeSlot(ns, item.slot, from: now)
                    out.append(.exists)
                } else {
                    let record = KVKeyRecord(slot: item.slot, length: item.length, checksum: item.checksum, accessNanoseconds: now)
                    try await tx.set(KVKeys.key(ns, item.key), record.wireBytes())
                    try await tx.set(KVKeys.lru(ns, now, item.key), [])
                    try await tx.set(KVKeys.slot(ns, item.slot), KVSlotRecord(state: .confirmed(key: item.key)).wireBytes())
                    out.append(.confirmed)
                }
            default:
                out.append(existing != nil ? .exists : .expired)
            }
        }
        return out
    }

    /// Gives back reservations a put will not confirm (its write failed).
    public func abort(_ ns: String, _ slots: [(slot: PageSlot, token: UInt64)]) async throws {
        for (slot, token) in slots {
            guard case .reserved(_, let t, let expires)? = try await slotRecord(ns, slot)?.state, t == token else { continue }
            try await tx.clear(KVKeys.reservation(ns, expires, slot))
            try await freeSlot(ns, slot, from: now)
        }
    }

    /// Frees reservations that expired (their puts died); returns how many.
    public func reclaimExpired(_ ns: String, limit: Int) async throws -> Int {
        let prefix = KVKeys.tag("r", ns)
        let range = KVRange(begin: prefix, end: prefix + KeyCoding.bigEndian(now &+ 1))
        let pairs = try await tx.getRange(range, limit: max(1, min(limit, KVLimits.rangeLimitMax)), reverse: false)
        var n = 0
        for p in pairs {
            let rest = Array(p.key.dropFirst(prefix.count))
            guard rest.count == 16, let expires = KeyCoding.bigEndianValue(rest[0..<8]), let raw = KeyCoding.bigEndianValue(rest[8..<16]) else { continue }
            let slot = PageSlot(raw)
            try await tx.clear(p.key)
            if case .reserved(_, _, let e)? = try await slotRecord(ns, slot)?.state, e == expires {
                try await freeSlot(ns, slot, from: now)
                n += 1
            }
        }
        return n
    }

    // MARK: Get

    /// Finds each key's page and grants the caller a read lease on its slot (eviction
    /// and reuse wait for it) of at least half `leaseNanoseconds`, reported in the
    /// location (the lease is renewed only when less than half is left, so hot reads
    /// stay read-only); refreshes the LRU position.
    public func lookup(_ ns: String, keys: [String], leaseNanoseconds: UInt64) async throws -> [KVPageLocation?] {
        _ = try await config(ns)
        var out: [KVPageLocation?] = []
        for key in keys {
            guard var record = try await keyRecord(ns, key), var slot = try await slotRecord(ns, record.slot) else {
                out.append(nil)
                continue
            }
            if slot.leaseUntilNanoseconds < now + leaseNanoseconds / 2 {
                slot.leaseUntilNanoseconds = now + leaseNanoseconds
                try await tx.set(KVKeys.slot(ns, record.slot), slot.wireBytes())
            }
            if now >= record.accessNanoseconds + Self.accessGranularityNanoseconds {
                try await tx.clear(KVKeys.lru(ns, record.accessNanoseconds, key))
                record.accessNanoseconds = now
                try await tx.set(KVKeys.lru(ns, now, key), [])
                try await tx.set(KVKeys.key(ns, key), record.wireBytes())
            }
            out.append(KVPageLocation(slot: record.slot, length: record.length, checksum: record.checksum, leaseNanoseconds: slot.leaseUntilNanoseconds - now))
        }
        return out
    }

    /// Whether each key is confirmed (read-only).
    public func exists(_ ns: String, keys: [String]) async throws -> [Bool] {
        _ = try await config(ns)
        var out: [Bool] = []
        for key in keys { out.append(try await tx.get(KVKeys.key(ns, key)) != nil) }
        return out
    }

    /// Removes keys; their slots become free once their readers' leases end. Returns
    /// how many keys existed.
    public func delete(_ ns: String, keys: [String]) async throws -> Int {
        _ = try await config(ns)
        var n = 0
        for key in keys {
            guard let record = try await keyRecord(ns, key) else { continue }
            let lease = try await slotRecord(ns, record.slot)?.leaseUntilNanoseconds ?? 0
            try await tx.clear(KVKeys.key(ns, key))
            try await tx.clear(KVKeys.lru(ns, record.accessNanoseconds, key))
            try await freeSlot(ns, record.slot, from: max(now, lease))
            n += 1
        }
        return n
    }

    // MARK: Inspection

    /// Counts slots by state (a full scan of the namespace, `pagePairs` records per
    /// range read, so a namespace of any size is counted).
    public func usage(_ ns: String, pagePairs: Int = KVLimits.rangeLimitMax) async throws -> KVUsage {
        let config = try await config(ns)
        let hw = try await highWater(ns)
        var confirmed: UInt64 = 0
        var reserved: UInt64 = 0
        try await tx.scan(.prefix(KVKeys.tag("s", ns)), pagePairs: pagePairs) { p in
            switch try KVSlotRecord(wireBytes: p.value).state {
            case .confirmed: confirmed += 1
            case .reserved: reserved += 1
            }
        }
        var free: UInt64 = 0
        for kind in ["u", "f"] { free += UInt64(try await tx.count(.prefix(KVKeys.tag(kind, ns)), pagePairs: pagePairs)) }
        return KVUsage(capacityPages: config.capacityPages, highWater: hw, confirmed: confirmed, reserved: reserved, free: free)
    }

    /// Every invariant of the slab and the index, as violations (empty when sound):
    /// each used slot below the high-water mark is in exactly one state; no slot is
    /// held twice; keys, slots and the LRU order agree; reservations are indexed by
    /// their expiry.
    /// Most problems one audit reports (then a count of the rest).
    public static let auditProblemsMax = 1_000

    public func audit(_ ns: String, pagePairs: Int = KVLimits.rangeLimitMax) async throws -> [String] {
        let config = try await config(ns)
        let hw = try await highWater(ns)
        var problems: [String] = []
        if hw > config.capacityPages { problems.append("high-water mark \(hw) beyond capacity \(config.capacityPages)") }
        var state: [UInt64: String] = [:]
        func claim(_ raw: UInt64, _ what: String) {
            if raw >= hw { problems.append("slot#\(raw) (\(what)) at or above the high-water mark \(hw)") }
            if let other = state[raw] { problems.append("slot#\(raw) is both \(other) and \(what)") }
            state[raw] = what
        }
        var slots: [UInt64: KVSlotRecord] = [:]
        try await tx.scan(.prefix(KVKeys.tag("s", ns)), pagePairs: pagePairs) { p in
            guard let raw = KeyCoding.bigEndianValue(p.key.suffix(8)) else { return }
            let r = try KVSlotRecord(wireBytes: p.value)
            slots[raw] = r
            claim(raw, "held for '\(r.key)'")
        }
        let freePrefix = KVKeys.tag("u", ns)
        try await tx.scan(.prefix(freePrefix), pagePairs: pagePairs) { p in
            guard p.key.count == freePrefix.count + 16, let raw = KeyCoding.bigEndianValue(p.key.suffix(8)) else {
                problems.append("free-list record of \(p.key.count - freePrefix.count) bytes after its prefix (expected 16)")
                return
            }
            claim(raw, "free")
        }
        try await tx.scan(.prefix(KVKeys.tag("f", ns)), pagePairs: pagePairs) { p in
            guard let raw = KeyCoding.bigEndianValue(p.key.suffix(8)) else { return }
            claim(raw, "free (older layout)")
        }
        if UInt64(state.count) != hw {
            let lost = (0..<hw).filter { state[$0] == nil }
            problems.append("\(lost.count) slot(s) below the high-water mark are in no state (leaked): \(lost.prefix(8).map { "slot#\($0)" })")
        }
        let keyPrefix = KVKeys.tag("k", ns)
        var keys: [String: KVKeyRecord] = [:]
        try await tx.scan(.prefix(keyPrefix), pagePairs: pagePairs) { p in
            let key = String(decoding: p.key.dropFirst(keyPrefix.count), as: UTF8.self)
            let r = try KVKeyRecord(wireBytes: p.value)
            keys[key] = r
            guard case .confirmed(let k)? = slots[r.slot.rawValue]?.state, k == key else {
                problems.append("key '\(key)' points at \(r.slot), which does not hold it")
                return
            }
        }
        // In slot order, not the dictionary's (its order differs between processes).
        for raw in slots.keys.sorted() {
            guard let r = slots[raw] else { continue }
            switch r.state {
            case .confirmed(let k):
                if keys[k]?.slot.rawValue != raw { problems.append("slot#\(raw) holds '\(k)', whose record points elsewhere") }
            case .reserved(_, _, let expires):
                if try await tx.get(KVKeys.reservation(ns, expires, PageSlot(raw))) == nil { problems.append("slot#\(raw)'s reservation is not indexed by its expiry") }
            }
        }
        let lruPrefix = KVKeys.tag("l", ns)
        var lruCount = 0
        try await tx.scan(.prefix(lruPrefix), pagePairs: pagePairs) { p in
            let rest = p.key.dropFirst(lruPrefix.count)
            guard let access = KeyCoding.bigEndianValue(rest.prefix(8)) else { return }
            let key = String(decoding: rest.dropFirst(8), as: UTF8.self)
            if keys[key]?.accessNanoseconds != access { problems.append("LRU entry for '\(key)' at \(access) does not match its record") }
            lruCount += 1
        }
        if lruCount != keys.count { problems.append("\(lruCount) LRU entries for \(keys.count) keys") }
        // The answer is one message: a badly broken namespace reports the first
        // problems and how many more there are.
        if problems.count > Self.auditProblemsMax {
            let more = problems.count - Self.auditProblemsMax
            problems.removeLast(more)
            problems.append("... and \(more) more problem(s)")
        }
        return problems
    }
}
