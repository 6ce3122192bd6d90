import CisternCore
import CisternSim
@testable import CisternStorage
import Testing
import CisternRouting

/// The chunk metadata log stays proportional to the live metadata (checkpoint plus
/// tail in two slots), is replayed in bounded pieces, and recovery picks the right
/// slot whatever a crash left behind.
@Suite struct MetaLogCompactionTests {
    static func meta(_ i: Int, version: UInt64) -> ChunkMeta {
        let block = BlockAddress(sizeClass: SizeClass.fitting(4_096)!, file: UInt32(i / 64), block: UInt32(i % 64))
        let v = ChunkVersion(version: version, chainVersion: 1, length: 4_096, checksum: UInt32(truncatingIfNeeded: i &* 31 &+ Int(version)), block: block)
        return ChunkMeta(id: ChunkID(inode: UInt64(i), index: 0), committed: v, pending: nil)
    }

    @Test func replayInPiecesOfAnySizeEqualsReplayingTheWhole() {
        var log: [UInt8] = []
        for k in 0..<600 {
            ChunkMetaLog.append(.put(Self.meta(k % 97, version: UInt64(k))), to: &log)
            if k % 7 == 0 { ChunkMetaLog.append(.remove(ChunkID(inode: UInt64(k % 13), index: 0)), to: &log) }
        }
        // A torn tail: half a record.
        let torn = ChunkMetaLog.frame(.put(Self.meta(5, version: 999)))
        log += torn.prefix(torn.count / 2)
        let whole = ChunkMetaLog.replay(log)
        #expect(whole.validBytes == log.count - torn.count / 2)
        var rng = DeterministicRandom(seed: 7)
        for _ in 0..<40 {
            var r = ChunkMetaLog.Replay()
            var at = 0
            while at < log.count {
                let n = min(Int.random(in: 1...300, using: &rng), log.count - at)
                r.feed(Array(log[at..<at + n]))
                at += n
            }
            #expect(r.chunks == whole.chunks)
            #expect(r.validBytes == whole.validBytes)
            #expect(r.complete && r.generation == 0)
        }
    }

    @Test func recoveryPicksTheNewestCompleteCheckpoint() {
        let state1 = Dictionary(uniqueKeysWithValues: (0..<10).map { (ChunkID(inode: UInt64($0), index: 0), Self.meta($0, version: 1)) })
        let state2 = Dictionary(uniqueKeysWithValues: (0..<12).map { (ChunkID(inode: UInt64($0), index: 0), Self.meta($0, version: 2)) })
        var legacy: [UInt8] = []
        for m in state1.values.sorted(by: { $0.id < $1.id }) { ChunkMetaLog.append(.put(m), to: &legacy) }
        let gen1 = ChunkMetaLog.checkpoint(state2, generation: 1)
        func pick(_ slots: [[UInt8]?]) -> [ChunkID: ChunkMeta] { ChunkEngine.recoveredMetadata(slots: slots) }
        // A complete newer checkpoint wins over a log without one, in either slot.
        #expect(pick([legacy, gen1]) == state2)
        #expect(pick([gen1, legacy]) == state2)
        // Every torn prefix of the checkpoint (a crash during compaction) loses to the
        // complete older log, and is never mixed into it.
        for cut in stride(from: 0, to: gen1.count, by: 17) {
            #expect(pick([legacy, Array(gen1.prefix(cut))]) == state1, "cut at \(cut)")
        }
        // A record lost from the middle of a checkpoint whose end survived (writes
        // reach the medium out of order) makes it incomplete too.
        var holed = gen1
        for i in 40..<60 { holed[i] = 0 }
        #expect(pick([legacy, holed]) == state1)
        // Records after a checkpoint apply on top of it.
        var tail = gen1
        ChunkMetaLog.append(.remove(ChunkID(inode: 3, index: 0)), to: &tail)
        var expected = state2
        expected[ChunkID(inode: 3, index: 0)] = nil
        #expect(pick([legacy, tail]) == expected)
        // A second checkpoint of a higher generation in slot 0 wins over slot 1's.
        let gen2 = ChunkMetaLog.checkpoint(state1, generation: 2)
        #expect(pick([gen2, tail]) == state1)
        // A checkpoint begin anywhere but at a log's start ends the valid prefix.
        var late = legacy
        late += ChunkMetaLog.checkpoint(state2, generation: 5)
        #expect(ChunkMetaLog.replay(late).validBytes == legacy.count)
    }

    /// A million chunk updates through an engine whose log compacts every 64 KiB:
    /// the log stays small, and a reopen (in bounded pieces) finds every chunk's last
    /// state. Then a reopen of a log far larger than one read piece.
    @Test func aMillionUpdatesReopenFromASmallLog() {
        let out = SimWorld.simulate(seed: 3) { world -> Outcome in
            let out = Outcome()
            let n = world.addNode(name: "s", host: "10.0.0.1")
            let p = world.start(n)
            let chunks = 500, rounds = 1_000
            world.spawn {
                do {
                    let e = try await ChunkEngine.open(disk: p.disk, runtime: p.runtime, compactionSlackBytes: 64 << 10)
                    var largestLog: UInt64 = 0
                    for round in 0..<rounds {
                        let writes = (0..<chunks).map { i in
                            ChunkEngine.BlockWrite(id: ChunkID(inode: UInt64(i), index: 0), data: [UInt8(truncatingIfNeeded: round), UInt8(truncatingIfNeeded: i)], version: UInt64(round + 1))
                        }
                        for r in await e.stageMany(writes, chainVersion: 1, durable: false) { _ = try r.get() }
                        for r in await e.commitMany(writes.map { ($0.id, $0.version) }, durable: round % 50 == 49) where r != nil { throw r! }
                        if round % 100 == 99 { largestLog = max(largestLog, try await Self.logBytes(p.disk)) }
                    }
                    let compactions = await e.compactions
                    let e2 = try await ChunkEngine.open(disk: p.disk, runtime: p.runtime, compactionSlackBytes: 64 << 10)
                    for i in 0..<chunks {
                        let got = try await e2.read(ChunkID(inode: UInt64(i), index: 0))
                        if got.data != [UInt8(truncatingIfNeeded: rounds - 1), UInt8(truncatingIfNeeded: i)] || got.version.version != UInt64(rounds) {
                            out.failures.append("chunk \(i) reopened as version \(got.version.version)")
                        }
                    }
                    if await e2.usedBytes != UInt64(chunks) * UInt64(SizeClass.fitting(2)!.blockBytes) {
                        out.failures.append("blocks leaked across compactions: \(await e2.usedBytes) bytes in use")
                    }
                    out.lines.append("updates \(chunks * rounds * 2) compactions \(compactions) largest log \(largestLog)")
                    // Live metadata for 500 chunks is about 50 KiB; the log stays within
                    // twice that plus the slack, far from the ~100 MB it would reach.
                    if compactions < 100 || largestLog > 512 << 10 { out.failures.append("log not compacted: \(out.lines)") }
                } catch {
                    out.failures.append("unexpected: \(error)")
                }
            }
            world.run(untilNanoseconds: 3_600_000_000_000)
            return out
        }
        #expect(out.failures.isEmpty, "\(out.failures)")
        #expect(out.lines.count == 1, "the run did not finish")
    }

    @Test func aLogLargerThanOneReadPieceReopens() {
        let out = SimWorld.simulate(seed: 4) { world -> Outcome in
            let out = Outcome()
            let n = world.addNode(name: "s", host: "10.0.0.1")
            let p = world.start(n)
            world.spawn {
                do {
                    // No compaction: the log grows past several read pieces.
                    let e = try await ChunkEngine.open(disk: p.disk, runtime: p.runtime, compactionSlackBytes: 1 << 40)
                    let chunks = 2_000
                    var round = 0
                    while try await Self.logBytes(p.disk) < UInt64(ChunkMetaLog.replayPieceBytes) * 2 + 12_345 {
                        round += 1
                        let writes = (0..<chunks).map { ChunkEngine.BlockWrite(id: ChunkID(inode: UInt64($0), index: 0), data: [UInt8(truncatingIfNeeded: round)], version: UInt64(round)) }
                        for r in await e.replaceMany(writes, chainVersion: 1, durable: true) { _ = try r.get() }
                    }
                    let e2 = try await ChunkEngine.open(disk: p.disk, runtime: p.runtime)
                    let all = await e2.allMeta()
                    if all.count != chunks || all.contains(where: { $0.committed?.version != UInt64(round) }) {
                        out.failures.append("reopened \(all.count) chunks, versions \(Set(all.compactMap { $0.committed?.version }))")
                    }
                    out.lines.append("rounds \(round)")
                } catch {
                    out.failures.append("unexpected: \(error)")
                }
            }
            world.run(untilNanoseconds: 3_600_000_000_000)
            return out
        }
        #expect(out.failures.isEmpty, "\(out.failures)")
        #expect(out.lines.count == 1, "the run did not finish")
    }

    static func logBytes(_ disk: any Disk) async throws -> UInt64 {
        var total: UInt64 = 0
        for path in ChunkMetaLog.paths {
            guard let f = try? await disk.open(path, create: false) else { continue }
            total += try await disk.size(f)
            await disk.close(f)
        }
        return total
    }
}
