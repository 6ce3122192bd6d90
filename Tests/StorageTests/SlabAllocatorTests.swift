import CisternCore
import CisternStorage
import Testing

@Suite struct SlabAllocatorTests {
    @Test func sizeClassesArePowersOfTwoFrom64KiBTo64MiB() {
        #expect(SizeClass.fitting(0)?.blockBytes == 64 << 10)
        #expect(SizeClass.fitting(64 << 10)?.blockBytes == 64 << 10)
        #expect(SizeClass.fitting((64 << 10) + 1)?.blockBytes == 128 << 10)
        #expect(SizeClass.fitting(1 << 20)?.blockBytes == 1 << 20)
        #expect(SizeClass.fitting(64 << 20)?.blockBytes == 64 << 20)
        #expect(SizeClass.fitting((64 << 20) + 1) == nil)
        #expect(SizeClass.fitting(-1) == nil)
    }

    @Test func growthIsInChunksOfBlocksAndStartsNewFilesWhenFull() {
        var a = SlabAllocator(growBlocks: 4, blocksPerFile: 8)
        let c = SizeClass(index: 0)!
        guard case .failure(let g1) = a.allocate(c) else { Issue.record("expected growth"); return }
        #expect(g1 == .extend(sizeClass: c, file: 0, from: 0, blocks: 4))
        a.grew(g1)
        for i in 0..<4 {
            #expect(a.allocate(c) == .success(BlockAddress(sizeClass: c, file: 0, block: UInt32(i))))
        }
        guard case .failure(let g2) = a.allocate(c) else { Issue.record("expected growth"); return }
        #expect(g2 == .extend(sizeClass: c, file: 0, from: 4, blocks: 4))
        a.grew(g2)
        a.grew(g2)  // a repeated directive is ignored
        for _ in 0..<4 { _ = a.allocate(c) }
        guard case .failure(let g3) = a.allocate(c) else { Issue.record("expected growth"); return }
        #expect(g3 == .extend(sizeClass: c, file: 1, from: 0, blocks: 4))
    }

    /// A file doubles at each growth (64 KiB blocks: 16, then 16, 32, 64, 128 blocks
    /// fill its 256), by at most 64 MiB (1 MiB blocks: 16, 16, 32, then 64 at a time),
    /// and never by fewer than `growBlocks` (64 MiB blocks: 16 at a time).
    @Test func aFileDoublesAtEachGrowthWithinTheByteCap() {
        func steps(_ c: SizeClass) -> [UInt32] {
            var a = SlabAllocator()
            var out: [UInt32] = []
            while true {
                guard case .failure(let g) = a.allocate(c) else { continue }
                guard case .extend(_, let file, _, let blocks) = g, file == 0 else { return out }
                out.append(blocks)
                a.grew(g)
            }
        }
        #expect(steps(SizeClass.fitting(64 << 10)!) == [16, 16, 32, 64, 128])
        #expect(steps(SizeClass.fitting(1 << 20)!) == [16, 16, 32, 64, 64, 64])
        #expect(steps(SizeClass.fitting(64 << 20)!) == Array(repeating: 16, count: 16))
    }

    @Test func freedBlocksAreReusedLowestAddressFirst() {
        var a = SlabAllocator(growBlocks: 8, blocksPerFile: 8)
        let c = SizeClass(index: 1)!
        guard case .failure(let g) = a.allocate(c) else { Issue.record("expected growth"); return }
        a.grew(g)
        let blocks = (0..<8).compactMap { _ in try? a.allocate(c).get() }
        #expect(blocks.count == 8)
        for i in [6, 2, 5, 7] { a.free(blocks[i]) }
        a.free(blocks[2])  // freeing twice is a no-op
        #expect(a.freeCount(c) == 4)
        let again = (0..<4).compactMap { _ in try? a.allocate(c).get() }
        #expect(again == [2, 5, 6, 7].map { blocks[$0] })
    }

    @Test func randomAllocationsNeverHandOutABlockTwiceAndRecoveryLeaksNothing() {
        for seed in UInt64(1)...20 {
            var rng = DeterministicRandom(seed: seed)
            var a = SlabAllocator(growBlocks: 8, blocksPerFile: 32)
            var held: Set<BlockAddress> = []
            var heldInOrder: [BlockAddress] = []  // allocation order, to pick one at random
            var files: [SizeClass: [UInt32]] = [:]
            for _ in 0..<3_000 {
                let c = SizeClass(index: Int.random(in: 0..<3, using: &rng))!
                if held.isEmpty || rng.chance(0.6) {
                    switch a.allocate(c) {
                    case .success(let b):
                        #expect(!held.contains(b), "block \(b) handed out twice")
                        held.insert(b)
                        heldInOrder.append(b)
                    case .failure(let g):
                        a.grew(g)
                        if case .extend(let gc, let file, let from, let blocks) = g {
                            var list = files[gc] ?? []
                            while list.count <= Int(file) { list.append(0) }
                            list[Int(file)] = from + blocks
                            files[gc] = list
                        }
                    }
                } else {
                    let i = Int.random(in: 0..<heldInOrder.count, using: &rng)
                    heldInOrder.swapAt(i, heldInOrder.count - 1)
                    let b = heldInOrder.removeLast()
                    held.remove(b)
                    a.free(b)
                }
            }
            // After a crash the allocator is rebuilt from the file sizes and the
            // blocks the metadata references: same free and used sets.
            let recovered = SlabAllocator.recover(files: files, inUse: held, growBlocks: 8, blocksPerFile: 32)
            for i in 0..<3 {
                let c = SizeClass(index: i)!
                #expect(recovered.usedCount(c) == a.usedCount(c))
                #expect(recovered.freeCount(c) == a.freeCount(c))
            }
            for b in held { #expect(recovered.isUsed(b)) }
        }
    }
}
