import CisternCore
import CisternRouting
import CisternStorage
import Testing

private let a = TargetID(1)
private let b = TargetID(2)
/// Every public state a target can have in routing, and "not in routing" (nil).
private let everyState: [PublicState?] = [nil] + PublicState.allCases.map { Optional($0) }

private func states(_ sa: PublicState?, _ sb: PublicState?) -> [TargetID: PublicState] {
    var out: [TargetID: PublicState] = [:]
    if let sa { out[a] = sa }
    if let sb { out[b] = sb }
    return out
}

private func isOutOfChain(_ s: PublicState?) -> Bool { s == .offline || s == .lastsrv }

@Suite struct TargetRecoveryTests {
    @Test func aFreshNodeReportsEveryTargetUpToDateAndServes() {
        var r = TargetRecovery(targets: [b, a], restarted: false)
        #expect(r.targets == [a, b])
        #expect(!r.recovering)
        let got1 = r.observe(nil)
        #expect(got1 == .report(recovered: false))
        #expect(r.local == [a: .upToDate, b: .upToDate])
    }

    /// Every pair of states: a restarted node waits, without heartbeating, until each
    /// of its targets is offline, LASTSRV or absent from routing, and then reports
    /// every target ONLINE (its data may be behind).
    @Test(arguments: everyState, everyState)
    func aRestartedNodeRecoversOnlyOnceEveryTargetIsOutOfItsChain(sa: PublicState?, sb: PublicState?) {
        var r = TargetRecovery(targets: [a, b], restarted: true)
        let got2 = r.observe(nil)
        #expect(got2 == .waitForOffline, "no routing yet")
        let mayRecover = [sa, sb].allSatisfy { $0 == nil || isOutOfChain($0) }
        let step = r.observe(states(sa, sb))
        if mayRecover {
            #expect(step == .report(recovered: true))
            #expect(!r.recovering)
            #expect(r.local == [a: .online, b: .online])
        } else {
            #expect(step == .waitForOffline)
            #expect(r.recovering)
            #expect(r.local == [a: .online, b: .online])
        }
    }

    /// Every pair of states for a running node with healthy targets: one found out of
    /// its chain makes the node start over; otherwise each target's local state
    /// follows its public state.
    @Test(arguments: everyState, everyState)
    func aRunningNodeStartsOverWhenAHealthyTargetLeftItsChain(sa: PublicState?, sb: PublicState?) {
        var r = TargetRecovery(targets: [a, b], restarted: false)
        let step = r.observe(states(sa, sb))
        if isOutOfChain(sa) || isOutOfChain(sb) {
            #expect(step == .startedOver)
            #expect(r.recovering)
            #expect(r.local == [a: .online, b: .online])
            #expect(r.syncDone.isEmpty)
            return
        }
        #expect(step == .report(recovered: false))
        for (t, s) in [(a, sa), (b, sb)] {
            switch s {
            case .serving?: #expect(r.local[t] == .upToDate)
            case .syncing?: #expect(r.local[t] == .online, "\(t) has not finished a sync")
            case .waiting?: #expect(r.local[t] == .online)
            default: #expect(r.local[t] == .upToDate, "\(t) absent from routing keeps its state")
            }
        }
    }

    @Test func aSyncingTargetIsUpToDateOnlyAfterItsSyncFinishesAndForgetsItWhenSentBack() {
        var r = TargetRecovery(targets: [a], restarted: true)
        let got3 = r.observe([a: .offline])
        #expect(got3 == .report(recovered: true))
        #expect(!r.needsSync(a, state: .waiting))
        let got4 = r.observe([a: .syncing])
        #expect(got4 == .report(recovered: false))
        #expect(r.local[a] == .online)
        #expect(r.needsSync(a, state: .syncing))
        r.syncFinished(a)
        #expect(r.local[a] == .upToDate && r.syncDone == [a])
        #expect(!r.needsSync(a, state: .syncing))
        let got5 = r.observe([a: .syncing])
        #expect(got5 == .report(recovered: false))
        #expect(r.local[a] == .upToDate, "a finished sync holds while the manager catches up")
        // Sent back to waiting (its chain changed): the finished sync no longer counts.
        let got6 = r.observe([a: .waiting])
        #expect(got6 == .report(recovered: false))
        #expect(r.local[a] == .online && r.syncDone.isEmpty)
        let got7 = r.observe([a: .syncing])
        #expect(got7 == .report(recovered: false))
        #expect(r.local[a] == .online)
        r.syncFinished(a)
        let got8 = r.observe([a: .serving])
        #expect(got8 == .report(recovered: false))
        #expect(r.local[a] == .upToDate)
    }

    @Test func aSyncThatFinishesWhileRecoveringOrOutOfServiceIsIgnored() {
        var r = TargetRecovery(targets: [a, b], restarted: true)
        r.syncFinished(a)
        #expect(r.local[a] == .online && r.syncDone.isEmpty)
        #expect(!r.needsSync(a, state: .syncing), "no sync while recovering")
        _ = r.observe([a: .offline, b: .offline])
        r.commitFailed(b, reason: "disk gone", nowNanoseconds: 5)
        r.syncFinished(b)
        #expect(r.local[b] == .offline && !r.syncDone.contains(b))
        #expect(!r.needsSync(b, state: .syncing))
        // An unknown target changes nothing.
        r.syncFinished(TargetID(99))
        r.commitFailed(TargetID(99), reason: "x", nowNanoseconds: 1)
        #expect(r.local.count == 2 && r.failed.count == 1)
    }

    @Test func aFailedTargetIsOutOfServiceWithoutRestartingTheNodeAndRejoinsAfterAGoodProbe() {
        let interval: UInt64 = 1_000
        var r = TargetRecovery(targets: [a, b], restarted: false)
        r.commitFailed(a, reason: "commit of c1 failed: EIO", nowNanoseconds: 100)
        #expect(r.local[a] == .offline)
        #expect(r.outOfService(a) == "commit of c1 failed: EIO")
        #expect(r.outOfService(b) == nil)
        // Still in its chain: reported OFFLINE, not probed, and the node keeps serving b.
        #expect(r.probeCandidates([a: .serving, b: .serving]) == [])
        let got9 = r.observe([a: .serving, b: .serving])
        #expect(got9 == .report(recovered: false))
        #expect(r.local == [a: .offline, b: .upToDate])
        // Out of its chain (or of routing): a candidate; its OFFLINE does not restart the node.
        let got10 = r.observe([a: .offline, b: .serving])
        #expect(got10 == .report(recovered: false))
        #expect(r.probeCandidates([a: .offline, b: .serving]) == [a])
        #expect(r.probeCandidates(nil) == [a])
        let got11 = r.startProbe(a, nowNanoseconds: 100 + interval - 1, intervalNanoseconds: interval)
        #expect(got11 == nil, "not due yet")
        let got12 = r.startProbe(b, nowNanoseconds: 10_000, intervalNanoseconds: interval)
        #expect(got12 == nil, "b is healthy")
        // A probe that finds the disk still broken: due again an interval after it began.
        let p1 = r.startProbe(a, nowNanoseconds: 1_100, intervalNanoseconds: interval)
        #expect(p1?.target == a && p1?.reason == "commit of c1 failed: EIO" && p1?.startedNanoseconds == 1_100)
        let got13 = r.finishProbe(p1!, diskWorks: false)
        #expect(got13 == false)
        let got14 = r.startProbe(a, nowNanoseconds: 2_099, intervalNanoseconds: interval)
        #expect(got14 == nil)
        let p2 = r.startProbe(a, nowNanoseconds: 2_100, intervalNanoseconds: interval)!
        let got15 = r.finishProbe(p2, diskWorks: true)
        #expect(got15)
        #expect(r.outOfService(a) == nil && r.rejoining == [a] && r.local[a] == .online)
        // A sync from before the failure that reports now does not count.
        r.syncFinished(a)
        #expect(r.local[a] == .online && r.syncDone.isEmpty)
        // Rejoining: OFFLINE or LASTSRV is expected and does not restart the node.
        let got16 = r.observe([a: .lastsrv, b: .serving])
        #expect(got16 == .report(recovered: false))
        #expect(r.local[a] == .online)
        let got17 = r.observe([a: .syncing, b: .serving])
        #expect(got17 == .report(recovered: false))
        #expect(r.rejoining.isEmpty, "taken back by the manager")
        #expect(r.needsSync(a, state: .syncing))
        r.syncFinished(a)
        let got18 = r.observe([a: .serving, b: .serving])
        #expect(got18 == .report(recovered: false))
        #expect(r.local == [a: .upToDate, b: .upToDate])
        // Back in service, a later OFFLINE means the node was cut off: it starts over.
        let got19 = r.observe([a: .offline, b: .serving])
        #expect(got19 == .startedOver)
    }

    @Test func aProbeOvertakenByANewFailureDoesNotClearIt() {
        var r = TargetRecovery(targets: [a], restarted: false)
        r.commitFailed(a, reason: "EIO", nowNanoseconds: 0)
        let probe = r.startProbe(a, nowNanoseconds: 10, intervalNanoseconds: 10)!
        r.commitFailed(a, reason: "EIO", nowNanoseconds: 15)  // same words, later failure
        let got20 = r.finishProbe(probe, diskWorks: true)
        #expect(got20 == false)
        #expect(r.outOfService(a) == "EIO" && r.rejoining.isEmpty)
        // A probe overtaken by a later probe does not count either.
        let older = r.startProbe(a, nowNanoseconds: 30, intervalNanoseconds: 10)!
        let newer = r.startProbe(a, nowNanoseconds: 40, intervalNanoseconds: 10)!
        let got21 = r.finishProbe(older, diskWorks: true)
        #expect(got21 == false)
        let got22 = r.finishProbe(newer, diskWorks: true)
        #expect(got22)
    }

    /// Random rounds of routing states, finished syncs, failures and probes: whatever
    /// the order, a target is reported UPTODATE only when serving or after a finished
    /// sync, a failed target is always reported OFFLINE, and a recovering node never
    /// heartbeats.
    @Test(arguments: 1...40)
    func invariantsHoldOverRandomHistories(seed: UInt64) {
        var rng = DeterministicRandom(seed: seed)
        let targets = [a, b, TargetID(3)]
        var r = TargetRecovery(targets: targets, restarted: rng.next() % 2 == 0)
        var now: UInt64 = 0
        var probes: [TargetRecovery.Probe] = []
        for _ in 0..<400 {
            now += rng.next() % 50
            let t = targets[Int(rng.next() % 3)]
            switch rng.next() % 6 {
            case 0: r.syncFinished(t)
            case 1: if rng.next() % 4 == 0 { r.commitFailed(t, reason: "EIO \(rng.next() % 2)", nowNanoseconds: now) }
            case 2: if let p = r.startProbe(t, nowNanoseconds: now, intervalNanoseconds: 100) { probes.append(p) }
            case 3:
                if !probes.isEmpty {
                    let p = probes.remove(at: Int(rng.next() % UInt64(probes.count)))
                    _ = r.finishProbe(p, diskWorks: rng.next() % 3 != 0)
                }
            default:
                var s: [TargetID: PublicState]? = rng.next() % 10 == 0 ? nil : [:]
                if s != nil {
                    for t in targets {
                        let pick = Int(rng.next() % UInt64(everyState.count))
                        if let st = everyState[pick] { s![t] = st }
                    }
                }
                let wasRecovering = r.recovering
                let step = r.observe(s)
                if wasRecovering { #expect(step != .startedOver) }
                guard case .report = step else {
                    #expect(r.recovering)
                    continue
                }
                #expect(!r.recovering)
                for t in targets {
                    if r.failed[t] != nil {
                        #expect(r.local[t] == .offline)
                        #expect(!r.needsSync(t, state: s?[t]))
                    } else if r.local[t] == .upToDate, let st = s?[t] {
                        #expect(st == .serving || (st == .syncing && r.syncDone.contains(t)),
                                "seed \(seed): \(t) reported up to date while \(st.description), rejoining \(r.rejoining.contains(t))")
                    }
                    #expect(!(r.rejoining.contains(t) && r.failed[t] != nil))
                }
            }
        }
    }
}
