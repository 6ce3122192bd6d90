import CisternRouting
import CisternStorage
import Testing

@Suite struct HotPagesTests {
    func key(_ i: UInt64, v: UInt64 = 1) -> HotPageSet.Key { HotPageSet.Key(owner: 1, chunk: ChunkID(inode: 1, index: i), version: v) }
    func bytes(_ n: Int, _ b: UInt8) -> [UInt8] { [UInt8](repeating: b, count: n) }

    @Test func aLookupServesOnlyTheExactLengthAndChecksum() {
        var s = HotPageSet(capacityBytes: 100)
        s.insert(key(1), checksum: 7, data: bytes(10, 1), pinned: false)
        #expect(s.lookup(key(1), length: 10, checksum: 7) == bytes(10, 1))
        #expect(s.lookup(key(1), length: 10, checksum: 8) == nil)  // another content of this version
        #expect(s.lookup(key(1), length: 9, checksum: 7) == nil)
        #expect(s.lookup(key(1, v: 2), length: 10, checksum: 7) == nil)  // another version
        #expect(s.lookup(HotPageSet.Key(owner: 2, chunk: ChunkID(inode: 1, index: 1), version: 1), length: 10, checksum: 7) == nil)
        #expect(s.hits == 1 && s.misses == 4)
    }

    @Test func evictionKeepsWithinCapacityAndGivesReadEntriesASecondChance() {
        var s = HotPageSet(capacityBytes: 30)
        for i in 0..<3 { s.insert(key(UInt64(i)), checksum: 0, data: bytes(10, UInt8(i)), pinned: false) }
        _ = s.lookup(key(0), length: 10, checksum: 0)  // referenced: survives one round
        s.insert(key(3), checksum: 0, data: bytes(10, 3), pinned: false)
        #expect(s.bytes == 30)
        #expect(s.lookup(key(0), length: 10, checksum: 0) != nil)
        #expect(s.lookup(key(1), length: 10, checksum: 0) == nil)  // the oldest unreferenced went
        #expect(s.evictions == 1)
        // Over many inserts the bytes never exceed the capacity.
        for i in 4..<200 {
            s.insert(key(UInt64(i)), checksum: 0, data: bytes(1 + i % 13, 0), pinned: false)
            #expect(s.bytes <= 30)
        }
        // An entry larger than the whole tier is not kept.
        #expect(s.insert(key(999), checksum: 0, data: bytes(31, 0), pinned: false) == nil)
        #expect(s.lookup(key(999), length: 31, checksum: 0) == nil)
    }

    @Test func pinnedEntriesAreNeverEvictedAndTheirBytesAreBounded() {
        var s = HotPageSet(capacityBytes: 40, pinnedBytesMax: 20)
        let t1 = s.insert(key(1), checksum: 0, data: bytes(10, 1), pinned: true)
        let t2 = s.insert(key(2), checksum: 0, data: bytes(10, 2), pinned: true)
        #expect(t1 != nil && t2 != nil)
        #expect(!s.canPin(1))
        #expect(s.insert(key(3), checksum: 0, data: bytes(10, 3), pinned: true) == nil)  // over the pin budget
        for i in 10..<50 { s.insert(key(UInt64(i)), checksum: 0, data: bytes(10, 0), pinned: false) }
        #expect(s.lookup(key(1), length: 10, checksum: 0) == bytes(10, 1))
        #expect(s.lookup(key(2), length: 10, checksum: 0) == bytes(10, 2))
        #expect(s.bytes <= 40 && s.pinnedBytes == 20)
        s.unpin(key(1), ticket: t1!)
        #expect(s.pinnedBytes == 10 && s.canPin(10))
        // Unpinned, it can go like any other entry.
        for i in 50..<60 { s.insert(key(UInt64(i)), checksum: 0, data: bytes(10, 0), pinned: false) }
        #expect(s.lookup(key(2), length: 10, checksum: 0) == bytes(10, 2))
        #expect(s.bytes <= 40)
    }

    @Test func anOlderWriteFinishingDoesNotUnpinANewerOneOfTheSameKey() {
        var s = HotPageSet(capacityBytes: 20, pinnedBytesMax: 20)
        let old = s.insert(key(1), checksum: 1, data: bytes(10, 1), pinned: true)!
        let new = s.insert(key(1), checksum: 2, data: bytes(10, 2), pinned: true)!
        #expect(s.pinnedBytes == 10)
        s.unpin(key(1), ticket: old)  // the first block write finished: not this entry's
        #expect(s.pinnedBytes == 10)
        for i in 2..<10 { s.insert(key(UInt64(i)), checksum: 0, data: bytes(10, 0), pinned: false) }
        #expect(s.lookup(key(1), length: 10, checksum: 2) == bytes(10, 2))
        s.unpin(key(1), ticket: new)
        #expect(s.pinnedBytes == 0)
    }

    @Test func aDiscardedEntryIsNeverServedAndGoesWhenItsWriteFinishes() {
        var s = HotPageSet(capacityBytes: 100)
        let t = s.insert(key(1), checksum: 0, data: bytes(10, 1), pinned: true)!
        s.discard(key(1))
        #expect(s.lookup(key(1), length: 10, checksum: 0) == nil)
        #expect(s.bytes == 10 && s.pinnedBytes == 10)  // still pinned: its write is in flight
        s.unpin(key(1), ticket: t)
        #expect(s.bytes == 0 && s.pinnedBytes == 0 && s.count == 0)
        s.insert(key(2), checksum: 0, data: bytes(10, 2), pinned: false)
        s.discard(key(2))
        #expect(s.count == 0 && s.bytes == 0)
    }

    @Test func removingAnOwnerDropsOnlyItsEntries() {
        var s = HotPageSet(capacityBytes: 100)
        s.insert(key(1), checksum: 0, data: bytes(10, 1), pinned: true)
        s.insert(HotPageSet.Key(owner: 2, chunk: ChunkID(inode: 1, index: 1), version: 1), checksum: 0, data: bytes(10, 2), pinned: false)
        s.removeAll(owner: 1)
        #expect(s.count == 1 && s.bytes == 10 && s.pinnedBytes == 0)
    }
}
