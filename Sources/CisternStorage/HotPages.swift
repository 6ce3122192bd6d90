import CisternRouting
import DequeModule
import Synchronization

/// A storage node's memory tier: the bytes of recently written and read chunks, so a
/// KV page that was just put (the common case: an inference engine reads back the
/// prefix it or a peer stored moments ago) is served from memory instead of the disk.
///
/// An entry is one chunk's whole content at one version, with its checksum; a read
/// uses it only when the chunk's committed version, length and checksum are exactly
/// the entry's, so a stale entry is never served (it is simply not found). The engine
/// discards a version's entry once no metadata names it. Entries are
/// `pinned` while their block is still being written behind (`cache` durability): the
/// disk does not hold those bytes yet, so they cannot be evicted, and the bytes pinned
/// at once are bounded (`pinnedBytesMax`); writes that do not fit are written through.
///
/// Eviction is CLOCK (second chance) over insertion order: an entry read since it was
/// last passed over survives one more round. Pure value, no time or randomness: the
/// same operations give the same contents.
public struct HotPageSet: Sendable {
    public struct Key: Hashable, Sendable {
        /// The engine (target) the chunk belongs to.
        public var owner: UInt64
        public var chunk: ChunkID
        public var version: UInt64
        public init(owner: UInt64, chunk: ChunkID, version: UInt64) {
            self.owner = owner
            self.chunk = chunk
            self.version = version
        }
    }

    struct Entry {
        var checksum: UInt32
        var data: [UInt8]
        var pinned: Bool
        var referenced: Bool
        /// Discarded while pinned: removed when its write finishes.
        var dead = false
        /// Which insertion this is (an older position in `order` for the same key is stale).
        var ticket: UInt64
    }

    /// Bytes held at most (pinned bytes included).
    public let capacityBytes: Int
    /// Bytes that may be pinned at once (at most `capacityBytes`).
    public let pinnedBytesMax: Int
    private var entries: [Key: Entry] = [:]
    private var order: Deque<(key: Key, ticket: UInt64)> = []
    private var nextTicket: UInt64 = 0
    public private(set) var bytes = 0
    public private(set) var pinnedBytes = 0
    public private(set) var hits: UInt64 = 0
    public private(set) var misses: UInt64 = 0
    public private(set) var evictions: UInt64 = 0

    public init(capacityBytes: Int, pinnedBytesMax: Int? = nil) {
        self.capacityBytes = max(0, capacityBytes)
        self.pinnedBytesMax = min(self.capacityBytes, max(0, pinnedBytesMax ?? capacityBytes / 2))
    }

    public var count: Int { entries.count }

    /// The bytes of `key` when the entry has exactly this length and checksum.
    public mutating func lookup(_ key: Key, length: Int, checksum: UInt32) -> [UInt8]? {
        guard var e = entries[key], !e.dead, e.checksum == checksum, e.data.count == length else {
            misses += 1
            return nil
        }
        hits += 1
        if !e.referenced {
            e.referenced = true
            entries[key] = e
        }
        return e.data
    }

    /// Whether `data` could be inserted pinned now.
    public func canPin(_ count: Int) -> Bool {
        pinnedBytes + count <= pinnedBytesMax
    }

    /// Holds `data` as `key`'s content (replacing an entry of the same key).
    /// `pinned`: not evictable until `unpin`; the caller checked `canPin` first and
    /// gets nil (nothing inserted) when it no longer fits. An unpinned entry larger
    /// than the whole capacity is not kept. Returns the insertion's ticket, which
    /// `unpin` names (a later insertion of the same key is not unpinned by an
    /// earlier one's write finishing).
    @discardableResult
    public mutating func insert(_ key: Key, checksum: UInt32, data: [UInt8], pinned: Bool) -> UInt64? {
        if pinned && !canPin(data.count) { return nil }
        if !pinned && data.count > capacityBytes {
            remove(key)
            return nil
        }
        remove(key)
        let t = nextTicket
        nextTicket += 1
        entries[key] = Entry(checksum: checksum, data: data, pinned: pinned, referenced: false, ticket: t)
        order.append((key, t))
        bytes += data.count
        if pinned { pinnedBytes += data.count }
        evict()
        return t
    }

    /// The block of `key` is on the disk now (or will never be): its entry may be
    /// evicted, and is dropped if it was discarded meanwhile.
    public mutating func unpin(_ key: Key, ticket: UInt64) {
        guard var e = entries[key], e.pinned, e.ticket == ticket else { return }
        if e.dead {
            remove(key)
            return
        }
        e.pinned = false
        entries[key] = e
        pinnedBytes -= e.data.count
        evict()
    }

    /// No metadata names this version any more: dropped now, or (while its block is
    /// still being written) when it is unpinned. Never served again either way.
    public mutating func discard(_ key: Key) {
        guard var e = entries[key] else { return }
        if e.pinned {
            e.dead = true
            entries[key] = e
        } else {
            remove(key)
        }
    }

    /// Drops `key`'s entry, pinned or not.
    public mutating func remove(_ key: Key) {
        guard let e = entries.removeValue(forKey: key) else { return }
        bytes -= e.data.count
        if e.pinned { pinnedBytes -= e.data.count }
    }

    /// Drops every entry of `owner` (its engine failed or was closed), pinned or not.
    public mutating func removeAll(owner: UInt64) {
        for key in entries.keys where key.owner == owner { remove(key) }
    }

    /// CLOCK over insertion order until the unpinned bytes fit. Pinned and
    /// recently referenced entries go to the back (referenced ones lose the mark); a
    /// full round of pinned entries ends it (they are bounded by `pinnedBytesMax`).
    private mutating func evict() {
        var passes = order.count * 2 + 1
        while bytes > capacityBytes, passes > 0, let (key, ticket) = order.popFirst() {
            passes -= 1
            guard var e = entries[key], e.ticket == ticket else { continue }  // stale position
            if e.pinned || e.referenced {
                e.referenced = false
                entries[key] = e
                order.append((key, ticket))
                continue
            }
            entries.removeValue(forKey: key)
            bytes -= e.data.count
            evictions += 1
        }
        // Positions of removed or replaced entries are dropped lazily; keep the queue
        // from growing without bound when nothing needed evicting for a long time.
        if order.count > entries.count * 2 + 64 {
            order = Deque(order.filter { entries[$0.key]?.ticket == $0.ticket })
        }
    }
}

/// `HotPageSet` shared by every engine of a storage node (one budget per node).
public final class HotPages: Sendable {
    private let state: Mutex<HotPageSet>

    public init(capacityBytes: Int, pinnedBytesMax: Int? = nil) {
        state = Mutex(HotPageSet(capacityBytes: capacityBytes, pinnedBytesMax: pinnedBytesMax))
    }

    public func lookup(_ key: HotPageSet.Key, length: Int, checksum: UInt32) -> [UInt8]? {
        state.withLock { $0.lookup(key, length: length, checksum: checksum) }
    }

    /// Pins all of `items` or none (a write-behind group is one decision): their
    /// tickets, in order, or nil.
    public func insertPinned(_ items: [(key: HotPageSet.Key, checksum: UInt32, data: [UInt8])]) -> [UInt64]? {
        state.withLock { s in
            guard s.canPin(items.reduce(0) { $0 + $1.data.count }) else { return nil }
            return items.map { s.insert($0.key, checksum: $0.checksum, data: $0.data, pinned: true)! }
        }
    }

    public func insert(_ key: HotPageSet.Key, checksum: UInt32, data: [UInt8]) {
        state.withLock { _ = $0.insert(key, checksum: checksum, data: data, pinned: false) }
    }

    public func unpin(_ key: HotPageSet.Key, ticket: UInt64) { state.withLock { $0.unpin(key, ticket: ticket) } }
    public func discard(_ key: HotPageSet.Key) { state.withLock { $0.discard(key) } }
    public func removeAll(owner: UInt64) { state.withLock { $0.removeAll(owner: owner) } }

    public struct Stats: Sendable, Equatable {
        public var bytes: Int
        public var pinnedBytes: Int
        public var entries: Int
        public var hits: UInt64
        public var misses: UInt64
        public var evictions: UInt64
    }

    public var stats: Stats {
        state.withLock { Stats(bytes: $0.bytes, pinnedBytes: $0.pinnedBytes, entries: $0.count, hits: $0.hits, misses: $0.misses, evictions: $0.evictions) }
    }
}
