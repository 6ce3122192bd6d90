import CisternServer
import Foundation
import Testing

/// The soak's pure parts: the fault schedule and the levelling verdict.
@Suite struct SoakPlanTests {
    let nodes: [(name: String, role: String)] = [("mgmtd1", "mgmtd"), ("meta1", "meta"), ("meta2", "meta"), ("storage1", "storage"), ("storage2", "storage"), ("storage3", "storage"), ("storage4", "storage")]

    @Test func theScheduleIsAFunctionOfTheSeedAndLeavesTheLastIntervalFree() {
        let a = SoakPlan.faults(seed: 7, nodes: nodes, durationSeconds: 1800, everySeconds: 30, downSeconds: 3...10)
        #expect(a == SoakPlan.faults(seed: 7, nodes: nodes.reversed(), durationSeconds: 1800, everySeconds: 30, downSeconds: 3...10))
        #expect(a != SoakPlan.faults(seed: 8, nodes: nodes, durationSeconds: 1800, everySeconds: 30, downSeconds: 3...10))
        #expect(a.count == 59)
        #expect(a.map(\.atSeconds) == (1...59).map { Double($0) * 30 })
        #expect(a.allSatisfy { (3...10).contains($0.downSeconds) })
        // Storage is picked about three times in five; every role is hit.
        let storage = a.filter { $0.role == "storage" }.count
        #expect((20...50).contains(storage), "\(storage) of \(a.count)")
        #expect(Set(a.map(\.role)) == ["storage", "meta", "mgmtd"])
        #expect(a.allSatisfy { f in nodes.contains { $0.name == f.node && $0.role == f.role } })
    }

    @Test func atMostOneProcessIsDownAtATime() {
        let a = SoakPlan.faults(seed: 1, nodes: nodes, durationSeconds: 600, everySeconds: 10, downSeconds: 5...30)
        #expect(a.allSatisfy { $0.downSeconds <= 8 })
        for (f, g) in zip(a, a.dropFirst()) { #expect(f.atSeconds + f.downSeconds < g.atSeconds) }
    }

    @Test func noFaultsInARunShorterThanTwoIntervalsOrWithoutNodes() {
        #expect(SoakPlan.faults(seed: 1, nodes: nodes, durationSeconds: 50, everySeconds: 30, downSeconds: 3...10).isEmpty)
        #expect(SoakPlan.faults(seed: 1, nodes: [], durationSeconds: 500, everySeconds: 30, downSeconds: 3...10).isEmpty)
        #expect(SoakPlan.faults(seed: 1, nodes: [("storage1", "storage")], durationSeconds: 100, everySeconds: 30, downSeconds: 3...10).map(\.node) == ["storage1", "storage1"])
    }

    func series(_ values: [Double]) -> [(seconds: Double, value: Double)] { values.enumerated().map { (Double($0.offset) * 10, $0.element) } }

    @Test func aFlatOrSawtoothSeriesLevelsOffAndAClimbingOneDoesNot() {
        #expect(SoakTrend.judge(series([10, 80, 100, 101, 99, 100, 102, 100, 101, 100, 99, 100]), floor: 1) == .levelled)
        // A restarted process starts small again: peaks, not last values, count.
        #expect(SoakTrend.judge(series([50, 90, 100, 40, 100, 100, 30, 95, 100, 100, 20, 101]), floor: 1) == .levelled)
        let climbing = SoakTrend.judge(series((0..<12).map { 100 + Double($0) * 20 }), floor: 1)
        #expect(climbing == .growing(earlierPeak: 220, laterPeak: 320))
        // Growth within the floor never counts.
        #expect(SoakTrend.judge(series((0..<12).map { 100 + Double($0) }), floor: 64, tolerance: 0) == .levelled)
    }

    @Test func tooFewSamplesAreTooShortToJudge() {
        #expect(SoakTrend.judge([], floor: 1) == .tooShort)
        #expect(SoakTrend.judge(series([1, 2, 3, 4, 5]), floor: 1) == .tooShort)
        #expect(SoakTrend.judge([(5, 1), (5, 2)], floor: 1) == .tooShort)
    }
}

/// A short soak of real processes: load, five kill -9 and restarts, every acknowledged
/// page and file checked at the end, every process stopped.
@Suite(.serialized) struct SoakRunTests {
    @Test func aShortSoakWithKillsLosesNothingAndStopsEveryProcess() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: LocalClusterKillTests.binary), "build the cistern binary first (swift build)")
        let dir = NSTemporaryDirectory() + "cistern-soak-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var o = Soak.Options(dataDir: dir, binary: LocalClusterKillTests.binary)
        o.durationSeconds = 75
        o.faultEverySeconds = 12
        o.downSeconds = 2...6
        o.sampleEverySeconds = 5
        o.seed = 3
        o.durability = .durable
        o.livePages = 256
        o.liveFiles = 8
        o.fileBytesMax = 256 << 10
        let r = try await Soak.run(o) { print("soak: \($0)") }
        print(Soak.format(r))
        guard r.ok else {
            Issue.record("the soak failed:\n\(Soak.format(r))")
            return
        }
        #expect(r.faults.count == 5)
        #expect(r.wrong.isEmpty && r.lost.isEmpty && r.unreadableAtEnd.isEmpty, "\(r.wrong.prefix(3)) \(r.lost.prefix(3)) \(r.unreadableAtEnd.prefix(3))")
        #expect(r.restartFailures.isEmpty && r.notSettled == nil)
        #expect(r.pagesStored > 256 && r.pagesDeleted > 0 && r.filesWritten > 8 && r.filesRemoved > 0)
        #expect(r.finalPagesChecked > 0 && r.finalFilesChecked > 0 && r.readsChecked > 0)
        #expect(Set(r.samples.map(\.node)).count == 7 && r.samples.allSatisfy { $0.residentBytes > 0 })
        #expect(r.trends.allSatisfy { $0.trend == .tooShort })
        #expect(LocalCluster(dataDir: dir).runningNodes().isEmpty, "the soak left processes running")
        #expect(r.ok, "\(Soak.format(r))")
    }
}
