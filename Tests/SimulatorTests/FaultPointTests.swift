import CisternCore
import CisternSim
import Testing

/// Fault points (`Runtime.faultPoint`) in simulated worlds.
@Suite struct FaultPointTests {
    /// Evaluates three points 400 times each on one node; returns which fired when.
    func evaluate(seed: UInt64, on: Bool) -> (fires: [String], summary: String, enabled: [String: Bool]) {
        SimWorld.simulate(seed: seed) { world -> ([String], String, [String: Bool]) in
            world.faultPoints.isOn = on
            let runtime = world.start(world.addNode(name: "a", host: "10.0.0.1")).runtime!
            var fires: [String] = []
            for i in 0..<400 {
                if runtime.faultPoint("test.alpha") { fires.append("alpha@\(i)") }
                if runtime.faultPoint("test.beta") { fires.append("beta@\(i)") }
                if runtime.faultPoint("test.gamma") { fires.append("gamma@\(i)") }
            }
            return (fires, world.faultPoints.summary, world.faultPoints.enabled)
        }
    }

    @Test func offByDefault() {
        #expect(evaluate(seed: 1, on: false).fires.isEmpty)
    }

    @Test func aSeedEnablesASubsetAtDrawnRatesAndReplaysExactly() {
        var enabledCounts = 0
        var anyFired = false
        for seed in UInt64(1)...40 {
            let a = evaluate(seed: seed, on: true)
            #expect(a.fires == evaluate(seed: seed, on: true).fires, "seed \(seed) replays its fault points")
            #expect(Set(a.enabled.keys) == ["test.alpha", "test.beta", "test.gamma"])
            enabledCounts += a.enabled.values.filter { $0 }.count
            for (name, on) in a.enabled where !on { #expect(!a.fires.contains { $0.hasPrefix(String(name.dropFirst(5))) }, "a disabled point never fires") }
            anyFired = anyFired || !a.fires.isEmpty
            let total = a.summary.split(separator: ",").compactMap { $0.split(separator: "×").last.flatMap { Int($0) } }.reduce(0, +)
            #expect(total == a.fires.count, "the summary counts every fire: \(a.summary)")
        }
        // About a quarter of 120 (seed, point) pairs are enabled.
        #expect((10...55).contains(enabledCounts), "\(enabledCounts) of 120 enabled")
        #expect(anyFired)
    }
}
