import CisternCore
import CisternMgmtd
import Testing

@Suite struct LeaseTrackerTests {
    let a = NodeID(1), b = NodeID(2)
    let second: UInt64 = 1_000_000_000

    @Test func absentLeaseIsAcquired() {
        var t = LeaseTracker(me: a, durationNanoseconds: 4 * second, marginNanoseconds: second / 2)
        #expect(t.decide(current: nil, now: 0) == .write(LeaseRecord(holder: a, epoch: 1, renewal: 0, durationNanoseconds: 4 * second), acquired: true))
    }

    @Test func ownLeaseIsRenewedInTheSameEpoch() {
        var t = LeaseTracker(me: a, durationNanoseconds: 4 * second, marginNanoseconds: second / 2)
        let mine = LeaseRecord(holder: a, epoch: 7, renewal: 3, durationNanoseconds: 4 * second)
        #expect(t.decide(current: mine, now: 10 * second) == .write(LeaseRecord(holder: a, epoch: 7, renewal: 4, durationNanoseconds: 4 * second), acquired: false))
    }

    @Test func liveLeaseOfAnotherIsRespectedUntilItStaysUnchangedForDurationPlusMargin() {
        var t = LeaseTracker(me: b, durationNanoseconds: 4 * second, marginNanoseconds: second / 2)
        let theirs = LeaseRecord(holder: a, epoch: 3, renewal: 9, durationNanoseconds: 4 * second)
        #expect(t.decide(current: theirs, now: 100 * second) == .wait(holder: a))
        #expect(t.decide(current: theirs, now: 104 * second) == .wait(holder: a))
        // A renewal restarts the clock.
        var renewed = theirs
        renewed.renewal += 1
        #expect(t.decide(current: renewed, now: 104 * second + 400_000_000) == .wait(holder: a))
        #expect(t.decide(current: renewed, now: 108 * second + 800_000_000) == .wait(holder: a))
        #expect(t.decide(current: renewed, now: 108 * second + 900_000_000) == .write(LeaseRecord(holder: b, epoch: 4, renewal: 0, durationNanoseconds: 4 * second), acquired: true))
    }

    @Test func holderValidityEndsBeforeAnyTakeover() {
        // The holder began its last renewal at r; a competitor first sees that record
        // no earlier than r, and takes over no earlier than that + duration + margin.
        let duration = 4 * second, margin = second / 2
        let holder = LeaseTracker(me: a, durationNanoseconds: duration, marginNanoseconds: margin)
        for r in stride(from: UInt64(0), to: 20 * second, by: 333_000_000) {
            let earliestTakeover = r + duration + margin
            #expect(holder.validUntil(renewalStart: r) + 2 * margin <= earliestTakeover)
        }
    }
}
