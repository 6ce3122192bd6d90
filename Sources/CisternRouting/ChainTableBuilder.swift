import CisternCore

/// An unordered pair of distinct nodes, stored normalized (`a < b`).
public struct NodePair: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The smaller node.
    public let a: NodeID
    /// The larger node.
    public let b: NodeID

    /// The pair of `x` and `y` in either order; `a` is the smaller.
    public init(_ x: NodeID, _ y: NodeID) {
        if x < y {
            a = x
            b = y
        } else {
            a = y
            b = x
        }
    }

    /// By `a`, then `b`.
    public static func < (l: NodePair, r: NodePair) -> Bool { (l.a, l.b) < (r.a, r.b) }
    public var description: String { "\(a.rawValue)-\(b.rawValue)" }
}

/// Why `ChainTableBuilder.build` refused its input; each message names the fix.
public enum ChainTableError: Error, Equatable, Sendable, CustomStringConvertible {
    /// `replicas` was below 1.
    case invalidReplicas(Int)
    /// No node has any target.
    case noTargets
    /// A target appears twice (on the nodes given, possibly the same node twice).
    case duplicateTarget(TargetID, NodeID, NodeID)
    /// `replicas` exceeds the number of nodes that have targets.
    case tooFewNodes(replicas: Int, nodes: Int)
    /// The chain ids from `first` for `needed` chains would pass `UInt32.max`.
    case chainIDsExhausted(first: ChainID, needed: Int)

    public var description: String {
        switch self {
        case .invalidReplicas(let r):
            return "replicas must be at least 1, got \(r): set the replication factor to 1 or more (3 is typical)"
        case .noTargets:
            return "no targets to place: every node's target list is empty; register storage nodes with their targets before building chains"
        case .duplicateTarget(let t, let x, let y):
            return "\(t) is listed twice (on \(x) and \(y)): a target lives on exactly one node, once; remove the duplicate"
        case .tooFewNodes(let r, let n):
            return "replicas \(r) exceeds the \(n) node(s) that have targets: a chain's replicas must be on different nodes; lower replicas to at most \(n) or add nodes with targets"
        case .chainIDsExhausted(let first, let needed):
            return "\(needed) chains starting at \(first) would pass chain id \(UInt32.max): choose a smaller first chain id"
        }
    }
}

/// Groups targets into replication chains (pure and deterministic).
public enum ChainTableBuilder {
    /// Groups the targets into chains of `replicas` targets.
    ///
    /// Promises:
    /// - Each target is used at most once; a chain's targets are on `replicas`
    ///   different nodes.
    /// - As many chains as any placement could make: chains are built while
    ///   that maximum stays reachable, and building stops when fewer than
    ///   `replicas` nodes have unused targets. With balanced nodes (no node
    ///   holding more than 1/`replicas` of all targets) that is
    ///   `total / replicas` chains. Leftover targets stay unassigned.
    /// - Spread: each node's chain partners are spread evenly over the other
    ///   nodes (heuristically; not guaranteed optimal), so that when a node
    ///   fails the other replicas of its chains, and the recovery traffic, are
    ///   on many nodes.
    ///   A greedy pass chooses each chain's nodes: the node with the most
    ///   unused targets, then repeatedly the node sharing the fewest chains with
    ///   the nodes already chosen (then the most unused targets). A local search
    ///   then swaps nodes between chains while that lowers the sum of squared
    ///   pair counts, stopping early once the counts differ by at most one
    ///   (the optimum) or after a fixed number of tries (see `swapBudget`).
    ///   For 6 nodes x 5 targets x 3 replicas every pair of nodes then shares
    ///   exactly 2 chains. Heads are spread too: a chain's head
    ///   is its node that has headed the fewest chains so far (ties rotate with
    ///   the chain index), followed by its other nodes cyclically.
    /// - Deterministic: the result depends only on the arguments. Nodes are
    ///   visited in ascending id order and a node's targets are used in
    ///   ascending id order (the order of the input lists does not matter);
    ///   remaining ties are broken by a `DeterministicRandom(seed: seed)`.
    /// - The chains have ids `firstChain`, `firstChain + 1`, ..., version 1,
    ///   and every target `.serving`.
    ///
    /// - Throws: `ChainTableError` when `replicas < 1`, there are no targets,
    ///   a target is listed twice, `replicas` exceeds the number of nodes that
    ///   have targets, or the chain ids would pass `UInt32.max`.
    public static func build(
        targetsByNode: [NodeID: [TargetID]], replicas: Int, firstChain: ChainID, seed: UInt64
    ) throws(ChainTableError) -> [Chain] {
        guard replicas >= 1 else { throw .invalidReplicas(replicas) }

        let nodes = targetsByNode.keys.filter { !(targetsByNode[$0] ?? []).isEmpty }.sorted()
        guard !nodes.isEmpty else { throw .noTargets }
        var pending: [[TargetID]] = []  // per node, descending: removeLast yields the smallest
        var owner: [TargetID: NodeID] = [:]
        for node in nodes {
            let targets = (targetsByNode[node] ?? []).sorted()
            for t in targets {
                if let previous = owner.updateValue(node, forKey: t) { throw .duplicateTarget(t, previous, node) }
            }
            pending.append(targets.reversed())
        }
        guard replicas <= nodes.count else { throw .tooFewNodes(replicas: replicas, nodes: nodes.count) }

        let n = nodes.count
        let expected = maxChains(pending.map(\.count), replicas: replicas)
        guard UInt64(firstChain.rawValue) + UInt64(expected) <= UInt64(UInt32.max) + 1 else {
            throw .chainIDsExhausted(first: firstChain, needed: expected)
        }

        var rng = DeterministicRandom(seed: seed)
        var pairs = [Int](repeating: 0, count: n * n)
        var unused = pending.map(\.count)
        var sets: [[Int]] = []  // each chain's nodes (indices into `nodes`), in choice order
        var chosen: [Int] = []
        chosen.reserveCapacity(replicas)
        var isChosen = [Bool](repeating: false, count: n)

        // Phase 1: greedy node sets.
        while true {
            // The most chains still possible, and the nodes that bound it.
            let k = maxChains(unused, replicas: replicas)
            if k == 0 { break }
            // Every node holding at least k unused targets must be used unless
            // there is slack: excluding more than `slack` of them would lower
            // the number of chains that can still be built.
            let slack = unused.reduce(0) { $0 + min($1, k) } - replicas * k
            var mustLeft = unused.filter { $0 >= k }.count

            chosen.removeAll(keepingCapacity: true)
            for i in 0..<n { isChosen[i] = false }
            for slot in 0..<replicas {
                let slotsLeftAfter = replicas - slot - 1
                var best: Int?
                var bestKey: (Int, Int, UInt64) = (0, 0, 0)
                for i in 0..<n {
                    let draw = rng.next()  // one draw per node per slot: a stable sequence
                    if isChosen[i] || unused[i] == 0 { continue }
                    let must = unused[i] >= k
                    // Choosing i must leave enough slots for the must-nodes.
                    if (mustLeft - (must ? 1 : 0)) - slotsLeftAfter > slack { continue }
                    var shared = 0
                    for c in chosen { shared += pairs[i * n + c] }
                    let key = (shared, -unused[i], draw)
                    if best == nil || key < bestKey {
                        best = i
                        bestKey = key
                    }
                }
                guard let pick = best else {
                    preconditionFailure("ChainTableBuilder: no feasible node with k=\(k); the feasibility bound is wrong")
                }
                if unused[pick] >= k { mustLeft -= 1 }
                chosen.append(pick)
                isChosen[pick] = true
            }
            for x in chosen {
                unused[x] -= 1
                for y in chosen where x != y { pairs[x * n + y] += 1 }
            }
            sets.append(chosen)
        }

        // Phase 2: local search. Swap one node between two chains while that
        // lowers the sum of squared pair counts (the spread's variance); a node's
        // number of chains, hence its target use, is unchanged by a swap.
        improve(&sets, pairs: &pairs, nodes: n, budget: swapBudget)

        // Phase 3: heads, then targets in chain order.
        var heads = [Int](repeating: 0, count: n)
        var chains: [Chain] = []
        chains.reserveCapacity(sets.count)
        for set in sets {
            // Head: fewest heads so far, ties by rotation with the chain index.
            let offset = chains.count % replicas
            var headPos = offset
            for j in 0..<replicas {
                let p = (offset + j) % replicas
                if heads[set[p]] < heads[set[headPos]] { headPos = p }
            }
            heads[set[headPos]] += 1

            var targets: [ChainTarget] = []
            targets.reserveCapacity(replicas)
            for j in 0..<replicas {
                let node = set[(headPos + j) % replicas]
                let t = pending[node].removeLast()
                targets.append(ChainTarget(t, .serving))
            }
            let id = ChainID(firstChain.rawValue + UInt32(chains.count))
            chains.append(Chain(id: id, version: 1, targets: targets))
        }
        return chains
    }

    /// How many chains share each pair of nodes: for every chain, every pair of
    /// its targets on two different known nodes counts once. Pairs that share no
    /// chain are absent; targets missing from `nodeOf` and pairs of targets on
    /// the same node are not counted.
    public static func pairCounts(_ chains: [Chain], nodeOf: [TargetID: NodeID]) -> [NodePair: Int] {
        var counts: [NodePair: Int] = [:]
        for chain in chains {
            let nodes = chain.targets.compactMap { nodeOf[$0.target] }
            for i in nodes.indices {
                for j in nodes.indices where j > i && nodes[i] != nodes[j] {
                    counts[NodePair(nodes[i], nodes[j]), default: 0] += 1
                }
            }
        }
        return counts
    }

    /// How many swaps `build`'s local search may evaluate: a count, not a time,
    /// so the result stays deterministic. A pass over all chain pairs costs
    /// chains^2 * replicas^2 / 2 evaluations, so clusters of up to several
    /// hundred chains converge; larger ones keep a partly improved greedy result.
    static let swapBudget = 4_000_000

    /// Hill climbing on `sets`: for every pair of chains and every pair of their
    /// members, swaps the two members when both chains keep distinct nodes and
    /// the sum of squared pair counts drops; repeats until a pass improves
    /// nothing or `budget` swaps were evaluated. Keeps `pairs` in step.
    static func improve(_ sets: inout [[Int]], pairs: inout [Int], nodes n: Int, budget: Int) {
        if n < 2 || sets.count < 2 { return }
        var left = budget
        var improved = true
        // Applies the pair-count changes of moving `from` out of and `to` into
        // the chain `others` (the chain's other members); returns the change
        // of the sum of squares.
        func move(_ from: Int, _ to: Int, _ others: [Int], skip: Int, _ pairs: inout [Int]) -> Int {
            var delta = 0
            for (p, o) in others.enumerated() where p != skip {
                let f = from * n + o
                delta += -2 * pairs[f] + 1
                pairs[f] -= 1
                pairs[o * n + from] -= 1
                let t = to * n + o
                delta += 2 * pairs[t] + 1
                pairs[t] += 1
                pairs[o * n + to] += 1
            }
            return delta
        }
        while improved && left > 0 {
            // The pair counts' total is fixed, so their sum of squares is at
            // its global minimum once they differ by at most one: stop there.
            var lo = Int.max
            var hi = Int.min
            for x in 0..<n {
                for y in (x + 1)..<n {
                    lo = min(lo, pairs[x * n + y])
                    hi = max(hi, pairs[x * n + y])
                }
            }
            if hi - lo <= 1 { return }
            improved = false
            for a in sets.indices {
                for b in sets.indices where b > a {
                    for i in sets[a].indices {
                        for j in sets[b].indices {
                            if left == 0 { return }
                            left -= 1
                            let x = sets[a][i]
                            let y = sets[b][j]
                            if x == y || sets[a].contains(y) || sets[b].contains(x) { continue }
                            var delta = move(x, y, sets[a], skip: i, &pairs)
                            delta += move(y, x, sets[b], skip: j, &pairs)
                            if delta < 0 {
                                sets[a][i] = y
                                sets[b][j] = x
                                improved = true
                            } else {
                                // Undo: y back out of b and x back in, then the same for a.
                                _ = move(x, y, sets[b], skip: j, &pairs)
                                _ = move(y, x, sets[a], skip: i, &pairs)
                            }
                        }
                    }
                }
            }
        }
    }

    /// The largest k such that k chains of `replicas` distinct nodes can be
    /// built from nodes with `unused` targets: sum(min(unused, k)) >= replicas * k.
    /// (Necessary since a node joins each chain at most once; sufficient by
    /// dealing the capped targets round-robin into k chains.)
    static func maxChains(_ unused: [Int], replicas: Int) -> Int {
        let total = unused.reduce(0, +)
        var k = total / replicas
        while k > 0 && unused.reduce(0, { $0 + min($1, k) }) < replicas * k { k -= 1 }
        return k
    }
}
