import CisternCore
import CisternRouting
import Testing

/// `nodes` nodes (ids 1...nodes) with `per` targets each (node k holds targets k*1000+1 ... k*1000+per).
private func cluster(nodes: Int, per: Int) -> [NodeID: [TargetID]] {
    var m: [NodeID: [TargetID]] = [:]
    for k in 1...nodes { m[NodeID(UInt32(k))] = (1...per).map { TargetID(UInt64(k * 1000 + $0)) } }
    return m
}

private func owners(_ input: [NodeID: [TargetID]]) -> [TargetID: NodeID] {
    var m: [TargetID: NodeID] = [:]
    for (node, targets) in input { for t in targets { m[t] = node } }
    return m
}

/// Checks the structural promises of `build`; records issues.
private func checkStructure(_ chains: [Chain], _ input: [NodeID: [TargetID]], replicas: Int, first: ChainID) {
    let nodeOf = owners(input)
    var used: Set<TargetID> = []
    for (i, c) in chains.enumerated() {
        #expect(c.id == ChainID(first.rawValue + UInt32(i)))
        #expect(c.version == 1)
        #expect(c.targets.count == replicas)
        #expect(c.targets.allSatisfy { $0.state == .serving })
        for t in c.targets {
            #expect(nodeOf[t.target] != nil, "unknown \(t.target)")
            #expect(used.insert(t.target).inserted, "\(t.target) used twice")
        }
        let nodes = c.targets.compactMap { nodeOf[$0.target] }
        #expect(Set(nodes).count == replicas, "chain \(c) repeats a node")
    }
    // Building stopped only when fewer than `replicas` nodes have unused targets.
    let nodesWithLeftovers = Set(nodeOf.filter { !used.contains($0.key) }.map(\.value))
    #expect(nodesWithLeftovers.count < replicas)
}

/// Pair counts over every pair of the nodes 1...nodes (absent pairs count 0).
private func allPairCounts(_ chains: [Chain], _ input: [NodeID: [TargetID]]) -> [Int] {
    let counts = ChainTableBuilder.pairCounts(chains, nodeOf: owners(input))
    let nodes = input.keys.sorted()
    var all: [Int] = []
    for i in nodes.indices {
        for j in nodes.indices where j > i { all.append(counts[NodePair(nodes[i], nodes[j])] ?? 0) }
    }
    return all
}

private func headCounts(_ chains: [Chain], _ input: [NodeID: [TargetID]]) -> [NodeID: Int] {
    let nodeOf = owners(input)
    var heads: [NodeID: Int] = [:]
    for node in input.keys { heads[node] = 0 }
    for c in chains { heads[nodeOf[c.targets[0].target]!, default: 0] += 1 }
    return heads
}

@Suite struct ChainTableBuilderTests {
    @Test(arguments: [(6, 5, 3, 10), (10, 8, 3, 26), (3, 4, 3, 4), (4, 3, 2, 6), (5, 7, 1, 35), (7, 7, 7, 7), (9, 1, 3, 3)])
    func balancedClustersGetAllFullChains(nodes: Int, per: Int, replicas: Int, expected: Int) throws {
        let input = cluster(nodes: nodes, per: per)
        let chains = try ChainTableBuilder.build(targetsByNode: input, replicas: replicas, firstChain: ChainID(100), seed: 1)
        #expect(chains.count == expected)
        #expect(chains.count == nodes * per / replicas)
        checkStructure(chains, input, replicas: replicas, first: ChainID(100))
    }

    @Test func unbalancedClusterGetsTheMostPossibleChains() throws {
        // Node 1 holds 10 targets, nodes 2 and 3 one each: every chain of two
        // distinct nodes uses node 2 or node 3, so at most 2 chains ({1,2}, {1,3}).
        let input: [NodeID: [TargetID]] = [
            NodeID(1): (1...10).map { TargetID(UInt64($0)) }, NodeID(2): [TargetID(20)], NodeID(3): [TargetID(30)],
        ]
        let chains = try ChainTableBuilder.build(targetsByNode: input, replicas: 2, firstChain: ChainID(1), seed: 3)
        #expect(chains.count == 2)
        checkStructure(chains, input, replicas: 2, first: ChainID(1))
    }

    /// Random shapes: the chain count equals the best any placement can do,
    /// sum(min(unused, k)) >= replicas * k, and the structure holds.
    @Test(arguments: 0..<100)
    func randomShapesGetTheMostPossibleChains(seed: UInt64) throws {
        var rng = DeterministicRandom(seed: 0xB111_D000 + seed)
        let nodes = 1 + Int(rng.next() % 9)
        let replicas = 1 + Int(rng.next() % UInt64(nodes))
        var input: [NodeID: [TargetID]] = [:]
        var sizes: [Int] = []
        var next: UInt64 = 1
        for k in 1...nodes {
            let size = 1 + Int(rng.next() % 12)
            sizes.append(size)
            input[NodeID(UInt32(k))] = (0..<size).map { _ in
                next += 1
                return TargetID(next)
            }
        }
        let chains = try ChainTableBuilder.build(targetsByNode: input, replicas: replicas, firstChain: ChainID(0), seed: seed)
        var best = 0
        for k in 0...(sizes.reduce(0, +) / replicas) where sizes.reduce(0, { $0 + min($1, k) }) >= replicas * k { best = k }
        #expect(chains.count == best, "sizes \(sizes) replicas \(replicas)")
        checkStructure(chains, input, replicas: replicas, first: ChainID(0))
    }

    @Test func deterministicAndIndependentOfInputOrder() throws {
        let input = cluster(nodes: 8, per: 6)
        let a = try ChainTableBuilder.build(targetsByNode: input, replicas: 3, firstChain: ChainID(1), seed: 42)
        let b = try ChainTableBuilder.build(targetsByNode: input, replicas: 3, firstChain: ChainID(1), seed: 42)
        #expect(a == b)
        // The same cluster with reversed target lists, inserted in reverse order.
        var reversed: [NodeID: [TargetID]] = [:]
        for node in input.keys.sorted().reversed() { reversed[node] = input[node]!.reversed() }
        let c = try ChainTableBuilder.build(targetsByNode: reversed, replicas: 3, firstChain: ChainID(1), seed: 42)
        #expect(a == c)
        // Some other seed gives another placement.
        var differs = false
        for seed: UInt64 in 0..<10 where seed != 42 {
            if try ChainTableBuilder.build(targetsByNode: input, replicas: 3, firstChain: ChainID(1), seed: seed) != a {
                differs = true
            }
        }
        #expect(differs)
    }

    @Test(arguments: 0..<20)
    func sixNodesFiveTargetsThreeReplicasSpreadEvenly(seed: UInt64) throws {
        let input = cluster(nodes: 6, per: 5)
        let chains = try ChainTableBuilder.build(targetsByNode: input, replicas: 3, firstChain: ChainID(1), seed: seed)
        #expect(chains.count == 10)
        let pairs = allPairCounts(chains, input)
        #expect(pairs.count == 15)
        #expect(pairs.min()! >= 1, "\(pairs)")
        #expect(pairs.max()! - pairs.min()! <= 2, "\(pairs)")
        #expect(pairs.reduce(0, +) == 10 * 3)
        // What the builder achieves: the optimum, every pair of nodes shares
        // exactly 2 chains (a 2-(6,3,2) design).
        #expect(pairs.allSatisfy { $0 == 2 }, "\(pairs)")
    }

    @Test(arguments: 0..<20)
    func tenNodesEightTargetsThreeReplicasSpreadEvenly(seed: UInt64) throws {
        let input = cluster(nodes: 10, per: 8)
        let chains = try ChainTableBuilder.build(targetsByNode: input, replicas: 3, firstChain: ChainID(1), seed: seed)
        #expect(chains.count == 26)
        let pairs = allPairCounts(chains, input)
        #expect(pairs.count == 45)
        #expect(pairs.max()! - pairs.min()! <= 2, "\(pairs)")
        // What the builder achieves: the optimum (78 pairs over 45: 1 or 2 each).
        #expect(pairs.max()! - pairs.min()! <= 1, "\(pairs)")
    }

    @Test(arguments: [(6, 5, 3), (10, 8, 3), (5, 4, 2), (12, 10, 3), (8, 3, 4)])
    func headsAreSpread(nodes: Int, per: Int, replicas: Int) throws {
        let input = cluster(nodes: nodes, per: per)
        for seed: UInt64 in 0..<5 {
            let chains = try ChainTableBuilder.build(targetsByNode: input, replicas: replicas, firstChain: ChainID(1), seed: seed)
            let lo = chains.count / nodes - 1
            let hi = (chains.count + nodes - 1) / nodes + 1
            for (node, heads) in headCounts(chains, input) {
                #expect((lo...hi).contains(heads), "\(node) heads \(heads) of \(chains.count) chains on \(nodes) nodes")
            }
        }
    }

    @Test func oneReplicaMakesOneChainPerTarget() throws {
        let input = cluster(nodes: 3, per: 2)
        let chains = try ChainTableBuilder.build(targetsByNode: input, replicas: 1, firstChain: ChainID(7), seed: 0)
        #expect(chains.count == 6)
        #expect(Set(chains.map { $0.targets[0].target }) == Set(input.values.flatMap { $0 }))
        checkStructure(chains, input, replicas: 1, first: ChainID(7))
    }

    @Test func nodesWithoutTargetsAreIgnored() throws {
        var input = cluster(nodes: 3, per: 2)
        input[NodeID(9)] = []
        let chains = try ChainTableBuilder.build(targetsByNode: input, replicas: 3, firstChain: ChainID(1), seed: 0)
        #expect(chains.count == 2)
    }

    @Test func lastChainIDMayBeUInt32Max() throws {
        let input = cluster(nodes: 3, per: 1)
        let chains = try ChainTableBuilder.build(targetsByNode: input, replicas: 3, firstChain: ChainID(UInt32.max), seed: 0)
        #expect(chains.map(\.id) == [ChainID(UInt32.max)])
    }

    // MARK: errors

    private func error(_ input: [NodeID: [TargetID]], replicas: Int, first: ChainID = ChainID(1)) -> ChainTableError? {
        do {
            _ = try ChainTableBuilder.build(targetsByNode: input, replicas: replicas, firstChain: first, seed: 0)
            return nil
        } catch {
            return error
        }
    }

    @Test func replicasBelowOneIsRejected() {
        let e = error(cluster(nodes: 3, per: 1), replicas: 0)
        #expect(e == .invalidReplicas(0))
        #expect(e?.description == "replicas must be at least 1, got 0: set the replication factor to 1 or more (3 is typical)")
        #expect(error(cluster(nodes: 3, per: 1), replicas: -2) == .invalidReplicas(-2))
    }

    @Test func replicasAboveNodeCountIsRejected() {
        let e = error(cluster(nodes: 2, per: 5), replicas: 3)
        #expect(e == .tooFewNodes(replicas: 3, nodes: 2))
        #expect(e?.description == "replicas 3 exceeds the 2 node(s) that have targets: a chain's replicas must be on different nodes; lower replicas to at most 2 or add nodes with targets")
        // A node without targets does not count.
        var input = cluster(nodes: 2, per: 5)
        input[NodeID(3)] = []
        #expect(error(input, replicas: 3) == .tooFewNodes(replicas: 3, nodes: 2))
    }

    @Test func noTargetsIsRejected() {
        #expect(error([:], replicas: 3) == .noTargets)
        let e = error([NodeID(1): [], NodeID(2): []], replicas: 1)
        #expect(e == .noTargets)
        #expect(e?.description == "no targets to place: every node's target list is empty; register storage nodes with their targets before building chains")
    }

    @Test func duplicateTargetIsRejected() {
        let e = error([NodeID(1): [TargetID(5)], NodeID(2): [TargetID(5)], NodeID(3): [TargetID(6)]], replicas: 2)
        #expect(e == .duplicateTarget(TargetID(5), NodeID(1), NodeID(2)))
        #expect(e?.description == "target#5 is listed twice (on node#1 and node#2): a target lives on exactly one node, once; remove the duplicate")
        #expect(error([NodeID(1): [TargetID(5), TargetID(5)], NodeID(2): [TargetID(6)]], replicas: 1)
            == .duplicateTarget(TargetID(5), NodeID(1), NodeID(1)))
    }

    @Test func chainIDOverflowIsRejected() {
        let e = error(cluster(nodes: 3, per: 2), replicas: 3, first: ChainID(UInt32.max))
        #expect(e == .chainIDsExhausted(first: ChainID(UInt32.max), needed: 2))
        #expect(e?.description == "2 chains starting at chain#4294967295 would pass chain id 4294967295: choose a smaller first chain id")
    }

    // MARK: pairCounts

    @Test func pairCountsCountEachPairOfNodesPerChain() {
        let nodeOf: [TargetID: NodeID] = [
            TargetID(1): NodeID(1), TargetID(2): NodeID(2), TargetID(3): NodeID(3),
            TargetID(4): NodeID(2), TargetID(5): NodeID(1), TargetID(6): NodeID(1),
        ]
        let chains = [
            Chain(id: ChainID(1), version: 1, targets: [1, 2, 3].map { ChainTarget(TargetID($0), .serving) }),
            Chain(id: ChainID(2), version: 1, targets: [4, 5].map { ChainTarget(TargetID($0), .offline) }),
            // Same node twice and an unknown target: not counted.
            Chain(id: ChainID(3), version: 1, targets: [5, 6, 99].map { ChainTarget(TargetID($0), .serving) }),
        ]
        let counts = ChainTableBuilder.pairCounts(chains, nodeOf: nodeOf)
        #expect(counts == [NodePair(NodeID(1), NodeID(2)): 2, NodePair(NodeID(1), NodeID(3)): 1, NodePair(NodeID(2), NodeID(3)): 1])
    }

    @Test func nodePairIsNormalizedAndOrdered() {
        #expect(NodePair(NodeID(5), NodeID(2)) == NodePair(NodeID(2), NodeID(5)))
        #expect(NodePair(NodeID(5), NodeID(2)).a == NodeID(2))
        #expect(NodePair(NodeID(1), NodeID(9)) < NodePair(NodeID(2), NodeID(3)))
        #expect(NodePair(NodeID(1), NodeID(3)) < NodePair(NodeID(1), NodeID(4)))
        #expect(NodePair(NodeID(3), NodeID(1)).description == "1-3")
    }
}
