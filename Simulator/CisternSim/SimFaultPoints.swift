import CisternCore

/// The fault points of a simulated world (see `Runtime.faultPoint`). Off unless a
/// run enables them. When on, the first time a run meets a point it decides, from
/// the seed and the point's name alone, whether the point is enabled for the whole
/// run (with `enableProbability`) and at what rate it fires (`fireRates`); every
/// later evaluation of an enabled point fires with that rate. Decisions draw from
/// streams of their own, in the simulator's deterministic order, so a seed replays.
public final class SimFaultPoints: @unchecked Sendable {
    public var isOn = false
    public var enableProbability = 0.25
    public static let fireRates = [0.01, 0.05, 0.2]
    private let seed: UInt64
    private var decided: [String: (rate: Double, random: DeterministicRandom)?] = [:]
    /// Fires per point name.
    public private(set) var fired: [String: Int] = [:]
    /// Points that fired in each node's processes, by node name: a checker that
    /// asks whether a fault touched a node counts these too.
    public private(set) var firedOn: [String: Set<String>] = [:]

    init(seed: UInt64) { self.seed = seed }

    func fires(_ point: StaticString, node: String) -> Bool {
        guard fires(point) else { return false }
        firedOn[node, default: []].insert(point.description)
        return true
    }

    func fires(_ point: StaticString) -> Bool {
        guard isOn else { return false }
        let name = point.description
        if decided[name] == nil {
            var r = DeterministicRandom(seed: seed).fork("fault-point/\(name)")
            if r.chance(enableProbability) {
                let rate = Self.fireRates[Int(r.next() % UInt64(Self.fireRates.count))]
                decided[name] = .some((rate, r.fork("fires")))
            } else {
                decided[name] = .some(nil)
            }
        }
        guard var entry = decided[name]! else { return false }
        let fire = entry.random.chance(entry.rate)
        decided[name] = .some(entry)
        guard fire else { return false }
        fired[name, default: 0] += 1
        return true
    }

    /// Points that fired, "name×count" sorted by name.
    public var summary: String {
        fired.keys.sorted().map { "\($0)×\(fired[$0]!)" }.joined(separator: ", ")
    }

    /// Points met, and whether each is enabled in this run.
    public var enabled: [String: Bool] {
        decided.mapValues { $0 != nil }
    }
}
