import CisternCore
import Testing

@Suite struct RetryPolicyTests {
    /// Every attempt number up to past the point where doubling would overflow: no
    /// wait before the first, then first × 2^(n-1), never above the cap, never falling.
    @Test(arguments: [(UInt64(1), UInt64(1)), (1, 500), (10_000_000, 500_000_000), (40_000_000, 320_000_000), (3, .max), (.max / 2, .max), (0, 100)])
    func delaysDoubleFromTheFirstUpToTheCap(first: UInt64, cap: UInt64) {
        let p = RetryPolicy(attemptsMax: 100, firstDelayNanoseconds: first, delayNanosecondsMax: cap)
        #expect(p.delayNanoseconds(beforeAttempt: 0) == 0)
        var previous: UInt64 = 0
        for attempt in 1...100 {
            let d = p.delayNanoseconds(beforeAttempt: attempt)
            // A first delay of 0 means no waits at all.
            let exact = first == 0 ? 0 : attempt - 1 <= first.leadingZeroBitCount ? first << UInt64(attempt - 1) : UInt64.max
            #expect(d == min(exact, cap), "attempt \(attempt)")
            #expect(d >= previous && d <= cap)
            previous = d
        }
    }

    @Test func theLoopsOldWaitsAreKept() {
        // StorageClient's: 40, 80, 160, 320, 320 ms.
        let storage = RetryPolicy(attemptsMax: 80, firstDelayNanoseconds: 40_000_000, delayNanosecondsMax: 320_000_000)
        #expect((1...6).map { storage.delayNanoseconds(beforeAttempt: $0) / 1_000_000 } == [40, 80, 160, 320, 320, 320])
        // A fixed policy waits the same before every retry.
        let fixed = RetryPolicy.fixed(attemptsMax: 40, delayNanoseconds: 100_000_000)
        #expect((1...40).allSatisfy { fixed.delayNanoseconds(beforeAttempt: $0) == 100_000_000 })
        #expect(fixed.attempts == 0..<40)
    }

    @Test func jitteredWaitsLieBetweenHalfTheDelayAndAllOfItAndFollowTheSeed() {
        let p = RetryPolicy(attemptsMax: 12, firstDelayNanoseconds: 1_000_000, delayNanosecondsMax: 500_000_000, jitter: true)
        var a = DeterministicRandom(seed: 7)
        var b = DeterministicRandom(seed: 7)
        var seen: Set<UInt64> = []
        for attempt in 1..<12 {
            let plain = p.delayNanoseconds(beforeAttempt: attempt)
            for _ in 0..<50 {
                let d = p.delayNanoseconds(beforeAttempt: attempt, using: &a)
                #expect(d >= plain / 2 && d <= plain, "attempt \(attempt): \(d) outside [\(plain / 2), \(plain)]")
                #expect(d == p.delayNanoseconds(beforeAttempt: attempt, using: &b))
                seen.insert(d)
            }
        }
        #expect(seen.count > 100, "jitter draws different waits")
        // Without jitter the generator is not consulted.
        var c = DeterministicRandom(seed: 7)
        let plain = RetryPolicy(attemptsMax: 3, firstDelayNanoseconds: 8, delayNanosecondsMax: 8)
        #expect(plain.delayNanoseconds(beforeAttempt: 2, using: &c) == 8)
        var fresh = DeterministicRandom(seed: 7)
        #expect(c.next() == fresh.next())
    }

    @Test func boundsAreClamped() {
        var p = RetryPolicy(attemptsMax: 0, firstDelayNanoseconds: 900, delayNanosecondsMax: 100)
        #expect(p.attemptsMax == 1 && p.attempts == 0..<1)
        #expect(p.firstDelayNanoseconds == 100)
        p.attemptsMax = -5
        #expect(p.attemptsMax == 1)
        p.attemptsMax = 7
        #expect(p.attempts.count == 7)
        #expect("\(RetryPolicy(attemptsMax: 12, firstDelayNanoseconds: 20_000_000, delayNanosecondsMax: 1_000_000_000))" == "12 attempts, waits from 20 ms doubling to 1000 ms")
    }
}
