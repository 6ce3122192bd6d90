import CisternRouting

/// Remembers the last request of each client channel so a retried write is applied
/// once: a client numbers its requests per channel, and a request whose sequence is
/// not newer than the last one seen gets the remembered result instead of running
/// again. Bounded: past `capacity` channels the least recently used is forgotten
/// (its next request then counts as new, which is why the head also checks versions).
public struct DedupTable<Result: Sendable & Equatable>: Sendable, Equatable {
    /// A version a request staged at the head but could not settle (its forward or
    /// commit failed): the successors may have committed it and readers seen it, so
    /// a retry of that request settles this version instead of writing a new one.
    public struct InDoubt: Sendable, Hashable {
        public var version: UInt64
        public var checksum: UInt32
        public init(version: UInt64, checksum: UInt32) {
            self.version = version
            self.checksum = checksum
        }
    }

    public struct Channel: Hashable, Sendable {
        public var client: UInt32
        public var channel: UInt32
        public init(client: UInt32, channel: UInt32) {
            self.client = client
            self.channel = channel
        }
    }

    public enum Lookup: Sendable, Equatable {
        /// A new request: run it, then `record` the result.
        case new
        /// The same request again: answer with the result it had.
        case repeated(Result)
        /// The same request is still running: wait and retry.
        case inProgress
        /// The same request again after an attempt that left these chunk versions in
        /// doubt: settle them (it is now in progress again).
        case inDoubt([ChunkID: InDoubt])
        /// An older request than the last seen (a late duplicate): refuse it.
        case stale(lastSequence: UInt64)
    }

    struct Entry: Sendable, Equatable {
        var sequence: UInt64
        var result: Result?
        var doubt: [ChunkID: InDoubt]? = nil
        var used: UInt64
    }

    public let capacity: Int
    private var entries: [Channel: Entry] = [:]
    private var clock: UInt64 = 0

    public init(capacity: Int = 65_536) {
        precondition(capacity > 0, "a dedup table needs room for at least one channel")
        self.capacity = capacity
    }

    public var count: Int { entries.count }

    /// Looks `sequence` up and, when it is new, marks it in progress.
    public mutating func begin(_ channel: Channel, sequence: UInt64) -> Lookup {
        clock += 1
        if var e = entries[channel] {
            e.used = clock
            defer { entries[channel] = e }
            if sequence < e.sequence { return .stale(lastSequence: e.sequence) }
            if sequence == e.sequence {
                if let r = e.result { return .repeated(r) }
                if let d = e.doubt {
                    e.doubt = nil
                    return .inDoubt(d)
                }
                return .inProgress
            }
            e.sequence = sequence
            e.result = nil
            e.doubt = nil
            return .new
        }
        if entries.count >= capacity, let victim = entries.min(by: { ($0.value.used, $0.key.client, $0.key.channel) < ($1.value.used, $1.key.client, $1.key.channel) })?.key {
            entries[victim] = nil
        }
        entries[channel] = Entry(sequence: sequence, result: nil, used: clock)
        return .new
    }

    /// Records the result of the request `begin` reported as new.
    public mutating func finish(_ channel: Channel, sequence: UInt64, result: Result) {
        guard var e = entries[channel], e.sequence == sequence else { return }
        e.result = result
        entries[channel] = e
    }

    /// Records that request `sequence` of `channel` was applied with `result`, seen
    /// as a replica rather than as the head (a committed write passing down the
    /// chain). So when this replica becomes the head, a client's retry of a write the
    /// old head applied but never acknowledged is answered, not applied again.
    public mutating func remember(_ channel: Channel, sequence: UInt64, result: Result) {
        clock += 1
        if let e = entries[channel], e.sequence > sequence { return }
        if entries[channel] == nil, entries.count >= capacity,
           let victim = entries.min(by: { ($0.value.used, $0.key.client, $0.key.channel) < ($1.value.used, $1.key.client, $1.key.channel) })?.key {
            entries[victim] = nil
        }
        entries[channel] = Entry(sequence: sequence, result: result, used: clock)
    }

    /// Records that the running request `sequence` failed with `versions` staged at
    /// the head and unsettled: its retry gets `.inDoubt(versions)`.
    public mutating func doubt(_ channel: Channel, sequence: UInt64, versions: [ChunkID: InDoubt]) {
        guard var e = entries[channel], e.sequence == sequence, e.result == nil else { return }
        e.doubt = versions
        entries[channel] = e
    }

    /// Forgets an unfinished request (it failed before doing anything), so a retry runs.
    public mutating func abandon(_ channel: Channel, sequence: UInt64) {
        guard let e = entries[channel], e.sequence == sequence, e.result == nil else { return }
        entries[channel] = nil
    }
}
