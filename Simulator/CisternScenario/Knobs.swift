import Cistern
import CisternCore
import CisternMgmtd
import CisternStorage

/// Knob randomization: the settings a deployment names (timeouts, intervals, batch
/// sizes, limits, retry bounds), drawn per seed within their valid ranges, so seeds
/// explore configurations as well as fault timings. Pure: the same seed gives the
/// same draw, which the run prints and its replay command repeats (`--knobs on`).
///
/// The cluster manager's heartbeat interval and failure timeout stay the
/// scenario's: its checkers bound detection by them.
public struct Knobs: Sendable, Equatable {
    /// One knob: its name (`component.setting_unit`) and valid range.
    public struct Spec: Sendable, Equatable {
        public let name: String
        public let range: ClosedRange<UInt64>
        /// The component's own default (what a run without knobs uses).
        public let standard: UInt64
        init(name: String, range: ClosedRange<UInt64>, _ standard: UInt64) {
            self.name = name
            self.range = range
            self.standard = standard
        }
    }

    public static let specs: [Spec] = [
        Spec(name: "mgmtd.scan_interval_ms", range: 50...500, 250),
        Spec(name: "mgmtd.call_timeout_ms", range: 200...1_500, 500),
        Spec(name: "mgmtd.lease_duration_ms", range: 2_000...8_000, 4_000),
        Spec(name: "storage.call_timeout_ms", range: 300...3_000, 1_000),
        Spec(name: "storage.forward_attempts", range: 20...80, 40),
        Spec(name: "storage.forward_backoff_ms", range: 20...300, 100),
        Spec(name: "storage.scrub_chunks_per_interval", range: 8...256, 64),
        Spec(name: "storage.scrub_interval_ms", range: 200...3_000, 1_000),
        Spec(name: "storage.failed_target_probe_ms", range: 1_000...10_000, 5_000),
        Spec(name: "storage.resync_dump_page_entries", range: 16...UInt64(StorageLimits.dumpPageEntriesMax), UInt64(StorageLimits.dumpPageEntriesMax)),
        // Below 16 MiB: no memory tier at all (every read from the disk, every
        // write through), about one seed in 64.
        Spec(name: "storage.memory_cache_mib", range: 0...1_024, 1_024),
        Spec(name: "client.in_flight_max", range: 4...128, 64),
        Spec(name: "client.per_node_in_flight_max", range: 2...64, 32),
        Spec(name: "client.chunk_timeout_ms", range: 300...3_000, 1_000),
        Spec(name: "client.kv_lease_ms", range: 3_000...10_000, 5_000),
        Spec(name: "client.kv_write_attempts", range: 10...40, 20),
    ]

    /// The drawn values, in `specs` order.
    public let values: [UInt64]

    public init(values: [UInt64]) {
        precondition(values.count == Self.specs.count, "one value per knob")
        self.values = values
    }

    /// The draw for `seed` (its own stream: drawing knobs changes no other draw).
    public static func drawn(seed: UInt64) -> Knobs {
        var random = DeterministicRandom(seed: seed).fork("knobs")
        return Knobs(values: specs.map { spec in
            spec.range.lowerBound + random.next() % (spec.range.upperBound - spec.range.lowerBound + 1)
        })
    }

    /// Every knob at its component's default.
    public static let standard = Knobs(values: specs.map(\.standard))

    /// Why `pins` (knob name to value, the scenario's `knob_values`) cannot be used:
    /// an unknown name or a value outside its range (nil: they can).
    public static func problem(_ pins: [String: UInt64]) -> String? {
        for (name, value) in pins.sorted(by: { $0.key < $1.key }) {
            guard let spec = specs.first(where: { $0.name == name }) else {
                return "knob_values: '\(name)' is not a knob; the knobs are \(specs.map(\.name).joined(separator: ", "))"
            }
            guard spec.range.contains(value) else {
                return "knob_values: \(name)=\(value) is outside \(spec.range.lowerBound)...\(spec.range.upperBound)"
            }
        }
        return nil
    }

    /// These knobs with `pins` set (checked by `problem`).
    public func pinning(_ pins: [String: UInt64]) -> Knobs {
        Knobs(values: zip(Self.specs, values).map { spec, v in pins[spec.name] ?? v })
    }

    public subscript(_ name: String) -> UInt64 {
        guard let i = Self.specs.firstIndex(where: { $0.name == name }) else { preconditionFailure("no knob \(name)") }
        return values[i]
    }

    /// `name=value` for every knob, for the run's line and report.
    public var summary: String {
        zip(Self.specs, values).map { "\($0.name)=\($1)" }.joined(separator: " ")
    }

    static let millisecond: UInt64 = 1_000_000

    public func apply(to c: inout MgmtdConfig) {
        c.scanIntervalNanoseconds = self["mgmtd.scan_interval_ms"] * Self.millisecond
        c.callTimeoutNanoseconds = self["mgmtd.call_timeout_ms"] * Self.millisecond
        // Renewal and margin follow the duration, so the lease rules always hold.
        let lease = self["mgmtd.lease_duration_ms"] * Self.millisecond
        c.leaseDurationNanoseconds = lease
        c.leaseRenewIntervalNanoseconds = lease / 4
        c.leaseMarginNanoseconds = lease / 8
    }

    public func apply(to c: inout StorageConfig) {
        c.callTimeoutNanoseconds = self["storage.call_timeout_ms"] * Self.millisecond
        c.forwardAttemptsMax = Int(self["storage.forward_attempts"])
        c.forwardBackoffNanoseconds = self["storage.forward_backoff_ms"] * Self.millisecond
        c.scrubChunksPerInterval = Int(self["storage.scrub_chunks_per_interval"])
        c.scrubIntervalNanoseconds = self["storage.scrub_interval_ms"] * Self.millisecond
        c.failedTargetProbeNanoseconds = self["storage.failed_target_probe_ms"] * Self.millisecond
        c.resyncDumpPageEntries = Int(self["storage.resync_dump_page_entries"])
        let mib = self["storage.memory_cache_mib"]
        c.memoryCacheBytes = mib < 16 ? 0 : Int(mib) << 20
    }

    public func apply(to o: inout ClientOptions) {
        o.inFlightMax = Int(self["client.in_flight_max"])
        o.perNodeInFlightMax = Int(self["client.per_node_in_flight_max"])
        o.chunkTimeoutNanoseconds = self["client.chunk_timeout_ms"] * Self.millisecond
        o.kvLeaseNanoseconds = self["client.kv_lease_ms"] * Self.millisecond
        o.kvWriteAttemptsMax = Int(self["client.kv_write_attempts"])
    }
}
