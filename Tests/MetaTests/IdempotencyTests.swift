import CisternCore
import CisternMeta
import CisternSim
import Testing

final class Outcomes: @unchecked Sendable {
    var lines: [String] = []
}

@Suite struct IdempotencyTests {
    @Test func retriedRemovesAndRenamesApplyOnceWhenCommitsAreMaybeCommitted() {
        var kv = KVConfig()
        kv.maybeCommittedProbability = 0.5
        for seed in UInt64(1)...10 {
            let out = SimWorld.simulate(seed: seed, kv: kv) { world -> Outcomes in
                let out = Outcomes()
                let n = world.addNode(name: "meta", host: "10.0.0.1")
                let p = world.start(n)
                let m = MetaService(kv: p.kv, runtime: p.runtime, policy: LayoutPolicy(table: 1, tableVersion: 1, chains: []))
                world.spawn {
                    do {
                        _ = try await m.mkdir("/d", client: 1, request: 1)
                        _ = try await m.create("/d/f", client: 1, request: 2)
                        try await m.rename("/d/f", "/d/g", client: 1, request: 3)
                        try await m.remove("/d/g", client: 1, request: 4)
                        // The same request again (a client retry after a lost reply).
                        try await m.remove("/d/g", client: 1, request: 4)
                        let left = try await m.list("/d")
                        out.lines.append("ok \(left.count)")
                    } catch {
                        out.lines.append("failed: \(error)")
                    }
                }
                world.run(untilNanoseconds: 600_000_000_000)
                return out
            }
            #expect(out.lines == ["ok 0"], "seed \(seed): \(out.lines)")
        }
    }
}
