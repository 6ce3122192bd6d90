import CisternScenario
import Testing

let base = """
name: t
duration: 10s
topology:
  nodes:
    - { name: r1, role: register }
    - { name: r2, role: register }
    - { name: r3, role: register }
    - { name: c1, role: client }
workload: { kind: register }

"""

/// The problems a scenario text is rejected with (empty if it is accepted).
func problems(_ text: String) -> String {
    do {
        _ = try ScenarioLoader.parse(text, path: "test.yaml")
        return ""
    } catch {
        return error.description
    }
}

@Suite struct ScenarioValidationTests {
    @Test func aMinimalScenarioIsAccepted() {
        #expect(problems(base) == "")
    }

    @Test func unknownNodeNamesAreNamed() {
        let p = problems(base + "faults:\n  - { at: 1s, kind: kill, node: r9 }\n")
        #expect(p.contains("faults[0].node: unknown node 'r9'"))
        #expect(p.contains("c1, r1, r2, r3"))
    }

    @Test func badDurationsSayHowToWriteThem() {
        let p = problems(base.replacingOccurrences(of: "duration: 10s", with: "duration: 10 parsecs"))
        #expect(p.contains("duration"))
        #expect(p.contains("not a duration"))
        #expect(p.contains("250ms"))
    }

    @Test func unknownFaultKindsListTheKnownOnes() {
        let p = problems(base + "faults:\n  - { at: 1s, kind: kil, node: r1 }\n")
        #expect(p.contains("unknown fault kind 'kil'"))
        #expect(p.contains("kill"))
        #expect(p.contains("ip_change"))
    }

    @Test func misspelledKeysAreNotIgnored() {
        let p = problems(base + "faults:\n  - { at: 1s, kind: kill, nod: r1 }\n")
        #expect(p.contains("unknown key 'nod'"))
    }

    @Test func missingFieldsPerKindAreNamed() {
        #expect(problems(base + "faults:\n  - { at: 1s, kind: clog, node: r1 }\n").contains("'clog' needs a 'duration'"))
        #expect(problems(base + "faults:\n  - { at: 1s, kind: partition }\n").contains("'partition' needs 'groups'"))
        #expect(problems(base + "faults:\n  - { at: 20s, kind: kill, node: r1 }\n").contains("after the end of the workload"))
    }

    @Test func faultsBeyondWhatTheTopologySurvivesAreRejectedUnlessExpected() {
        let twoDown = "faults:\n  - { at: 1s, kind: kill, node: r1 }\n  - { at: 2s, kind: pause, node: r2, duration: 1s }\n"
        let p = problems(base + twoDown)
        #expect(p.contains("beyond what the topology survives"))
        #expect(p.contains("r1, r2"))
        #expect(p.contains("expect_violations: true"))
        #expect(problems(base + twoDown + "expect_violations: true\n") == "")
        // One at a time is fine.
        #expect(problems(base + "faults:\n  - { at: 1s, kind: kill, node: r1, duration: 1s }\n  - { at: 3s, kind: pause, node: r2, duration: 1s }\n") == "")
        // Two wiped disks lose data for good.
        let wipes = "faults:\n  - { at: 1s, kind: kill, node: r1, duration: 1s, wipe_disk: true }\n  - { at: 3s, kind: kill, node: r2, duration: 1s, wipe_disk: true }\n"
        #expect(problems(base + wipes).contains("lost data"))
    }

    @Test func clusterTopologiesAreChecked() {
        let cluster = """
        name: c
        duration: 10s
        topology:
          nodes:
            - { name: m1, role: mgmtd }
            - { name: s1, role: storage, targets: 2 }
            - { name: s2, role: storage }
        workload: { kind: cluster, replicas: 3 }

        """
        #expect(problems(cluster).contains("need at least 3 storage nodes"))
        #expect(problems(cluster.replacingOccurrences(of: "replicas: 3", with: "replicas: 2")) == "")
        let twoDown = cluster.replacingOccurrences(of: "replicas: 3", with: "replicas: 2")
            + "faults:\n  - { at: 1s, kind: kill, node: s1 }\n  - { at: 2s, kind: kill, node: s2 }\n"
        #expect(problems(twoDown).contains("storage nodes"))
        let reserved = cluster.replacingOccurrences(of: "name: s2", with: "name: kv")
        #expect(problems(reserved).contains("reserved name 'kv'"))
        let primary = cluster.replacingOccurrences(of: "replicas: 3", with: "replicas: 2")
            + "faults:\n  - { at: 1s, kind: partition, groups: [[\"@mgmtd-primary\"], [\"*\"]] }\n"
        #expect(problems(primary).contains("beyond what the topology survives"), "cutting off the only mgmtd replica leaves no primary")
        #expect(problems(base + "faults:\n  - { at: 1s, kind: kill, node: \"@mgmtd-primary\" }\n").contains("needs nodes with role: mgmtd"))
    }

    @Test func notYAMLIsAPreciseError() {
        #expect(problems("name: [unclosed").contains("test.yaml"))
        #expect(problems("name: x\n").contains("required key is missing"))
    }

    @Test func randomFaultsStayWithinTheBudget() throws {
        let text = base + "random_faults:\n  - { kinds: [kill, pause, partition, crash], mean_interval: 200ms, max_duration: 2s }\n"
        let scenario = try ScenarioLoader.parse(text)
        let plan = FaultPlan(scenario: scenario)
        for seed in UInt64(1)...50 {
            let events = plan.plan(seed: seed)
            #expect(plan.survivabilityProblem(events) == nil)
            #expect(events.count > 1)
            #expect(events == plan.plan(seed: seed))
        }
        #expect(plan.plan(seed: 1) != plan.plan(seed: 2))
    }

    @Test func clockSkewNeedsAnOffsetOrADriftAndStaysWithinTheLeaseMargin() {
        #expect(problems(base + "faults:\n  - { at: 1s, kind: clock_skew, node: r1 }\n").contains("'clock_skew' needs an 'offset'"))
        #expect(problems(base + "faults:\n  - { at: 1s, kind: clock_skew, node: r1, drift_ppm: 200000 }\n").contains("drift_ppm: 200000 is outside"))
        #expect(problems(base + "faults:\n  - { at: 1s, kind: clock_skew, node: r1, offset: 300ms, drift_ppm: 500 }\n") == "")
        let twice = base + "faults:\n  - { at: 1s, kind: clock_skew, node: r1, offset: 300ms }\n  - { at: 2s, kind: clock_skew, node: r1, offset: 300ms }\n"
        #expect(problems(twice).contains("clock ran 600ms ahead"))
    }

    @Test func swarmAndLateJoinsAreChecked() {
        #expect(problems(base + "swarm: { kinds: [bit_flip] }\n").contains("swarm.kinds: 'bit_flip' cannot be generated"))
        #expect(problems(base + "swarm: { kinds: [kill], until: 20s }\n").contains("swarm.until: 20s is after the end"))
        #expect(problems(base + "swarm: { kindz: [kill] }\n").contains("kindz"))
        #expect(problems(base + "swarm: { kinds: [kill, pause] }\n") == "")
        let late = base.replacingOccurrences(of: "{ name: r3, role: register }", with: "{ name: r3, role: register, start_at: 2s }")
        #expect(problems(late).contains("start_at: only storage nodes of the storage workload"))
    }

    @Test func aPlantedBugNeedsExpectedViolationsOrASwarm() {
        let storage = """
            name: t
            duration: 10s
            topology:
              nodes:
                - { name: m1, role: mgmtd }
                - { name: s1, role: storage }
                - { name: c1, role: client }
            workload: { kind: storage, replicas: 1, planted_bug: early_ack }

            """
        #expect(problems(storage).contains("a planted bug needs expect_violations: true (or a swarm: block"))
        #expect(problems(storage + "swarm: { kinds: [kill] }\n") == "")
        #expect(problems(storage + "expect_violations: true\n") == "")
    }
}
