import CisternCore

/// The pure parts of `cistern soak`: which process dies when (from a seed, so a run's
/// fault schedule can be replayed) and whether a resource levelled off.

/// One process killed with SIGKILL at `atSeconds` after the load started and restarted
/// `downSeconds` later.
public struct SoakFault: Sendable, Equatable, CustomStringConvertible {
    public var atSeconds: Double
    public var node: String
    public var role: String
    public var downSeconds: Double

    public init(atSeconds: Double, node: String, role: String, downSeconds: Double) {
        self.atSeconds = atSeconds
        self.node = node
        self.role = role
        self.downSeconds = downSeconds
    }

    public var description: String {
        "\(Int(atSeconds.rounded())) s: kill -9 \(node), restart after \(String(format: "%.1f", downSeconds)) s"
    }
}

public enum SoakPlan {
    /// The fault schedule: one fault every `everySeconds` (the first after one interval,
    /// none in the last interval, so the cluster settles before the final check). The
    /// victim's role is storage three times in five, otherwise metadata or manager
    /// (roles without a node are skipped), the node uniform within its role, the
    /// outage uniform in `downSeconds` but at most 80% of the interval, so at most one
    /// process is down at a time. Nodes are taken in sorted order: the same seed and
    /// cluster give the same schedule.
    public static func faults(seed: UInt64, nodes: [(name: String, role: String)], durationSeconds: Double, everySeconds: Double,
                              downSeconds: ClosedRange<Double>) -> [SoakFault] {
        guard everySeconds > 0, durationSeconds > 2 * everySeconds, !nodes.isEmpty else { return [] }
        let byRole = Dictionary(grouping: nodes, by: \.role).mapValues { $0.map(\.name).sorted() }
        let weighted: [(role: String, weight: Int)] = [("storage", 3), ("meta", 1), ("mgmtd", 1)].filter { byRole[$0.0] != nil }
        let otherRoles = byRole.keys.sorted().filter { r in !weighted.contains { $0.role == r } }
        let choices = weighted + otherRoles.map { ($0, 1) }
        let total = choices.reduce(0) { $0 + $1.weight }
        var rng = DeterministicRandom(seed: seed)
        let longest = min(downSeconds.upperBound, 0.8 * everySeconds)
        let shortest = min(downSeconds.lowerBound, longest)
        var out: [SoakFault] = []
        var t = everySeconds
        while t + everySeconds <= durationSeconds {
            var pick = Int(rng.next() % UInt64(total))
            var role = choices[0].role
            for c in choices {
                if pick < c.weight { role = c.role; break }
                pick -= c.weight
            }
            let names = byRole[role]!
            let node = names[Int(rng.next() % UInt64(names.count))]
            let down = shortest + (longest - shortest) * rng.unit()
            out.append(SoakFault(atSeconds: t, node: node, role: role, downSeconds: (down * 10).rounded() / 10))
            t += everySeconds
        }
        return out
    }
}

/// Whether a resource's samples over a soak levelled off.
public enum SoakTrend: Sendable, Equatable, CustomStringConvertible {
    /// Too few samples to say (a short run).
    case tooShort
    case levelled
    /// Still growing: the later peak is above the earlier one by more than allowed.
    case growing(earlierPeak: Double, laterPeak: Double)

    public var description: String {
        switch self {
        case .tooShort: return "too short to judge"
        case .levelled: return "levelled off"
        case .growing(let a, let b): return "GROWING (peak \(Self.format(a)) then \(Self.format(b)))"
        }
    }

    static func format(_ v: Double) -> String { v >= 1000 ? String(format: "%.0f", v) : String(format: "%.1f", v) }

    /// Leaves out the first quarter (start-up and warm-up), splits the rest in two
    /// halves by time and compares their peaks: growing when the later peak exceeds
    /// the earlier by more than `tolerance` (a fraction) plus `floor` (in the
    /// samples' unit, so small absolute wobbles never count). Peaks rather than
    /// last values, because a restarted process starts small again. At least
    /// `minimumSamples` after the warm-up, else `tooShort`.
    public static func judge(_ samples: [(seconds: Double, value: Double)], floor: Double, tolerance: Double = 0.25, minimumSamples: Int = 6) -> SoakTrend {
        guard let first = samples.map(\.seconds).min(), let last = samples.map(\.seconds).max(), last > first else { return .tooShort }
        let warm = first + (last - first) / 4
        let kept = samples.filter { $0.seconds >= warm }
        guard kept.count >= minimumSamples else { return .tooShort }
        let middle = warm + (last - warm) / 2
        let earlier = kept.filter { $0.seconds < middle }.map(\.value)
        let later = kept.filter { $0.seconds >= middle }.map(\.value)
        guard let a = earlier.max(), let b = later.max() else { return .tooShort }
        return b > a * (1 + tolerance) + floor ? .growing(earlierPeak: a, laterPeak: b) : .levelled
    }
}
