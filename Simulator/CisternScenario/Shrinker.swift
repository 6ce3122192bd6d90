import CisternCore
import Yams

/// Shrinks a failing run: writes the faults the seed drew (timed and random) as the
/// scenario's timed faults, checks that this replays the failure, then drops faults,
/// halves first and then one by one, keeping every removal after which the run still
/// fails the same way (a violation of one of the same invariants), until no single
/// fault can go. Then the same for what the seed drew besides faults: the knobs
/// (pinned at their drawn values, then each let go back to its default while the run
/// still fails), the fault points and the shuffled schedule (turned off if the
/// failure does not need them). The result is a scenario file with the smallest
/// fault set and the fewest non-default settings found.
public enum Shrinker {
    public struct Outcome: Sendable {
        /// The shrunk scenario: the kept faults, no generators.
        public var scenario: Scenario
        public var originalFaults: Int
        public var keptFaults: Int
        /// Simulation runs spent (including the first two: the failure and its replay).
        public var runs: Int
        /// The invariants the original run violated (the shrunk one violates one of them).
        public var invariants: [String]
        /// The shrunk scenario's own run.
        public var result: RunResult
        /// With knobs drawn: the knobs the failure needs at their drawn values
        /// (`knob_values`, knobs off; empty: none), or nil when the draw was kept whole.
        public var knobsNeeded: [String: UInt64]?
        /// Whether the failure still needs fault points / the shuffled schedule (nil:
        /// the scenario had neither on).
        public var faultPointsNeeded: Bool?
        public var shuffleNeeded: Bool?
    }

    public enum ShrinkError: Error, CustomStringConvertible {
        case passes(String, UInt64)
        case expectsViolations(String)
        case notReproduced(String, UInt64)

        public var description: String {
            switch self {
            case .passes(let name, let seed): return "\(name) seed \(seed) passes: there is no failure to shrink"
            case .expectsViolations(let name): return "\(name) expects violations (expect_violations: true); shrinking keeps a failing run failing, so remove expect_violations to shrink the failure it plants"
            case .notReproduced(let name, let seed): return "\(name) seed \(seed) fails, but not when its drawn faults are replayed as timed faults; replay the seed itself instead"
            }
        }
    }

    /// The invariant a violation names ("linearizable: ..." -> "linearizable").
    /// The linearizability checker's lines ("key c1: not linearizable: ...") count as
    /// `linearizable` whatever the key.
    static func invariant(_ violation: String) -> String {
        violation.contains(": not linearizable") ? "linearizable" : String(violation.prefix { $0 != ":" })
    }

    public static func shrink(_ scenario: Scenario, path: String, seed: UInt64, runsMax: Int = 300, progress: (String) -> Void = { _ in }) throws(ShrinkError) -> Outcome {
        if scenario.expectViolations == true { throw .expectsViolations(scenario.name) }
        var runs = 1
        let first = ScenarioRunner.run(scenario, path: path, seed: seed)
        guard !first.passed else { throw .passes(scenario.name, seed) }
        let wanted = Set(first.violations.map(invariant))
        let specs = FaultPlan(scenario: scenario).draw(seed: seed).specs
        var base = scenario
        base.randomFaults = nil
        base.swarm = nil
        base.name = "\(scenario.name)-shrunk-seed\(seed)"
        var lastFailure = first
        func failsScenario(_ s: Scenario) -> Bool {
            runs += 1
            let r = ScenarioRunner.run(s, path: path, seed: seed)
            let failing = !r.passed && r.violations.contains { wanted.contains(invariant($0)) }
            if failing { lastFailure = r }
            return failing
        }
        func fails(_ faults: [FaultSpec]) -> Bool {
            var s = base
            s.faults = faults
            return failsScenario(s)
        }
        progress("\(scenario.name) seed \(seed) fails (\(wanted.sorted().joined(separator: ", "))); \(specs.count) faults drawn")
        guard fails(specs) else { throw .notReproduced(scenario.name, seed) }
        var kept = specs
        if !kept.isEmpty && fails([]) {
            kept = []
        } else {
            var chunk = max(kept.count / 2, 1)
            while true {
                var i = 0
                var removedAny = false
                while i < kept.count && runs < runsMax {
                    let candidate = Array(kept[..<i] + kept[min(i + chunk, kept.count)...])
                    if fails(candidate) {
                        kept = candidate
                        removedAny = true
                        progress("  \(kept.count) faults still fail (run \(runs))")
                    } else {
                        i += chunk
                    }
                }
                if runs >= runsMax { break }
                if chunk == 1 && !removedAny { break }
                chunk = max(chunk / 2, 1)
            }
        }
        // `kept` only ever changes to a set that just failed, so the last failing run
        // is the kept set's own run.
        var final = base
        final.faults = kept
        // `final` likewise only changes to a scenario that just failed.
        var knobsNeeded: [String: UInt64]?
        if final.knobs == true && runs < runsMax {
            let drawn = Knobs.drawn(seed: seed).pinning(final.knobValues ?? [:])
            var pins: [String: UInt64] = [:]
            for (spec, v) in zip(Knobs.specs, drawn.values) where v != spec.standard { pins[spec.name] = v }
            func pinned(_ p: [String: UInt64]) -> Scenario {
                var c = final
                c.knobs = nil
                c.knobValues = p.isEmpty ? nil : p
                return c
            }
            // The draw written out as pins must replay the failure before pins go.
            if failsScenario(pinned(pins)) {
                for name in pins.keys.sorted() where runs < runsMax {
                    var fewer = pins
                    fewer[name] = nil
                    if failsScenario(pinned(fewer)) {
                        pins = fewer
                        progress("  knob \(name) back to its default: still fails (run \(runs))")
                    }
                }
                final = pinned(pins)
                knobsNeeded = pins
                // Rerun the final form: the last failing run may have been another candidate.
                _ = failsScenario(final)
            }
        }
        var faultPointsNeeded: Bool?
        if final.faultPoints == true {
            var c = final
            c.faultPoints = nil
            faultPointsNeeded = !(runs < runsMax && failsScenario(c))
            if faultPointsNeeded == false { final = c }
        }
        var shuffleNeeded: Bool?
        if final.scheduling == "shuffled" {
            var c = final
            c.scheduling = nil
            shuffleNeeded = !(runs < runsMax && failsScenario(c))
            if shuffleNeeded == false { final = c }
        }
        if faultPointsNeeded == true || shuffleNeeded == true { _ = failsScenario(final) }
        return Outcome(scenario: final, originalFaults: specs.count, keptFaults: kept.count, runs: runs, invariants: wanted.sorted(), result: lastFailure,
                       knobsNeeded: knobsNeeded, faultPointsNeeded: faultPointsNeeded, shuffleNeeded: shuffleNeeded)
    }

    /// The shrunk scenario as a file: a `# Proves:` comment saying where it came from
    /// and what it breaks, then the YAML.
    public static func file(_ o: Outcome, from path: String, seed: UInt64) throws -> String {
        let encoder = YAMLEncoder()
        encoder.options.sortKeys = false
        var scenario = o.scenario
        // A planted bug is only allowed where violations are expected: the file then
        // proves the checkers catch it.
        if scenario.workload.plantedBug != nil { scenario.expectViolations = true }
        let yaml = try encoder.encode(scenario)
        let broken = Set(o.result.violations.map(invariant)).sorted().joined(separator: ", ")
        var settings: [String] = []
        if let k = o.knobsNeeded { settings.append(k.isEmpty ? "no drawn knob" : "knobs \(k.keys.sorted().joined(separator: ", "))") }
        if let f = o.faultPointsNeeded { settings.append(f ? "fault points" : "no fault points") }
        if let s = o.shuffleNeeded { settings.append(s ? "the shuffled schedule" : "no shuffled schedule") }
        let needs = settings.isEmpty ? "" : "\n# It needs \(settings.joined(separator: ", "))."
        return """
            # Proves: shrunk from \(path) seed \(seed): these \(o.keptFaults) of the \(o.originalFaults) faults
            # it drew still break \(broken.isEmpty ? o.invariants.joined(separator: ", ") : broken) (\(o.runs) runs to shrink).\(needs)
            # Replay: cistern sim FILE --seed \(seed)

            """ + yaml
    }
}
