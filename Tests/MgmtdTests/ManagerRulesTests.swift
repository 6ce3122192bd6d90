import CisternCore
import CisternMgmtd
import CisternRouting
import Testing

/// The cluster manager's rules, without a cluster: every case of failure detection,
/// target state derivation, heartbeat admission and each admin operation.
@Suite struct ManagerRulesTests {
    static let timeout: UInt64 = 3_000_000_000

    static func routing(nodes: [NodeInfo], targets: [TargetInfo] = [], chains: [Chain] = []) -> RoutingInfo {
        RoutingInfo(version: 7, nodes: nodes, targets: targets, chains: chains)
    }

    // MARK: Evaluation

    /// Every role and status against heartbeat ages just inside, at and past the timeout,
    /// and a node never heard from: only active nodes other than managers fail, and only
    /// strictly past the timeout.
    @Test(arguments: NodeRole.allCases, NodeStatus.allCases)
    func silentNodesFailStrictlyPastTheTimeout(role: NodeRole, status: NodeStatus) {
        let now: UInt64 = 100_000_000_000
        let ages: [UInt64?] = [0, Self.timeout - 1, Self.timeout, Self.timeout + 1, nil]
        for age in ages {
            var r = Self.routing(nodes: [NodeInfo(id: NodeID(1), role: role, name: "n1", status: status)])
            let last = age.map { [NodeID(1): now - $0] } ?? [:]
            let events = ManagerRules.evaluate(&r, ManagerObservations(nowNanoseconds: now, failureTimeoutNanoseconds: Self.timeout, lastHeartbeatNanoseconds: last))
            let silent = age ?? now
            let fails = status == .active && role != .mgmtd && silent > Self.timeout
            #expect(r.nodes[0].status == (fails ? .failed : status), "\(role) \(status) age \(String(describing: age))")
            #expect(events == (fails ? [.nodeFailed(name: "n1", silentNanoseconds: silent)] : []))
        }
    }

    /// A target is offline when its node is not active or an operator took it offline;
    /// otherwise it takes the state it last reported (or keeps its own without a report).
    @Test(arguments: NodeStatus.allCases, [false, true])
    func targetStatesFollowTheirNodeTheOperatorAndTheirReports(status: NodeStatus, adminOffline: Bool) {
        for reported in [nil] + LocalState.allCases.map(Optional.some) {
            var r = Self.routing(nodes: [NodeInfo(id: NodeID(1), role: .storage, name: "s1", status: status)],
                                 targets: [TargetInfo(id: TargetID(101), node: NodeID(1), chain: nil, localState: .online)])
            let reports = reported.map { [TargetID(101): TargetReport(target: TargetID(101), localState: $0, usedBytes: 5, capacityBytes: 9)] } ?? [:]
            let o = ManagerObservations(nowNanoseconds: 1, failureTimeoutNanoseconds: Self.timeout, lastHeartbeatNanoseconds: [NodeID(1): 1],
                                        reports: reports, adminOffline: adminOffline ? [TargetID(101)] : [])
            _ = ManagerRules.evaluate(&r, o)
            let expected: LocalState = status != .active || adminOffline ? .offline : (reported ?? .online)
            #expect(r.targets[0].localState == expected, "\(status) admin-offline \(adminOffline) reported \(String(describing: reported))")
            let counted = status == .active && !adminOffline && reported != nil
            #expect(r.targets[0].usedBytes == (counted ? 5 : 0) && r.targets[0].capacityBytes == (counted ? 9 : 0))
        }
    }

    @Test func spaceErrorsAreEventsOnlyWhenTheyChange() {
        let full = "no space left on target#101 (s1, /data): free space or add storage"
        var r = Self.routing(nodes: [NodeInfo(id: NodeID(1), role: .storage, name: "s1", status: .active)],
                             targets: [TargetInfo(id: TargetID(101), node: NodeID(1), chain: nil, localState: .upToDate)])
        func step(_ error: String) -> [ManagerEvent] {
            ManagerRules.evaluate(&r, ManagerObservations(nowNanoseconds: 1, failureTimeoutNanoseconds: Self.timeout, lastHeartbeatNanoseconds: [NodeID(1): 1],
                                                          reports: [TargetID(101): TargetReport(target: TargetID(101), localState: .upToDate, spaceError: error)]))
        }
        #expect(step("") == [])
        #expect(step(full) == [.refusesWrites(TargetID(101), reason: full)])
        #expect(r.targets[0].spaceError == full)
        #expect(step(full) == [])
        #expect(step("") == [.spaceRecovered(TargetID(101))])
        #expect(r.targets[0].spaceError.isEmpty)
    }

    /// Chains advance through the chain state machine with the derived states: a chain
    /// whose head's node went silent matches `ChainStateMachine.next` on those states.
    @Test func chainsAdvanceWithTheDerivedLocalStates() {
        let nodes = (1...3).map { NodeInfo(id: NodeID(UInt32($0)), role: .storage, name: "s\($0)", status: .active) }
        let targets = (1...3).map { TargetInfo(id: TargetID(UInt64($0 * 100 + 1)), node: NodeID(UInt32($0)), chain: ChainID(1), localState: .upToDate) }
        let chain = Chain(id: ChainID(1), version: 1, targets: targets.map { ChainTarget($0.id, .serving) })
        var r = Self.routing(nodes: nodes, targets: targets, chains: [chain])
        let now: UInt64 = 50_000_000_000
        let last: [NodeID: UInt64] = [NodeID(1): 0, NodeID(2): now, NodeID(3): now]
        let reports = Dictionary(uniqueKeysWithValues: targets.map { ($0.id, TargetReport(target: $0.id, localState: .upToDate)) })
        _ = ManagerRules.evaluate(&r, ManagerObservations(nowNanoseconds: now, failureTimeoutNanoseconds: Self.timeout, lastHeartbeatNanoseconds: last, reports: reports))
        let expected = ChainStateMachine.next(chain, local: [TargetID(101): .offline, TargetID(201): .upToDate, TargetID(301): .upToDate])
        #expect(r.chains == [expected])
        #expect(r.chains[0] != chain, "the failed head's chain changes")
        #expect(r.nodes.map(\.status) == [.failed, .active, .active])
    }

    // MARK: Heartbeats

    @Test func aHeartbeatIsARepeatOnlyForTheSameBootAtOrBelowTheLastSequenceOfAKnownNode() {
        let known = Self.routing(nodes: [NodeInfo(id: NodeID(1), role: .storage, name: "s1", status: .active)])
        let unknown = RoutingInfo()
        let last = HeartbeatSequence(boot: 9, sequence: 5)
        for (boot, sequence, lastSeen, routing, repeat_) in [
            (UInt64(9), UInt64(4), Optional(last), known, true),
            (9, 5, last, known, true),
            (9, 6, last, known, false),
            (8, 1, last, known, false),   // a new boot starts its numbers again
            (9, 5, nil, known, false),    // never heard by this primary
            (9, 5, last, unknown, false), // routing lost the node: register it again
        ] {
            let h = Heartbeat(node: NodeID(1), role: .storage, name: "s1", sequence: sequence, bootID: boot)
            #expect(ManagerRules.isDuplicate(h, last: lastSeen, routing: routing) == repeat_, "boot \(boot) sequence \(sequence)")
        }
    }

    @Test func registrationIsNeededForEachChangeAndOnlyThen() {
        let r = Self.routing(nodes: [NodeInfo(id: NodeID(1), role: .storage, name: "s1", status: .active, addresses: ["10.0.0.1:9000"]),
                                     NodeInfo(id: NodeID(2), role: .storage, name: "s2", status: .failed, addresses: ["10.0.0.2:9000"])],
                             targets: [TargetInfo(id: TargetID(101), node: NodeID(1), chain: nil, localState: .upToDate)])
        func needs(_ node: UInt32, name: String, addresses: [String], targets: [UInt64]) -> Bool {
            let h = Heartbeat(node: NodeID(node), role: .storage, name: name, sequence: 1, targets: targets.map { TargetReport(target: TargetID($0), localState: .upToDate) }, addresses: addresses)
            return ManagerRules.needsRegistration(h, live: ManagerRules.liveReports(h, routing: r), routing: r)
        }
        #expect(!needs(1, name: "s1", addresses: ["10.0.0.1:9000"], targets: [101]))
        #expect(needs(1, name: "s1-renamed", addresses: ["10.0.0.1:9000"], targets: [101]))
        #expect(needs(1, name: "s1", addresses: ["10.0.0.9:9000"], targets: [101]))
        #expect(needs(1, name: "s1", addresses: ["10.0.0.1:9000"], targets: [101, 102]))
        #expect(needs(2, name: "s2", addresses: ["10.0.0.2:9000"], targets: []), "a failed node is back")
        #expect(needs(3, name: "s3", addresses: [], targets: []), "a new node")
    }

    @Test func registerAddsNodesAndTargetsSortedRevivesFailedNodesAndLeavesDisabledOnes() {
        var r = Self.routing(nodes: [NodeInfo(id: NodeID(2), role: .storage, name: "s2", status: .failed),
                                     NodeInfo(id: NodeID(5), role: .storage, name: "s5", status: .disabled)],
                             targets: [TargetInfo(id: TargetID(201), node: NodeID(2), chain: ChainID(1), localState: .offline)])
        r.removedTargets = [TargetID(102)]
        let h1 = Heartbeat(node: NodeID(1), role: .storage, name: "s1", sequence: 1,
                           targets: [102, 103, 101].map { TargetReport(target: TargetID($0), localState: .online, usedBytes: 3, capacityBytes: 4) }, addresses: ["a"])
        let live = ManagerRules.liveReports(h1, routing: r)
        #expect(live.map(\.target) == [TargetID(103), TargetID(101)], "a removed target is not registered again")
        ManagerRules.register(h1, live: live, into: &r)
        #expect(r.nodes.map(\.id) == [NodeID(1), NodeID(2), NodeID(5)])
        #expect(r.nodes[0] == NodeInfo(id: NodeID(1), role: .storage, name: "s1", status: .active, addresses: ["a"]))
        #expect(r.targets.map(\.id) == [TargetID(101), TargetID(103), TargetID(201)])
        #expect(r.targets[0] == TargetInfo(id: TargetID(101), node: NodeID(1), chain: nil, localState: .online, usedBytes: 3, capacityBytes: 4))
        let h2 = Heartbeat(node: NodeID(2), role: .storage, name: "s2", sequence: 1, targets: [TargetReport(target: TargetID(201), localState: .online)], addresses: ["b"])
        ManagerRules.register(h2, live: ManagerRules.liveReports(h2, routing: r), into: &r)
        #expect(r.node(NodeID(2))?.status == .active && r.node(NodeID(2))?.addresses == ["b"])
        #expect(r.target(TargetID(201))?.chain == ChainID(1), "a known target keeps its chain")
        let h5 = Heartbeat(node: NodeID(5), role: .storage, name: "s5", sequence: 1, addresses: ["c"])
        ManagerRules.register(h5, live: [], into: &r)
        #expect(r.node(NodeID(5))?.status == .disabled, "only an operator enables a disabled node")
    }

    // MARK: Admin operations

    @Test(arguments: NodeStatus.allCases, [false, true])
    func enablingAndDisablingNodes(status: NodeStatus, enabled: Bool) throws {
        var r = Self.routing(nodes: [NodeInfo(id: NodeID(1), role: .storage, name: "s1", status: status)])
        try ManagerRules.setNodeEnabled(NodeID(1), enabled, in: &r)
        let expected: NodeStatus = enabled ? (status == .disabled ? .failed : status) : .disabled
        #expect(r.nodes[0].status == expected)
        #expect(throws: ManagerRefusal("unknown node \(NodeID(9)); list nodes to see the registered ones")) {
            try ManagerRules.setNodeEnabled(NodeID(9), enabled, in: &r)
        }
    }

    @Test func removingATarget() throws {
        let targets = [TargetInfo(id: TargetID(101), node: NodeID(1), chain: ChainID(1), localState: .offline),
                       TargetInfo(id: TargetID(201), node: NodeID(2), chain: ChainID(1), localState: .upToDate),
                       TargetInfo(id: TargetID(301), node: NodeID(3), chain: ChainID(2), localState: .offline)]
        let chains = [Chain(id: ChainID(1), version: 4, targets: [ChainTarget(TargetID(201), .serving), ChainTarget(TargetID(101), .offline)]),
                      Chain(id: ChainID(2), version: 1, targets: [ChainTarget(TargetID(301), .offline)])]
        var r = Self.routing(nodes: [], targets: targets, chains: chains)
        #expect(throws: ManagerRefusal("unknown target \(TargetID(9))")) { try ManagerRules.removeTarget(TargetID(9), from: &r) }
        #expect(throws: ManagerRefusal("\(TargetID(201)) is UPTODATE; offline it first (offlineTarget), then remove it")) { try ManagerRules.removeTarget(TargetID(201), from: &r) }
        #expect(throws: ManagerRefusal("\(TargetID(301)) is the last target of \(ChainID(2)); a chain cannot be empty")) { try ManagerRules.removeTarget(TargetID(301), from: &r) }
        let before = r
        #expect(before.targets.count == 3, "refusals change nothing")
        try ManagerRules.removeTarget(TargetID(101), from: &r)
        #expect(r.chain(ChainID(1)) == Chain(id: ChainID(1), version: 5, targets: [ChainTarget(TargetID(201), .serving)]))
        #expect(r.targets.map(\.id) == [TargetID(201), TargetID(301)])
        #expect(r.removedTargets == [TargetID(101)])
    }

    @Test func rotatingALastsrvTarget() throws {
        var r = Self.routing(nodes: [], chains: [
            Chain(id: ChainID(1), version: 3, targets: [ChainTarget(TargetID(1), .lastsrv), ChainTarget(TargetID(2), .offline), ChainTarget(TargetID(3), .offline)]),
            Chain(id: ChainID(2), version: 1, targets: [ChainTarget(TargetID(4), .serving)]),
            Chain(id: ChainID(3), version: 1, targets: [ChainTarget(TargetID(5), .lastsrv)]),
            Chain(id: ChainID(4), version: 2, targets: [ChainTarget(TargetID(6), .offline), ChainTarget(TargetID(7), .lastsrv)]),
        ])
        #expect(throws: ManagerRefusal("unknown chain \(ChainID(9))")) { try ManagerRules.rotateLastsrv(ChainID(9), in: &r) }
        #expect(throws: ManagerRefusal("\(ChainID(2)) has no LASTSRV target; rotation is only for a chain waiting on a LASTSRV that will not return")) { try ManagerRules.rotateLastsrv(ChainID(2), in: &r) }
        #expect(throws: ManagerRefusal("\(ChainID(3)) has no other target to promote")) { try ManagerRules.rotateLastsrv(ChainID(3), in: &r) }
        try ManagerRules.rotateLastsrv(ChainID(1), in: &r)
        #expect(r.chain(ChainID(1)) == Chain(id: ChainID(1), version: 4, targets: [ChainTarget(TargetID(2), .lastsrv), ChainTarget(TargetID(3), .offline), ChainTarget(TargetID(1), .offline)]))
        // The promoted target may come before the old LASTSRV.
        try ManagerRules.rotateLastsrv(ChainID(4), in: &r)
        #expect(r.chain(ChainID(4)) == Chain(id: ChainID(4), version: 3, targets: [ChainTarget(TargetID(6), .lastsrv), ChainTarget(TargetID(7), .offline)]))
    }

    @Test func addingChainsCreatesThenGrowsTableOne() throws {
        var r = Self.routing(nodes: (1...3).map { NodeInfo(id: NodeID(UInt32($0)), role: .storage, name: "s\($0)", status: .active) } + [NodeInfo(id: NodeID(4), role: .storage, name: "s4", status: .failed)],
                             targets: (1...4).map { TargetInfo(id: TargetID(UInt64($0 * 100 + 1)), node: NodeID(UInt32($0)), chain: nil, localState: .upToDate) })
        #expect(throws: ManagerRefusal.self) { try ManagerRules.addChains(replicas: 4, to: &r) }
        try ManagerRules.addChains(replicas: 3, to: &r)
        #expect(r.tables == [ChainTable(id: 1, version: 1, chains: r.chains.map(\.id))])
        #expect(r.chains.count == 1 && r.chains[0].targets.count == 3)
        #expect(r.target(TargetID(401))?.chain == nil, "a failed node's target joins no chain")
        for t in r.chains[0].targets { #expect(r.target(t.target)?.chain == r.chains[0].id) }
        // More targets later: a new version of the same table.
        for n in 1...3 { r.targets.append(TargetInfo(id: TargetID(UInt64(n * 100 + 2)), node: NodeID(UInt32(n)), chain: nil, localState: .upToDate)) }
        try ManagerRules.addChains(replicas: 3, to: &r)
        #expect(r.tables.count == 1 && r.tables[0].version == 2 && r.tables[0].chains == r.chains.map(\.id))
        #expect(Set(r.chains.map(\.id)).count == 2)
        let none = #expect(throws: ManagerRefusal.self) { try ManagerRules.addChains(replicas: 3, to: &r) }
        #expect(none?.reason.hasPrefix("cannot build chains") == true, "\(String(describing: none))")
    }
}
