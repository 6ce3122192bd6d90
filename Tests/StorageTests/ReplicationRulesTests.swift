import CisternCore
import CisternStorage
import Testing
import CisternRouting

func version(_ v: UInt64, chain: UInt64 = 1, crc: UInt32 = 0, block: UInt32 = 0) -> ChunkVersion {
    ChunkVersion(version: v, chainVersion: chain, length: 10, checksum: crc == 0 ? UInt32(truncatingIfNeeded: v &* 2_654_435_761) : crc,
                 block: BlockAddress(sizeClass: SizeClass(index: 0)!, file: 0, block: block))
}

let c1 = ChunkID(inode: 1, index: 0)

@Suite struct ReplicaWriteRuleTests {
    @Test func table() {
        let committed2 = ChunkMeta(id: c1, committed: version(2))
        let pending3 = ChunkMeta(id: c1, committed: version(2), pending: version(3))
        #expect(ReplicaWriteRule.decide(nil, version: 1, checksum: version(99).checksum, fullReplace: false) == .stage)
        #expect(ReplicaWriteRule.decide(nil, version: 2, checksum: version(99).checksum, fullReplace: false) == .stage, "chain writes carry whole chunks: a missed version is made whole")
        #expect(ReplicaWriteRule.decide(committed2, version: 3, checksum: version(99).checksum, fullReplace: false) == .stage)
        #expect(ReplicaWriteRule.decide(committed2, version: 2, checksum: version(99).checksum, fullReplace: false) == .alreadyCommitted)
        #expect(ReplicaWriteRule.decide(committed2, version: 1, checksum: version(99).checksum, fullReplace: false) == .alreadyCommitted)
        #expect(ReplicaWriteRule.decide(pending3, version: 3, checksum: version(3).checksum, fullReplace: false) == .alreadyStaged)
        #expect(ReplicaWriteRule.decide(pending3, version: 3, checksum: 12345, fullReplace: false) == .stage, "a pending version with other bytes is overwritten")
        #expect(ReplicaWriteRule.decide(committed2, version: 5, checksum: version(99).checksum, fullReplace: false) == .stage)
        #expect(ReplicaWriteRule.decide(ChunkMeta(id: c1, committed: version(2), pending: version(5)), version: 3, checksum: version(3).checksum, fullReplace: false) == .superseded(pending: 5, got: 3), "a late copy of an older attempt")
        #expect(ReplicaWriteRule.decide(committed2, version: 5, checksum: 0, fullReplace: true) == .replace)
        #expect(ReplicaWriteRule.decide(committed2, version: 2, checksum: 0, fullReplace: true) == .alreadyCommitted)
        #expect(ReplicaWriteRule.nextVersion(nil) == 1)
        #expect(ReplicaWriteRule.nextVersion(pending3) == 4, "never reuse a staged version: a successor may have committed it")
        #expect(ReplicaWriteRule.read(pending3) == .notCommitted(committed: 2, pending: 3))
        #expect(ReplicaWriteRule.read(committed2) == .serve(version(2)))
        #expect(ReplicaWriteRule.read(nil) == .notFound)
    }

    /// A client's retry of a write left in doubt at the head (its version `d` staged,
    /// the forward failed). Found by knob randomization (resync-source-dies, seed 3):
    /// write A staged 10 and its successor committed it (a reader saw it), the forward's
    /// answer was lost; write B staged 11 over it, also unsettled; A's retry then wrote
    /// A's bytes again as 12, over B, after B's retry had been answered: B was lost.
    @Test func aRetryNeverPutsAnOlderWriteBackOverALaterOne() {
        let aLaterWriteOverIt = ChunkMeta(id: c1, committed: version(9), pending: version(11))
        #expect(ReplicaWriteRule.retry(aLaterWriteOverIt, inDoubt: 10, checksum: version(10).checksum) == .settleLater(version(11)))
        #expect(ReplicaWriteRule.retry(ChunkMeta(id: c1, committed: version(9), pending: version(10)), inDoubt: 10, checksum: version(10).checksum) == .resend(version(10)))
        #expect(ReplicaWriteRule.retry(ChunkMeta(id: c1, committed: version(9), pending: version(10)), inDoubt: 10, checksum: 4242) == .writeAnew, "the same number with other bytes is not this attempt's")
        #expect(ReplicaWriteRule.retry(ChunkMeta(id: c1, committed: version(11)), inDoubt: 10, checksum: version(10).checksum) == .answered)
        #expect(ReplicaWriteRule.retry(ChunkMeta(id: c1, committed: version(10)), inDoubt: 10, checksum: version(10).checksum) == .answered)
        #expect(ReplicaWriteRule.retry(ChunkMeta(id: c1, committed: version(9)), inDoubt: 10, checksum: version(10).checksum) == .writeAnew)
        #expect(ReplicaWriteRule.retry(nil, inDoubt: 10, checksum: version(10).checksum) == .writeAnew)
        // Every state a head can hold: a retry writes anew only when nothing at or
        // above its version is here, so it can never land over a later write.
        for committed in [UInt64?.none, 1, 2, 3, 4] {
            for pendingOffset in [UInt64?.none, 1, 2, 3] {
                let pending = pendingOffset.map { (committed ?? 0) + $0 }
                let meta = (committed == nil && pending == nil) ? nil : ChunkMeta(id: c1, committed: committed.map { version($0) }, pending: pending.map { version($0) })
                for d in UInt64(1)...7 {
                    for sameBytes in [true, false] {
                        let decision = ReplicaWriteRule.retry(meta, inDoubt: d, checksum: sameBytes ? version(d).checksum : 777)
                        let newest = max(committed ?? 0, pending ?? 0)
                        switch decision {
                        case .writeAnew:
                            #expect(newest <= d, "committed \(String(describing: committed)) pending \(String(describing: pending)) d \(d): a newer version is here")
                            #expect(!(pending == d && sameBytes))
                        case .answered:
                            #expect((committed ?? 0) >= d && pending != d)
                        case .resend(let v):
                            #expect(v.version == d && pending == d && sameBytes)
                        case .settleLater(let v):
                            #expect(v.version > d && v.version == pending)
                        }
                    }
                }
            }
        }
    }

    /// A chain of replicas receives the head's writes, each forwarded along the chain,
    /// with random duplicates, resends and lost acknowledgements. Whatever the order,
    /// every replica's committed version only grows, never skips, and ends equal.
    @Test func chainsConvergeUnderResendsAndDuplicates() {
        for seed in UInt64(1)...200 {
            var rng = DeterministicRandom(seed: seed)
            let replicas = Int.random(in: 1...4, using: &rng)
            var metas = [ChunkMeta?](repeating: nil, count: replicas)
            var written: UInt64 = 0
            // A write in flight: its version and how far down the chain it got.
            var inflight: (version: UInt64, reached: Int)?
            for _ in 0..<300 {
                if inflight == nil {
                    written = ReplicaWriteRule.nextVersion(metas[0])
                    inflight = (written, 0)
                }
                var (u, reached) = inflight!
                // Deliver to the next replica (or resend to an earlier one).
                let target = rng.chance(0.2) ? Int.random(in: 0...reached, using: &rng) : min(reached, replicas - 1)
                var meta = metas[target]
                let before = meta?.committed?.version ?? 0
                switch ReplicaWriteRule.decide(meta, version: u, checksum: version(u).checksum, fullReplace: false) {
                case .stage:
                    var m = meta ?? ChunkMeta(id: c1)
                    m.pending = version(u)
                    meta = m
                case .alreadyStaged, .alreadyCommitted:
                    break
                case .replace:
                    Issue.record("replace without fullReplace")
                case .superseded(let pending, let got):
                    Issue.record("seed \(seed): replica \(target) refused \(got) below its pending \(pending)")
                }
                metas[target] = meta
                if target == reached { reached += 1 }
                if reached == replicas {
                    // The tail commits; acknowledgements commit upstream (some lost,
                    // then resent), so every replica ends with u committed.
                    for i in stride(from: replicas - 1, through: 0, by: -1) {
                        var m = metas[i]!
                        if m.pending?.version == u {
                            m.committed = m.pending
                            m.pending = nil
                        }
                        metas[i] = m
                    }
                    inflight = nil
                    u = 0
                } else {
                    inflight = (u, reached)
                }
                let after = metas[target]?.committed?.version ?? 0
                #expect(after >= before)
            }
            if inflight == nil {
                let finals = metas.map { $0?.committed?.version ?? 0 }
                #expect(Set(finals).count == 1, "seed \(seed): replicas diverged: \(finals)")
                #expect(finals.first == written)
            }
        }
    }
}

@Suite struct DedupTableTests {
    let ch = DedupTable<Int>.Channel(client: 1, channel: 0)

    @Test func retriesGetTheFirstResult() {
        var t = DedupTable<Int>(capacity: 4)
        #expect(t.begin(ch, sequence: 1) == .new)
        #expect(t.begin(ch, sequence: 1) == .inProgress)
        t.finish(ch, sequence: 1, result: 42)
        #expect(t.begin(ch, sequence: 1) == .repeated(42))
        #expect(t.begin(ch, sequence: 0) == .stale(lastSequence: 1))
        #expect(t.begin(ch, sequence: 2) == .new)
        t.abandon(ch, sequence: 2)
        #expect(t.begin(ch, sequence: 2) == .new)
    }

    @Test func aRetryOfAnUnsettledRequestIsToldWhatItLeftInDoubt() {
        var t = DedupTable<Int>(capacity: 4)
        let doubt = [c1: DedupTable<Int>.InDoubt(version: 7, checksum: 99)]
        #expect(t.begin(ch, sequence: 1) == .new)
        t.doubt(ch, sequence: 1, versions: doubt)
        #expect(t.begin(ch, sequence: 1) == .inDoubt(doubt))
        #expect(t.begin(ch, sequence: 1) == .inProgress, "the retry runs now")
        t.finish(ch, sequence: 1, result: 7)
        #expect(t.begin(ch, sequence: 1) == .repeated(7))
        #expect(t.begin(ch, sequence: 2) == .new)
        t.doubt(ch, sequence: 1, versions: doubt)
        #expect(t.begin(ch, sequence: 2) == .inProgress, "a doubt for an older request is ignored")
    }

    @Test func capacityEvictsTheLeastRecentlyUsedChannel() {
        var t = DedupTable<Int>(capacity: 2)
        let a = DedupTable<Int>.Channel(client: 1, channel: 0), b = DedupTable<Int>.Channel(client: 2, channel: 0), c = DedupTable<Int>.Channel(client: 3, channel: 0)
        _ = t.begin(a, sequence: 1)
        t.finish(a, sequence: 1, result: 1)
        _ = t.begin(b, sequence: 1)
        t.finish(b, sequence: 1, result: 2)
        _ = t.begin(a, sequence: 1)  // a used again: b is now the oldest
        _ = t.begin(c, sequence: 1)
        #expect(t.count == 2)
        #expect(t.begin(a, sequence: 1) == .repeated(1))
        #expect(t.begin(b, sequence: 1) == .new, "b was forgotten")
    }
}

@Suite struct ResyncPlannerTests {
    @Test func rules() {
        let c2 = ChunkID(inode: 2, index: 0), c3 = ChunkID(inode: 3, index: 0), c4 = ChunkID(inode: 4, index: 0), c5 = ChunkID(inode: 5, index: 0), c6 = ChunkID(inode: 6, index: 0)
        let local = [
            ChunkMeta(id: c1, committed: version(3)),               // only here: send
            ChunkMeta(id: c2, committed: version(3, chain: 5)),     // newer chain version: send
            ChunkMeta(id: c3, committed: version(3)),               // same: skip
            ChunkMeta(id: c4, committed: version(4)),               // remote lost the commit of 4: send
            ChunkMeta(id: c5, committed: version(4, crc: 7)),       // same version, different bytes: send
        ]
        let remote = [
            ChunkMeta(id: c2, committed: version(3, chain: 4)),
            ChunkMeta(id: c3, committed: version(3)),
            ChunkMeta(id: c4, committed: version(3), pending: version(4)),
            ChunkMeta(id: c5, committed: version(4, crc: 8)),
            ChunkMeta(id: c6, committed: version(1)),               // only there: remove
        ]
        #expect(ResyncPlanner.plan(local: local, remote: remote) == [.send(c1), .send(c2), .send(c4), .send(c5), .remove(c6)])
    }

    /// Found by the 200-seed sweep (crash-lost-writes seeds 18, 136, 141): a tail that
    /// crashed after committing version K+1 kept the staged data but lost the commit
    /// record, so it came back with K committed and K+1 pending. The planner used to
    /// skip that chunk, waiting for a write that was no longer in flight, and the
    /// replicas stayed a version apart forever.
    @Test func aSuccessorThatLostACommitIsSentTheChunk() {
        let local = [ChunkMeta(id: c1, committed: version(5))]
        let remote = [ChunkMeta(id: c1, committed: version(4), pending: version(5))]
        #expect(ResyncPlanner.plan(local: local, remote: remote) == [.send(c1)])
        // The replica takes the replace over its pending version...
        #expect(ReplicaWriteRule.decide(remote[0], version: 5, checksum: 0, fullReplace: true) == .replace)
        // ...and a replace that arrives after the commit it carries is a no-op.
        #expect(ReplicaWriteRule.decide(local[0], version: 5, checksum: 0, fullReplace: true) == .alreadyCommitted)
    }

    @Test func applyingThePlanMakesTheSuccessorMatch() {
        for seed in UInt64(1)...300 {
            var rng = DeterministicRandom(seed: seed)
            func randomMetas() -> [ChunkMeta] {
                (0..<8).compactMap { i -> ChunkMeta? in
                    guard rng.chance(0.7) else { return nil }
                    let v = UInt64.random(in: 1...4, using: &rng)
                    let chain = UInt64.random(in: 1...3, using: &rng)
                    // Some replicas hold a staged next version (in flight, or a commit lost in a crash).
                    let pending = rng.chance(0.3) ? version(v + 1, chain: chain) : nil
                    return ChunkMeta(id: ChunkID(inode: UInt64(i), index: 0), committed: version(v, chain: chain), pending: pending)
                }
            }
            let local = randomMetas()
            var remote: [ChunkID: ChunkMeta] = [:]
            for m in randomMetas() { remote[m.id] = m }
            for action in ResyncPlanner.plan(local: local, remote: Array(remote.values)) {
                switch action {
                case .send(let id):
                    var sent = local.first { $0.id == id }
                    sent?.pending = nil  // a full-chunk replace drops the pending version
                    remote[id] = sent
                case .remove(let id): remote[id] = nil
                }
            }
            for m in local {
                let r = remote[m.id]
                #expect(r?.committed?.version == m.committed?.version && r?.committed?.checksum == m.committed?.checksum, "seed \(seed): \(m.id) differs after resync")
            }
            #expect(Set(remote.keys) == Set(local.map(\.id)), "seed \(seed): chunk sets differ after resync")
        }
    }
}

@Suite struct DedupReplicationTests {
    @Test func aReplicaRemembersRequestsItAppliedAndAnswersTheirRetries() {
        var t = DedupTable<Int>(capacity: 4)
        let ch = DedupTable<Int>.Channel(client: 2, channel: 0)
        t.remember(ch, sequence: 151, result: 57)
        #expect(t.begin(ch, sequence: 151) == .repeated(57), "a retry of a write applied as a replica is answered")
        t.remember(ch, sequence: 150, result: 56)
        #expect(t.begin(ch, sequence: 151) == .repeated(57), "an older request never overwrites a newer one")
        #expect(t.begin(ch, sequence: 152) == .new)
    }
}
