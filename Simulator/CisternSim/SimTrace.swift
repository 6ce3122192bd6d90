import CisternCore

/// The running digest of a world's event trace. Two runs of the same scenario,
/// seed and build record the same events in the same order, so their digests match;
/// any divergence changes the digest.
public struct SimTrace: Sendable {
    public private(set) var digest: UInt64 = 0x6A09_E667_F3BC_C908
    public private(set) var events: UInt64 = 0
    /// When set, the last `keepLines` events are kept as text (for failure reports).
    public var keepLines: Int
    public private(set) var lines: [String] = []
    /// When true, every noted event (faults, kills, restarts, violations) is kept
    /// with its time, for run reports. Off by default: it costs memory, not digest.
    public var keepNotes = false
    public private(set) var notes: [TraceNote] = []

    public init(keepLines: Int = 0) { self.keepLines = keepLines }

    @inline(__always)
    static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Folds one event into the digest.
    @inline(__always)
    public mutating func record(_ kind: TraceEvent, at time: UInt64, _ a: UInt64 = 0, _ b: UInt64 = 0, _ c: UInt64 = 0) {
        events &+= 1
        var h = digest
        h = Self.mix(h ^ UInt64(kind.rawValue))
        h = Self.mix(h ^ time)
        h = Self.mix(h ^ a)
        h = Self.mix(h ^ b)
        digest = Self.mix(h ^ c)
    }

    /// Folds an event with a text detail (faults, violations), and keeps it as a line.
    public mutating func note(_ kind: TraceEvent, at time: UInt64, _ text: String) {
        record(kind, at: time, StableHash.fnv1a64(text))
        if keepNotes && notes.count < 100_000 { notes.append(TraceNote(atNanoseconds: time, kind: kind, text: text)) }
        if keepLines > 0 {
            lines.append("\(formatSeconds(time)) \(kind) \(text)")
            if lines.count > keepLines { lines.removeFirst(lines.count - keepLines) }
        }
    }

    public var digestHex: String {
        let s = String(digest, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }
}

/// One noted event, kept for run reports.
public struct TraceNote: Sendable, Equatable {
    public var atNanoseconds: UInt64
    public var kind: TraceEvent
    public var text: String
}

/// Kinds of traced events.
public enum TraceEvent: UInt8, Sendable {
    case send = 1, deliver, drop, duplicate, reply, timeout
    case diskOp = 10, diskFault
    case kvCommit = 20, kvConflict, kvFault
    case fault = 30, heal, kill, restart, pause, resume, ipChange
    case spawn = 40, violation, custom
}

/// "12.345678s" for virtual nanoseconds.
public func formatSeconds(_ nanoseconds: UInt64) -> String {
    let s = nanoseconds / 1_000_000_000
    var us = String((nanoseconds / 1_000) % 1_000_000)
    us = String(repeating: "0", count: 6 - us.count) + us
    return "\(s).\(us)s"
}
