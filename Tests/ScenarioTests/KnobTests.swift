import Cistern
import CisternMgmtd
import CisternScenario
import CisternStorage
import Foundation
import Testing

/// Knob randomization: each seed draws its own settings within their ranges, the
/// draw is printed and replayed, and runs with it stay deterministic.
@Suite struct KnobTests {
    @Test func drawsStayInRangeRepeatPerSeedAndDifferBetweenSeeds() {
        var distinct = Set<[UInt64]>()
        for seed in UInt64(1)...300 {
            let k = Knobs.drawn(seed: seed)
            #expect(k == Knobs.drawn(seed: seed))
            for (spec, v) in zip(Knobs.specs, k.values) { #expect(spec.range.contains(v), "\(spec.name)=\(v)") }
            distinct.insert(k.values)
            // Every draw is a configuration the components accept.
            var m = MgmtdConfig()
            k.apply(to: &m)
            #expect(m.problems().isEmpty, "\(m.problems())")
            var s = StorageConfig()
            k.apply(to: &s)
            #expect(s.resyncDumpPageEntries >= 16 && s.resyncDumpPageEntries <= StorageLimits.dumpPageEntriesMax)
            #expect(s.memoryCacheBytes == 0 || s.memoryCacheBytes >= 16 << 20)
            var o = ClientOptions()
            k.apply(to: &o)
            #expect(o.inFlightMax >= 4 && o.perNodeInFlightMax >= 2)
        }
        #expect(distinct.count == 300)
        // Both ends of the memory tier's range come up: none at all, and large.
        let tiers = (UInt64(1)...2_000).map { Knobs.drawn(seed: $0)["storage.memory_cache_mib"] }
        #expect(tiers.contains { $0 < 16 } && tiers.contains { $0 > 900 })
    }

    @Test func aRunWithKnobsPrintsThemReplaysThemAndIsDeterministic() throws {
        let (file, s) = try scenario("storage-node-loss.yaml")
        let a = ScenarioRunner.run(s, path: file, seed: 3, knobs: true)
        #expect(a.passed, "\(a.violations)")
        #expect(a.knobs == Knobs.drawn(seed: 3).summary)
        #expect(a.replay.hasSuffix("--seed 3 --knobs on"))
        let b = ScenarioRunner.run(s, path: file, seed: 3, knobs: true)
        #expect(a.digest == b.digest)
        // The draw changes the run: the same seed without knobs takes another path.
        let plain = ScenarioRunner.run(s, path: file, seed: 3)
        #expect(plain.knobs == nil && plain.digest != a.digest)
        // The scenario key does the same as the flag.
        var keyed = s
        keyed.knobs = true
        #expect(ScenarioRunner.run(keyed, path: file, seed: 3).digest == a.digest)
    }

    @Test func pinnedKnobsOverrideTheDrawAndBadPinsAreRefusedWithTheirNames() throws {
        let (file, base) = try scenario("storage-node-loss.yaml")
        var pinned = base
        pinned.knobs = true
        pinned.knobValues = ["storage.memory_cache_mib": 0, "mgmtd.scan_interval_ms": 100]
        let r = ScenarioRunner.run(pinned, path: file, seed: 4)
        #expect(r.passed, "\(r.violations)")
        let expected = Knobs.drawn(seed: 4).pinning(["storage.memory_cache_mib": 0, "mgmtd.scan_interval_ms": 100])
        #expect(r.knobs == expected.summary && expected["storage.memory_cache_mib"] == 0)
        // Pins without `knobs` change the defaults only.
        var only = base
        only.knobValues = ["client.in_flight_max": 8]
        #expect(ScenarioRunner.run(only, path: file, seed: 4).knobs == Knobs.standard.pinning(["client.in_flight_max": 8]).summary)
        #expect(Knobs.problem(["storage.nope": 1])?.contains("storage.memory_cache_mib") == true)
        #expect(Knobs.problem(["client.in_flight_max": 1])?.contains("outside 4...128") == true)
        let text = try String(contentsOfFile: file, encoding: .utf8) + "\nknob_values: { client.in_flight_max: 1000 }\n"
        #expect(throws: (any Error).self) { try ScenarioLoader.parse(text, path: "bad.yaml") }
    }

    /// Found by the first knob sweep: with a long lease, the killed primary came back
    /// after its lease lapsed and renewed its own record; the recorder took that as
    /// one tenure, so failure detection was measured from before the primary could
    /// act (7.2 s "over the 5 s bound"). A lapsed lease now starts a new tenure.
    @Test func aPrimaryThatReturnsAfterItsLeaseLapsedStartsANewTenure() throws {
        let (file, s) = try scenario("mgmtd-primary-kill.yaml")
        for seed: UInt64 in [1, 10] {
            let r = ScenarioRunner.run(s, path: file, seed: seed, knobs: true)
            #expect(r.passed, "seed \(seed): \(r.violations)")
        }
    }
}
