import CisternCore
import CisternSim
import Testing

@Suite struct FreshRandomTests {
    /// The first draws of three `freshRandom` streams and of two `random` streams of
    /// one label, in a world of `seed`.
    func draws(_ seed: UInt64) -> [UInt64] {
        SimWorld.simulate(seed: seed) { world -> [UInt64] in
            let p = world.start(world.addNode(name: "a", host: "10.0.0.1"))
            let rt = p.runtime!
            var out: [UInt64] = []
            for _ in 0..<3 {
                var r = rt.freshRandom("kv.retry")
                out.append(r.next())
            }
            for _ in 0..<2 {
                var r = rt.random("kv.retry")
                out.append(r.next())
            }
            return out
        }
    }

    @Test func everyCallGetsItsOwnStreamAndRunsReplayThem() {
        let a = draws(3)
        #expect(Set(a[0..<3]).count == 3, "fresh streams of one label must differ (concurrent retries would back off in lockstep): \(a)")
        #expect(a[3] == a[4], "random(label) stays one stream")
        #expect(!a[0..<3].contains(a[3]), "a fresh stream is not the plain one")
        #expect(draws(3) == a, "the same seed gives the same fresh streams")
        #expect(draws(4) != a)
    }
}
