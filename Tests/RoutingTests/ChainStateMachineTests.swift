import CisternCore
import CisternRouting
import Testing

// MARK: - Helpers

/// A chain of targets 1...n with the given public states, in that order.
private func chain(_ states: [PublicState], version: UInt64 = 7) -> Chain {
    Chain(
        id: ChainID(1), version: version,
        targets: states.enumerated().map { ChainTarget(TargetID(UInt64($0.offset + 1)), $0.element) })
}

/// The local-state map for targets 1...n.
private func locals(_ states: [LocalState]) -> [TargetID: LocalState] {
    var m: [TargetID: LocalState] = [:]
    for (i, s) in states.enumerated() { m[TargetID(UInt64(i + 1))] = s }
    return m
}

/// `next` of the chain 1...n with states `old` under local states `local`, as
/// (target raw id, new state) pairs in the new order.
private func step(_ old: [PublicState], _ local: [LocalState]) -> [Pair] {
    ChainStateMachine.next(chain(old), local: locals(local)).targets.map { Pair($0.target.rawValue, $0.state) }
}

private struct Pair: Equatable, CustomStringConvertible {
    var id: UInt64
    var state: PublicState
    init(_ id: UInt64, _ state: PublicState) {
        self.id = id
        self.state = state
    }
    var description: String { "\(id):\(state)" }
}

/// The new state of target `id` after `step(old, local)`.
private func after(_ old: [PublicState], _ local: [LocalState], target id: UInt64) -> PublicState? {
    step(old, local).first { $0.id == id }?.state
}

private func rank(_ s: PublicState) -> Int { Int(s.rawValue) }

@Suite struct ChainStateMachineTableTests {
    // serving
    @Test func servingUpToDateStaysServing() { #expect(after([.serving], [.upToDate], target: 1) == .serving) }
    @Test func servingOnlineStaysServing() { #expect(after([.serving], [.online], target: 1) == .serving) }
    @Test func servingOfflineWithAnotherServingGoesOffline() {
        #expect(step([.serving, .serving], [.offline, .upToDate]) == [Pair(2, .serving), Pair(1, .offline)])
    }
    @Test func lastServingOfflineBecomesLastsrv() { #expect(after([.serving], [.offline], target: 1) == .lastsrv) }
    @Test func lastServingOfflineWithWaitingOthersBecomesLastsrv() {
        #expect(step([.serving, .waiting, .offline], [.offline, .online, .offline])
            == [Pair(2, .waiting), Pair(1, .lastsrv), Pair(3, .offline)])
    }
    @Test func allServingOfflineAtOnceFirstBecomesLastsrvOthersOffline() {
        #expect(step([.serving, .serving, .serving], [.offline, .offline, .offline])
            == [Pair(1, .lastsrv), Pair(2, .offline), Pair(3, .offline)])
    }
    @Test func lastsrvGoesToFirstServingInChainOrderNotLowestID() {
        let c = Chain(id: ChainID(1), version: 1, targets: [ChainTarget(TargetID(3), .serving), ChainTarget(TargetID(1), .serving)])
        let n = ChainStateMachine.next(c, local: [:])
        #expect(n.targets == [ChainTarget(TargetID(3), .lastsrv), ChainTarget(TargetID(1), .offline)])
    }
    @Test func servingOfflineWithExistingLastsrvGoesOffline() {
        #expect(after([.serving, .lastsrv], [.offline, .offline], target: 1) == .offline)
    }
    @Test func servingOfflineWhileSyncingCompletesGoesOffline() {
        #expect(step([.serving, .syncing], [.offline, .upToDate]) == [Pair(2, .serving), Pair(1, .offline)])
    }
    @Test func servingOfflineWhileLastsrvReturnsGoesOffline() {
        #expect(step([.serving, .lastsrv], [.offline, .online]) == [Pair(2, .serving), Pair(1, .offline)])
    }
    @Test func servingOfflineWhileSyncingStillOnlineBecomesLastsrvAndSyncingWaits() {
        #expect(step([.serving, .syncing], [.offline, .online]) == [Pair(2, .waiting), Pair(1, .lastsrv)])
    }

    // syncing
    @Test func syncingUpToDateBecomesServing() {
        #expect(step([.serving, .syncing], [.upToDate, .upToDate]) == [Pair(1, .serving), Pair(2, .serving)])
    }
    @Test func syncingOnlineWithServingStaysSyncing() {
        #expect(after([.serving, .syncing], [.upToDate, .online], target: 2) == .syncing)
    }
    @Test func syncingOnlineWithoutServingWaits() {
        #expect(after([.syncing, .offline], [.online, .offline], target: 1) == .waiting)
    }
    @Test func syncingOfflineGoesOffline() {
        #expect(step([.serving, .syncing], [.upToDate, .offline]) == [Pair(1, .serving), Pair(2, .offline)])
    }

    // waiting
    @Test func waitingUpToDateStaysWaitingEvenWithServing() {
        #expect(after([.serving, .waiting], [.upToDate, .upToDate], target: 2) == .waiting)
    }
    @Test func waitingOnlineWithServingAndNoSyncingStartsSyncing() {
        #expect(step([.serving, .waiting], [.upToDate, .online]) == [Pair(1, .serving), Pair(2, .syncing)])
    }
    @Test func waitingOnlineWithAnotherSyncingKeepsWaiting() {
        #expect(step([.serving, .syncing, .waiting], [.upToDate, .online, .online])
            == [Pair(1, .serving), Pair(2, .syncing), Pair(3, .waiting)])
    }
    @Test func waitingOnlineStartsSyncingWhenTheSyncingTargetFinishes() {
        #expect(step([.serving, .syncing, .waiting], [.upToDate, .upToDate, .online])
            == [Pair(1, .serving), Pair(2, .serving), Pair(3, .syncing)])
    }
    @Test func waitingOnlineStartsSyncingWhenTheSyncingTargetFails() {
        #expect(step([.serving, .syncing, .waiting], [.upToDate, .offline, .online])
            == [Pair(1, .serving), Pair(3, .syncing), Pair(2, .offline)])
    }
    @Test func waitingOnlineWithoutServingKeepsWaiting() {
        #expect(after([.lastsrv, .waiting], [.offline, .online], target: 2) == .waiting)
    }
    @Test func waitingOnlineStartsSyncingWhenLastsrvReturns() {
        #expect(step([.waiting, .lastsrv], [.online, .online]) == [Pair(2, .serving), Pair(1, .syncing)])
    }
    @Test func waitingOfflineGoesOffline() { #expect(after([.serving, .waiting], [.upToDate, .offline], target: 2) == .offline) }

    // lastsrv
    @Test func lastsrvUpToDateBecomesServing() { #expect(after([.lastsrv], [.upToDate], target: 1) == .serving) }
    @Test func lastsrvOnlineBecomesServing() { #expect(after([.lastsrv], [.online], target: 1) == .serving) }
    @Test func lastsrvOfflineStaysLastsrv() { #expect(after([.waiting, .lastsrv], [.online, .offline], target: 2) == .lastsrv) }

    // offline
    @Test func offlineUpToDateWaits() { #expect(after([.serving, .offline], [.upToDate, .upToDate], target: 2) == .waiting) }
    @Test func offlineOnlineWaits() { #expect(after([.serving, .offline], [.upToDate, .online], target: 2) == .waiting) }
    @Test func offlineOfflineStaysOffline() { #expect(after([.serving, .offline], [.upToDate, .offline], target: 2) == .offline) }
    @Test func missingLocalStateCountsAsOffline() {
        let n = ChainStateMachine.next(chain([.serving, .serving]), local: [TargetID(2): .upToDate, TargetID(99): .online])
        #expect(n.targets == [ChainTarget(TargetID(2), .serving), ChainTarget(TargetID(1), .offline)])
    }

    // one syncing
    @Test func firstOfSeveralWaitingCandidatesSyncs() {
        #expect(step([.serving, .waiting, .waiting], [.upToDate, .online, .online])
            == [Pair(1, .serving), Pair(2, .syncing), Pair(3, .waiting)])
    }
    @Test func existingSyncingWinsOverEarlierWaiting() {
        #expect(step([.serving, .waiting, .syncing], [.upToDate, .online, .online])
            == [Pair(1, .serving), Pair(3, .syncing), Pair(2, .waiting)])
    }
    @Test func ofSeveralSyncingOnlyTheFirstStaysSyncing() {
        #expect(step([.serving, .syncing, .syncing], [.upToDate, .online, .online])
            == [Pair(1, .serving), Pair(2, .syncing), Pair(3, .waiting)])
    }

    // order and version
    @Test func offlineTargetMovesToTheEnd() {
        #expect(step([.serving, .serving, .serving], [.offline, .upToDate, .upToDate])
            == [Pair(2, .serving), Pair(3, .serving), Pair(1, .offline)])
    }
    @Test func recoveringTargetRejoinsAfterTheServingTail() {
        #expect(step([.serving, .waiting, .serving], [.upToDate, .online, .upToDate])
            == [Pair(1, .serving), Pair(3, .serving), Pair(2, .syncing)])
    }
    @Test func orderIsServingSyncingWaitingLastsrvOfflineKeepingRelativeOrder() {
        let c = Chain(id: ChainID(1), version: 1, targets: [
            ChainTarget(TargetID(1), .offline), ChainTarget(TargetID(2), .serving), ChainTarget(TargetID(3), .waiting),
            ChainTarget(TargetID(4), .serving), ChainTarget(TargetID(5), .syncing), ChainTarget(TargetID(6), .offline),
        ])
        let n = ChainStateMachine.next(c, local: [
            TargetID(1): .offline, TargetID(2): .upToDate, TargetID(3): .online,
            TargetID(4): .online, TargetID(5): .online, TargetID(6): .offline,
        ])
        #expect(n.targets.map(\.target.rawValue) == [2, 4, 5, 3, 1, 6])
        #expect(n.targets.map(\.state) == [.serving, .serving, .syncing, .waiting, .offline, .offline])
    }
    @Test func versionBumpsByOneWhenTheListChanges() {
        let n = ChainStateMachine.next(chain([.serving, .serving], version: 41), local: locals([.upToDate, .offline]))
        #expect(n.version == 42)
        #expect(n.id == ChainID(1))
    }
    @Test func unchangedChainIsReturnedUnchanged() {
        let c = chain([.serving, .syncing, .offline], version: 9)
        #expect(ChainStateMachine.next(c, local: locals([.online, .online, .offline])) == c)
    }
    @Test func reorderOnlyStillBumpsVersion() {
        // Same states, different order: the list changed.
        let c = chain([.offline, .serving], version: 3)
        let n = ChainStateMachine.next(c, local: locals([.offline, .upToDate]))
        #expect(n.targets == [ChainTarget(TargetID(2), .serving), ChainTarget(TargetID(1), .offline)])
        #expect(n.version == 4)
    }
    @Test func emptyChainIsUnchanged() {
        let c = Chain(id: ChainID(5), version: 2, targets: [])
        #expect(ChainStateMachine.next(c, local: [:]) == c)
    }
}

// MARK: - Exhaustive

/// Precomputed inputs for chains of targets 1...n.
private struct Inputs {
    let n: Int
    /// Every combination of local states, as arrays indexed by target id - 1.
    let combos: [[LocalState]]
    /// The same combinations as `next`'s argument.
    let maps: [[TargetID: LocalState]]

    init(n: Int) {
        self.n = n
        var combos: [[LocalState]] = [[]]
        for _ in 0..<n { combos = combos.flatMap { c in LocalState.allCases.map { c + [$0] } } }
        self.combos = combos
        maps = combos.map(locals)
    }
}

/// Checks every property of one transition that holds for ANY input chain
/// (records an issue per broken property; returns whether all held).
private func checkGeneral(_ old: Chain, _ new: Chain, _ local: [LocalState]) -> Bool {
    var ok = true
    func fail(_ what: String) {
        Issue.record("\(what): \(old) --\(local)--> \(new)")
        ok = false
    }
    let n = local.count
    // Same ids.
    if new.targets.count != n || Set(new.targets.map(\.target)) != Set(old.targets.map(\.target)) { fail("ids changed") }
    if new.id != old.id { fail("chain id changed") }
    // Version bumps iff the list changed.
    if new.targets == old.targets {
        if new.version != old.version { fail("version changed without a change") }
    } else if new.version != old.version + 1 {
        fail("version did not bump by one")
    }
    var syncing = 0
    var serving = 0
    var lastsrv = 0
    var oldHadData = false
    var prev = 0
    var oldState = [PublicState](repeating: .offline, count: n)
    for t in old.targets {
        oldState[Int(t.target.rawValue) - 1] = t.state
        if t.state == .serving || t.state == .lastsrv { oldHadData = true }
    }
    for t in new.targets {
        let i = Int(t.target.rawValue) - 1
        if rank(t.state) < prev { fail("order") }
        prev = rank(t.state)
        switch t.state {
        case .serving:
            serving += 1
            let from = oldState[i]
            if !(from == .serving || from == .lastsrv || (from == .syncing && local[i] == .upToDate)) {
                fail("target \(i + 1) became serving from \(from) with local \(local[i])")
            }
        case .syncing: syncing += 1
        case .lastsrv: lastsrv += 1
        case .waiting, .offline: break
        }
        if local[i] == .offline && (t.state == .serving || t.state == .syncing) { fail("offline target \(i + 1) is \(t.state)") }
    }
    if syncing > 1 { fail("more than one syncing") }
    if oldHadData && serving + lastsrv == 0 { fail("latest data disappeared") }
    return ok
}

/// Properties that hold on chains reachable from an all-serving chain.
private func checkReachable(_ new: Chain) -> Bool {
    let serving = new.targets.count { $0.state == .serving }
    let lastsrv = new.targets.count { $0.state == .lastsrv }
    if lastsrv > 1 || (lastsrv == 1 && serving > 0) {
        Issue.record("lastsrv invariant broken: \(new)")
        return false
    }
    return true
}

@Suite struct ChainStateMachineExhaustiveTests {
    /// BFS over every chain reachable from an all-serving chain under every
    /// combination of local states, checking every transition.
    @Test(arguments: 1...4)
    func reachableStatesKeepTheInvariants(n: Int) {
        let inputs = Inputs(n: n)
        let start = chain([PublicState](repeating: .serving, count: n), version: 1)
        var seen: Set<[ChainTarget]> = [start.targets]
        var queue: [Chain] = [start]
        var head = 0
        var transitions = 0
        var maxSteps = 0
        while head < queue.count {
            let old = queue[head]
            head += 1
            #expect(checkReachable(old))
            for (c, local) in inputs.combos.enumerated() {
                let map = inputs.maps[c]
                let new = ChainStateMachine.next(old, local: map)
                transitions += 1
                guard checkGeneral(old, new, local), checkReachable(new) else { return }
                // Fixpoint under fixed local states within 4 changing steps.
                var cur = new
                var steps = new == old ? 0 : 1
                while steps <= 4 {
                    let again = ChainStateMachine.next(cur, local: map)
                    if again == cur { break }
                    guard checkGeneral(cur, again, local), checkReachable(again) else { return }
                    cur = again
                    steps += 1
                }
                if steps > 4 {
                    Issue.record("no fixpoint within 4 steps from \(old) under \(local)")
                    return
                }
                maxSteps = max(maxSteps, steps)
                if seen.insert(new.targets).inserted {
                    var v = new
                    v.version = 1
                    queue.append(v)
                }
            }
        }
        // Pinned, so that a rule change is noticed: the number of reachable
        // chains (orders and states) and the longest run to a fixpoint
        // (offline -> waiting -> syncing).
        #expect(transitions == seen.count * inputs.combos.count)
        #expect(seen.count == [2, 12, 72, 480][n - 1])
        #expect(maxSteps == (n == 1 ? 1 : 2))
        // Every public state occurs among the reachable chains (n >= 2).
        if n >= 2 {
            let states = Set(seen.flatMap { $0.map(\.state) })
            #expect(states == Set(PublicState.allCases))
        }
    }

    /// Every combination of old public states (5^n, reachable or not) under
    /// every combination of local states: no crash, same target ids, and the
    /// properties that hold for any input.
    @Test(arguments: 1...4)
    func everyStateCombinationIsHandled(n: Int) {
        let inputs = Inputs(n: n)
        var olds: [[PublicState]] = [[]]
        for _ in 0..<n { olds = olds.flatMap { o in PublicState.allCases.map { o + [$0] } } }
        var checked = 0
        for states in olds {
            let old = chain(states, version: 1)
            for (c, local) in inputs.combos.enumerated() {
                let new = ChainStateMachine.next(old, local: inputs.maps[c])
                checked += 1
                guard checkGeneral(old, new, local) else { return }
                // Any chain settles too under fixed local states, after at
                // most two changes (the documented bound; 4 is the brief's).
                var cur = new
                var changes = new == old ? 0 : 1
                while changes <= 4 {
                    let again = ChainStateMachine.next(cur, local: inputs.maps[c])
                    if again == cur { break }
                    cur = again
                    changes += 1
                }
                if changes > 2 {
                    Issue.record("no fixpoint after 2 changes from \(old) under \(local)")
                    return
                }
            }
        }
        #expect(checked == olds.count * inputs.combos.count)
    }
}

// MARK: - Randomized data safety

@Suite struct ChainStateMachineDataSafetyTests {
    private struct Model {
        var chain: Chain
        var local: [LocalState]
        /// Writes each target holds.
        var data: [Int]
        var acked = 0
        var rejected = 0
        var sawLastsrv = false
        var sawSyncDone = false

        init(targets n: Int) {
            chain = Chain(
                id: ChainID(1), version: 1,
                targets: (1...n).map { ChainTarget(TargetID(UInt64($0)), .serving) })
            local = [LocalState](repeating: .upToDate, count: n)
            data = [Int](repeating: 0, count: n)
        }

        func index(_ t: ChainTarget) -> Int { Int(t.target.rawValue) - 1 }

        /// Applies `next` until a fixpoint (at most 4 changes) and checks the invariants.
        mutating func settle() -> Bool {
            var map: [TargetID: LocalState] = [:]
            for (i, l) in local.enumerated() { map[TargetID(UInt64(i + 1))] = l }
            var steps = 0
            while true {
                let n = ChainStateMachine.next(chain, local: map)
                if n == chain { break }
                chain = n
                steps += 1
                if steps > 4 {
                    Issue.record("no fixpoint: \(chain)")
                    return false
                }
            }
            for t in chain.targets {
                let i = index(t)
                if t.state == .serving && data[i] != acked {
                    Issue.record("serving target \(i + 1) holds \(data[i]) writes of \(acked) acknowledged: \(chain)")
                    return false
                }
                if t.state == .lastsrv {
                    sawLastsrv = true
                    if data[i] != acked {
                        Issue.record("lastsrv target \(i + 1) holds \(data[i]) writes of \(acked) acknowledged: \(chain)")
                        return false
                    }
                }
            }
            return true
        }

        mutating func write() {
            guard chain.targets.contains(where: { $0.state == .serving }) else {
                rejected += 1
                return
            }
            acked += 1
            for t in chain.targets where t.state.receivesWrites && local[index(t)] != .offline { data[index(t)] += 1 }
        }

        mutating func finishSync(_ i: Int) {
            guard let serving = chain.targets.first(where: { $0.state == .serving }) else { return }
            data[i] = data[index(serving)]
            local[i] = .upToDate
            sawSyncDone = true
        }
    }

    @Test(arguments: 0..<20)
    func acknowledgedWritesSurviveFailures(seed: UInt64) {
        var rng = DeterministicRandom(seed: 0xC4A1_0000 + seed)
        var m = Model(targets: 3)
        let n = 3
        for _ in 0..<5_000 {
            let roll = rng.next() % 100
            switch roll {
            case 0..<40:
                m.write()
            case 40..<55:  // one target fails
                m.local[Int(rng.next() % UInt64(n))] = .offline
            case 55..<60:  // several fail at once
                for i in 0..<n where rng.chance(0.6) { m.local[i] = .offline }
            case 60..<75:  // one failed target returns, keeping its data
                let i = Int(rng.next() % UInt64(n))
                if m.local[i] == .offline { m.local[i] = .online }
            case 75..<80:  // every failed target returns
                for i in 0..<n where m.local[i] == .offline { m.local[i] = .online }
            default:  // the syncing target finishes
                if let s = m.chain.targets.first(where: { $0.state == .syncing }) { m.finishSync(m.index(s)) }
            }
            guard m.settle() else { return }
        }
        // Liveness: everything returns and syncs complete.
        for i in 0..<n where m.local[i] == .offline { m.local[i] = .online }
        guard m.settle() else { return }
        for _ in 0..<(2 * n) {
            guard let s = m.chain.targets.first(where: { $0.state == .syncing }) else { break }
            m.finishSync(m.index(s))
            guard m.settle() else { return }
        }
        #expect(m.chain.targets.allSatisfy { $0.state == .serving }, "\(m.chain)")
        #expect(m.data == [Int](repeating: m.acked, count: n))
        // The run exercised the interesting paths.
        #expect(m.acked > 100)
        #expect(m.rejected > 0)
        #expect(m.sawLastsrv)
        #expect(m.sawSyncDone)
    }
}
