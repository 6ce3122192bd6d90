import CisternScenario
import Foundation
import Testing

/// The repository root (tests run from it under `swift test`; fall back to this file's location).
let repositoryRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

func scenario(_ name: String) throws -> (String, Scenario) {
    let path = repositoryRoot + "/Scenarios/" + name
    return (path, try ScenarioLoader.load(path: path))
}

@Suite struct ScenarioRunTests {
    @Test(arguments: [
        "register-kill-partition-ipchange.yaml", "storage-node-loss.yaml", "mgmtd-primary-kill.yaml",
        "mgmtd-primary-partition.yaml", "mgmtd-ip-drift.yaml", "meta-kill-mid-rename.yaml", "kv-outage.yaml",
    ])
    func scenarioPassesOverSeeds(_ file: String) throws {
        let (path, s) = try scenario(file)
        for seed in UInt64(1)...5 {
            let r = ScenarioRunner.run(s, path: path, seed: seed)
            #expect(r.violations.isEmpty, "seed \(seed): \(r.violations) — replay: \(r.replay)")
            #expect(r.operationsSucceeded > 10)
        }
    }

    @Test(arguments: [
        "chain-head-kill.yaml", "chain-tail-kill.yaml", "chain-lastsrv.yaml", "chunk-bitflip.yaml",
        "crash-lost-writes.yaml", "slow-disk.yaml",
    ])
    func storageScenarioPassesOverSeeds(_ file: String) throws {
        let (path, s) = try scenario(file)
        for seed in UInt64(1)...2 {
            let r = ScenarioRunner.run(s, path: path, seed: seed)
            #expect(r.violations.isEmpty, "seed \(seed): \(r.violations) — replay: \(r.replay)")
            #expect(r.operationsSucceeded > 100)
        }
    }

    @Test func everyBitFlipInChunkDataIsDetectedAndRepaired() throws {
        let (path, s) = try scenario("chunk-bitflip.yaml")
        let r = ScenarioRunner.run(s, path: path, seed: 3)
        #expect(r.violations.isEmpty)
        #expect(r.metrics["corruptions_detected"] == 3)
        #expect(r.metrics["repairs"] == 3)
    }

    @Test func storageNodeLossIsDetectedWithinTheBoundAndReported() throws {
        let (path, s) = try scenario("storage-node-loss.yaml")
        let r = ScenarioRunner.run(s, path: path, seed: 1)
        let detected = try #require(r.metrics["detection_max_seconds"])
        #expect(detected > 0)
        #expect(detected <= 5)
    }

    @Test func primaryKillElectsANewPrimary() throws {
        let (path, s) = try scenario("mgmtd-primary-kill.yaml")
        let r = ScenarioRunner.run(s, path: path, seed: 2)
        #expect(r.violations.isEmpty)
        #expect((r.metrics["primaries"] ?? 0) >= 3, "two kills of the primary mean at least three lease epochs")
    }

    @Test func everyScenarioFileLoads() throws {
        let files = try ScenarioLoader.files(at: repositoryRoot + "/Scenarios")
        #expect(files.count >= 2)
        for f in files {
            #expect(throws: Never.self) { try ScenarioLoader.load(path: f) }
            let text = try String(contentsOfFile: f, encoding: .utf8)
            #expect(text.hasPrefix("# Proves:"), "\(f) must start with a comment saying what it proves")
        }
    }

    @Test func plantedStaleReadsAreCaught() throws {
        let (path, s) = try scenario("selftest-planted-stale-reads.yaml")
        for seed in UInt64(1)...5 {
            let r = ScenarioRunner.run(s, path: path, seed: seed)
            #expect(!r.violations.isEmpty, "seed \(seed): the planted bug went unnoticed")
            #expect(r.passed)
        }
    }

    @Test func plantedSplitBrainIsCaught() throws {
        let (path, s) = try scenario("selftest-planted-split-brain.yaml")
        for seed in UInt64(1)...5 {
            let r = ScenarioRunner.run(s, path: path, seed: seed)
            #expect(r.violations.contains { $0.hasPrefix("single_primary:") }, "seed \(seed): two primaries went unnoticed")
        }
    }

    @Test func plantedOpenStorageIsCaught() throws {
        let (path, s) = try scenario("selftest-planted-open-storage.yaml")
        for seed in UInt64(1)...3 {
            let r = ScenarioRunner.run(s, path: path, seed: seed)
            #expect(r.violations.contains { $0.hasPrefix("tenant_isolation:") }, "seed \(seed): a storage node serving any tenant's chunks went unnoticed")
            #expect(r.passed)
        }
    }

    @Test func tenantsStayApartUnderFaults() throws {
        let (path, s) = try scenario("kvcache-tenants.yaml")
        for seed in UInt64(1)...3 {
            let r = ScenarioRunner.run(s, path: path, seed: seed)
            #expect(r.violations.isEmpty, "seed \(seed): \(r.violations.prefix(3))")
            #expect((r.metrics["probes_refused"] ?? 0) >= 20, "seed \(seed): the tenants hardly probed each other")
            #expect((r.metrics["pages_read"] ?? 0) > 100)
        }
    }

    @Test func replayCommandNamesTheFileAndSeed() throws {
        let (path, s) = try scenario("register-kill-partition-ipchange.yaml")
        let r = ScenarioRunner.run(s, path: path, seed: 17)
        #expect(r.replay == "cistern sim \(path) --seed 17")
    }
}
