import CisternCore
import CisternDemo
import CisternSim
import Foundation

/// The outcome of one run of a scenario with one seed.
public struct RunResult: Codable, Sendable {
    public var scenario: String
    public var seed: UInt64
    public var digest: String
    public var simulatedSeconds: Double
    public var wallSeconds: Double
    public var events: UInt64
    public var messages: UInt64
    public var operations: Int
    public var operationsSucceeded: Int
    public var faults: Int
    public var violations: [String]
    /// Violations were expected (`expect_violations: true`): the run passes only if some were found.
    public var expectedViolations: Bool
    public var replay: String
    public var build: String
    /// Figures a run measured (for example `detection_max_seconds`), printed in the summary.
    public var metrics: [String: Double] = [:]
    /// Swarm scenarios: the fault mix this seed drew.
    public var faultMix: String?
    /// The seed-drawn scheduling, when not FIFO.
    public var scheduling: String?
    /// Fault points that fired ("name×count, ..."), when fault points were on.
    public var faultPointsFired: String?
    /// The seed-drawn settings (`Knobs.summary`), when knobs were on.
    public var knobs: String?
    /// What the run kept for a report (only with `record: true`; not in the JSON).
    public var recording: RunRecording?

    /// Whether the run met its expectation.
    public var passed: Bool { expectedViolations ? !violations.isEmpty : violations.isEmpty }

    enum CodingKeys: String, CodingKey {
        case scenario, seed, digest, events, messages, operations, faults, violations, replay, build, passed, metrics
        case faultMix = "fault_mix", scheduling, faultPointsFired = "fault_points_fired", knobs
        case simulatedSeconds = "simulated_seconds", wallSeconds = "wall_seconds"
        case operationsSucceeded = "operations_succeeded", expectedViolations = "expected_violations"
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(scenario, forKey: .scenario)
        try c.encode(seed, forKey: .seed)
        try c.encode(digest, forKey: .digest)
        try c.encode(simulatedSeconds, forKey: .simulatedSeconds)
        try c.encode(wallSeconds, forKey: .wallSeconds)
        try c.encode(events, forKey: .events)
        try c.encode(messages, forKey: .messages)
        try c.encode(operations, forKey: .operations)
        try c.encode(operationsSucceeded, forKey: .operationsSucceeded)
        try c.encode(faults, forKey: .faults)
        try c.encode(violations, forKey: .violations)
        try c.encode(expectedViolations, forKey: .expectedViolations)
        try c.encode(passed, forKey: .passed)
        try c.encode(replay, forKey: .replay)
        try c.encode(build, forKey: .build)
        try c.encode(metrics, forKey: .metrics)
        try c.encodeIfPresent(faultMix, forKey: .faultMix)
        try c.encodeIfPresent(scheduling, forKey: .scheduling)
        try c.encodeIfPresent(faultPointsFired, forKey: .faultPointsFired)
        try c.encodeIfPresent(knobs, forKey: .knobs)
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        scenario = try c.decode(String.self, forKey: .scenario)
        seed = try c.decode(UInt64.self, forKey: .seed)
        digest = try c.decode(String.self, forKey: .digest)
        simulatedSeconds = try c.decode(Double.self, forKey: .simulatedSeconds)
        wallSeconds = try c.decode(Double.self, forKey: .wallSeconds)
        events = try c.decode(UInt64.self, forKey: .events)
        messages = try c.decode(UInt64.self, forKey: .messages)
        operations = try c.decode(Int.self, forKey: .operations)
        operationsSucceeded = try c.decode(Int.self, forKey: .operationsSucceeded)
        faults = try c.decode(Int.self, forKey: .faults)
        violations = try c.decode([String].self, forKey: .violations)
        expectedViolations = try c.decode(Bool.self, forKey: .expectedViolations)
        replay = try c.decode(String.self, forKey: .replay)
        build = try c.decode(String.self, forKey: .build)
        metrics = try c.decodeIfPresent([String: Double].self, forKey: .metrics) ?? [:]
        faultMix = try c.decodeIfPresent(String.self, forKey: .faultMix)
        scheduling = try c.decodeIfPresent(String.self, forKey: .scheduling)
        faultPointsFired = try c.decodeIfPresent(String.self, forKey: .faultPointsFired)
        knobs = try c.decodeIfPresent(String.self, forKey: .knobs)
    }

    public init(scenario: String, seed: UInt64) {
        self.scenario = scenario
        self.seed = seed
        digest = ""
        simulatedSeconds = 0
        wallSeconds = 0
        events = 0
        messages = 0
        operations = 0
        operationsSucceeded = 0
        faults = 0
        violations = []
        expectedViolations = false
        replay = ""
        build = CisternBuild.version
    }
}

/// Identifies the build in run records: digests are reproducible for the same
/// scenario, seed and build.
public enum CisternBuild {
    public static let version = "cistern 0.1.0"
}

/// Runs a scenario in a simulated world for one seed and checks its invariants.
public enum ScenarioRunner {
    /// `record`: keep the run's events, operations and chain states in
    /// `RunResult.recording`, for `RunReport` (it does not change the digest).
    /// `scheduling` overrides the scenario's (and is named in the replay command).
    public static func run(_ scenario: Scenario, path: String, seed: UInt64, verbose: Bool = false, record: Bool = false,
                           scheduling: String? = nil, faultPoints: Bool? = nil, knobs: Bool? = nil) -> RunResult {
        var scenario = scenario
        if let scheduling { scenario.scheduling = scheduling }
        if let faultPoints { scenario.faultPoints = faultPoints }
        if let knobs { scenario.knobs = knobs }
        let base: Knobs? = scenario.knobs == true ? Knobs.drawn(seed: seed) : (scenario.knobValues == nil ? nil : Knobs.standard)
        scenario.knobDraw = base?.pinning(scenario.knobValues ?? [:])
        let wallStart = DispatchTime.now().uptimeNanoseconds
        var result = SimWorld.simulate(
            seed: seed, network: networkConfig(scenario), disk: diskConfig(scenario), kv: kvConfig(scenario),
            tripwire: .report
        ) { world in
            world.trace.keepNotes = record
            if verbose {
                world.logLevel = .info
                world.logSink = { line in FileHandle.standardError.write(Data((line + "\n").utf8)) }
            }
            world.faultPoints.isOn = scenario.faultPoints ?? false
            if scenario.scheduling == "shuffled" {
                var random = DeterministicRandom(seed: seed).fork("scheduler")
                let drawn = SimExecutor.Scheduling.drawn(&random)
                world.executor.setScheduling(drawn, random: random.fork("picks"))
            }
            var r: RunResult
            switch scenario.workload.kind {
            case "cluster": r = ClusterRun(scenario: scenario, world: world, seed: seed).execute()
            case "storage": r = StorageRun(scenario: scenario, world: world, seed: seed).execute()
            case "meta": r = MetaRun(scenario: scenario, world: world, seed: seed).execute()
            case "kvcache": r = KVCacheRun(scenario: scenario, world: world, seed: seed).execute()
            default: r = RegisterRun(scenario: scenario, world: world, seed: seed).execute()
            }
            if !world.executor.scheduling.isFIFO {
                r.scheduling = world.executor.scheduling.description
                r.metrics["jobs_reordered"] = Double(world.executor.jobsReordered)
            }
            r.knobs = scenario.knobDraw?.summary
            if world.faultPoints.isOn {
                r.faultPointsFired = world.faultPoints.summary
                r.metrics["fault_points_fired"] = Double(world.faultPoints.fired.values.reduce(0, +))
            }
            return r
        }
        result.scenario = scenario.name
        result.seed = seed
        result.wallSeconds = Double(DispatchTime.now().uptimeNanoseconds - wallStart) / 1e9
        result.expectedViolations = scenario.expectViolations ?? false
        result.replay = "cistern sim \(path) --seed \(seed)" + (scheduling.map { " --scheduling \($0)" } ?? "")
            + (faultPoints.map { " --fault-points \($0 ? "on" : "off")" } ?? "")
            + (knobs.map { " --knobs \($0 ? "on" : "off")" } ?? "")
        result.faultMix = FaultPlan(scenario: scenario).draw(seed: seed).mix
        return result
    }

    static func networkConfig(_ s: Scenario) -> NetworkConfig {
        var c = NetworkConfig()
        if let n = s.network {
            if let v = n.latencyMin { c.latencyMinNanoseconds = v.nanoseconds }
            if let v = n.latencyMeanExtra { c.latencyMeanExtraNanoseconds = v.nanoseconds }
            if let v = n.loss { c.lossProbability = v }
            if let v = n.duplicate { c.duplicateProbability = v }
            if let v = n.reorder { c.reorderProbability = v }
            if let v = n.nameServiceDelay { c.nameServiceDelayNanoseconds = v.nanoseconds }
        }
        return c
    }

    static func diskConfig(_ s: Scenario) -> DiskConfig {
        var c = DiskConfig()
        if let d = s.disk {
            if let v = d.latencyMin { c.latencyMinNanoseconds = v.nanoseconds }
            if let v = d.latencyMeanExtra { c.latencyMeanExtraNanoseconds = v.nanoseconds }
            if let v = d.errorProbability { c.errorProbability = v }
            if let v = d.capacity { c.capacityBytes = v.bytes }
        }
        return c
    }

    static func kvConfig(_ s: Scenario) -> KVConfig {
        var c = KVConfig()
        if let k = s.kv {
            if let v = k.latency { c.operationNanoseconds = v.nanoseconds }
            if let v = k.conflictProbability { c.conflictProbability = v }
            if let v = k.maybeCommittedProbability { c.maybeCommittedProbability = v }
        }
        return c
    }
}
