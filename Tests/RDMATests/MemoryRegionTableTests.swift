import CisternCore
import CisternRDMA
import Testing

@Suite("Memory-region bookkeeping")
struct MemoryRegionTableTests {
    static func region(_ address: UInt64, _ length: UInt64, key: UInt32) -> MemoryRegion {
        MemoryRegion(address: address, length: length, lkey: key, rkey: key + 0x1000)
    }

    @Test("registrations are kept sorted and found by any range inside them")
    func lookups() throws {
        var table = MemoryRegionTable()
        try table.insert(Self.region(0x3000, 0x1000, key: 3))
        try table.insert(Self.region(0x1000, 0x1000, key: 1))
        try table.insert(Self.region(0x2000, 0x800, key: 2))  // touches 0x1000's end: allowed
        #expect(table.regions.map(\.address) == [0x1000, 0x2000, 0x3000])
        #expect(table.count == 3)
        #expect(table.totalBytes == 0x2800)

        #expect(try table.region(covering: 0x1000, length: 0x1000).lkey == 1)
        #expect(try table.region(covering: 0x1FFF, length: 1).lkey == 1)
        #expect(try table.region(covering: 0x2000, length: 0).lkey == 2)
        #expect(try table.region(covering: 0x3800, length: 0x800).lkey == 3)
        #expect(table.region(rkey: 0x1002)?.address == 0x2000)
        #expect(table.region(rkey: 0x9999) == nil)
        #expect(try table.validateRemoteAccess(rkey: 0x1003, address: 0x3000, length: 0x1000).lkey == 3)
    }

    @Test("overlapping, empty, wrapping and duplicate-key registrations are refused precisely")
    func refusedRegistrations() throws {
        var table = MemoryRegionTable()
        let a = Self.region(0x1000, 0x1000, key: 1)
        try table.insert(a)
        let before = table

        let inside = Self.region(0x1800, 0x10, key: 2)
        #expect(throws: MemoryRegionError.overlaps(new: inside, existing: a)) { try table.insert(inside) }
        let straddlingStart = Self.region(0x0800, 0x0801, key: 3)
        #expect(throws: MemoryRegionError.overlaps(new: straddlingStart, existing: a)) { try table.insert(straddlingStart) }
        let straddlingEnd = Self.region(0x1FFF, 0x10, key: 4)
        #expect(throws: MemoryRegionError.overlaps(new: straddlingEnd, existing: a)) { try table.insert(straddlingEnd) }
        let covering = Self.region(0x0000, 0x10000, key: 5)
        #expect(throws: MemoryRegionError.overlaps(new: covering, existing: a)) { try table.insert(covering) }
        #expect(throws: MemoryRegionError.emptyRegion(address: 0x5000)) { try table.insert(Self.region(0x5000, 0, key: 6)) }
        #expect(throws: MemoryRegionError.wrapsAddressSpace(address: UInt64.max - 4, length: 10)) {
            try table.insert(Self.region(UInt64.max - 4, 10, key: 7))
        }
        let sameKey = MemoryRegion(address: 0x9000, length: 1, lkey: 99, rkey: a.rkey)
        #expect(throws: MemoryRegionError.duplicateRemoteKey(new: sameKey, existing: a)) { try table.insert(sameKey) }
        #expect(table == before, "a refused registration changed the table")

        // The error texts say what collided with what.
        let text = MemoryRegionError.overlaps(new: inside, existing: a).description
        #expect(text.contains("0x1800") && text.contains("0x1000"))
    }

    @Test("accesses outside every region or past a region's end are refused precisely")
    func refusedAccesses() throws {
        var table = MemoryRegionTable()
        let a = Self.region(0x1000, 0x1000, key: 1)
        let b = Self.region(0x2000, 0x1000, key: 2)
        try table.insert(a)
        try table.insert(b)
        #expect(throws: MemoryRegionError.notRegistered(address: 0xFFF, length: 1)) { try table.region(covering: 0xFFF, length: 1) }
        #expect(throws: MemoryRegionError.notRegistered(address: 0x3000, length: 1)) { try table.region(covering: 0x3000, length: 1) }
        // Adjacent regions are separate registrations: an access may not span both.
        #expect(throws: MemoryRegionError.outOfRange(address: 0x1FF0, length: 0x20, region: a)) {
            try table.region(covering: 0x1FF0, length: 0x20)
        }
        #expect(throws: MemoryRegionError.outOfRange(address: 0x2001, length: UInt64.max, region: b)) {
            try table.region(covering: 0x2001, length: UInt64.max)
        }
        #expect(throws: MemoryRegionError.unknownRemoteKey(0x4242)) {
            try table.validateRemoteAccess(rkey: 0x4242, address: 0x1000, length: 1)
        }
        // The right key for the wrong range.
        #expect(throws: MemoryRegionError.outOfRange(address: 0x2000, length: 1, region: a)) {
            try table.validateRemoteAccess(rkey: a.rkey, address: 0x2000, length: 1)
        }
    }

    @Test("removing frees exactly the region that starts at the address")
    func removal() throws {
        var table = MemoryRegionTable()
        let a = Self.region(0x1000, 0x1000, key: 1)
        try table.insert(a)
        #expect(throws: MemoryRegionError.noRegionStartsAt(address: 0x1800)) { try table.remove(address: 0x1800) }
        let removed = try table.remove(address: 0x1000)
        #expect(removed == a)
        #expect(table.isEmpty)
        #expect(throws: MemoryRegionError.noRegionStartsAt(address: 0x1000)) { try table.remove(address: 0x1000) }
        #expect(throws: MemoryRegionError.notRegistered(address: 0x1000, length: 1)) { try table.region(covering: 0x1000, length: 1) }
        // The space can be registered again, also with the freed key.
        try table.insert(Self.region(0x0800, 0x1000, key: 1))
    }

    /// Random registrations, removals and lookups over a small address space, checked
    /// against a model that keeps one owner per byte.
    @Test("random operations agree with a byte-map model", arguments: 1...40)
    func randomAgainstModel(seed: UInt64) throws {
        var random = DeterministicRandom(seed: seed)
        var table = MemoryRegionTable()
        let space = 512
        var owner = [Int?](repeating: nil, count: space)  // byte -> index into `live`
        var live: [Int: MemoryRegion] = [:]  // model id -> region
        var nextID = 0
        var nextKey: UInt32 = 1

        func modelCovering(_ address: Int, _ length: Int) -> Result<MemoryRegion, MemoryRegionError> {
            guard address < space, let id = owner[address], let region = live[id] else {
                return .failure(.notRegistered(address: UInt64(address), length: UInt64(length)))
            }
            let end = address + length
            if end > Int(region.end) { return .failure(.outOfRange(address: UInt64(address), length: UInt64(length), region: region)) }
            return .success(region)
        }

        for _ in 0..<300 {
            switch random.next() % 4 {
            case 0, 1:
                let address = Int(random.next() % UInt64(space))
                let length = Int(random.next() % 64)
                // Keys repeat now and then to exercise the duplicate check.
                let key = random.chance(0.1) && nextKey > 1 ? UInt32(random.next() % UInt64(nextKey - 1)) + 1 : nextKey
                let region = MemoryRegion(address: UInt64(address), length: UInt64(length), lkey: key, rkey: key)
                let collision = (address..<min(address + length, space)).lazy.compactMap { owner[$0] }.first
                let keyTaken = live.values.contains { $0.rkey == key }
                let beyond = address + length > space
                do throws(MemoryRegionError) {
                    try table.insert(region)
                    #expect(length > 0 && collision == nil && !keyTaken, "seed \(seed): accepted \(region)")
                    guard !beyond else {
                        // Past the modelled space: remove it again to keep the model exact.
                        try table.remove(address: region.address)
                        continue
                    }
                    live[nextID] = region
                    for byte in address..<(address + length) { owner[byte] = nextID }
                    nextID += 1
                    if key == nextKey { nextKey += 1 }
                } catch {
                    switch error {
                    case .emptyRegion: #expect(length == 0)
                    case .overlaps(_, let existing):
                        #expect(length > 0)
                        #expect(collision != nil, "seed \(seed): refused \(region) as overlapping \(existing)")
                        if let c = collision { #expect(live[c] != nil) }
                        #expect(existing.address < region.end && region.address < existing.end)
                    case .duplicateRemoteKey(_, let existing):
                        #expect(keyTaken && existing.rkey == key)
                    default:
                        Issue.record("seed \(seed): unexpected \(error) registering \(region)")
                    }
                    if key == nextKey { nextKey += 1 }
                }
            case 2:
                let address = Int(random.next() % UInt64(space))
                let length = Int(random.next() % 80)
                let expected = modelCovering(address, length)
                let actual: Result<MemoryRegion, MemoryRegionError>
                do throws(MemoryRegionError) {
                    actual = .success(try table.region(covering: UInt64(address), length: UInt64(length)))
                } catch {
                    actual = .failure(error)
                }
                #expect(actual == expected, "seed \(seed): lookup of \(length) at \(address)")
                if case .success(let region) = expected {
                    #expect(try table.validateRemoteAccess(rkey: region.rkey, address: UInt64(address), length: UInt64(length)) == region)
                }
            default:
                guard !live.isEmpty else { continue }
                let ids = live.keys.sorted()
                let id = ids[Int(random.next() % UInt64(ids.count))]
                guard let region = live[id] else { continue }
                if random.chance(0.2) {
                    // Removing by an address that is not a region's start is refused.
                    let inner = region.address + max(1, region.length / 2)
                    if region.length > 1 {
                        #expect(throws: MemoryRegionError.noRegionStartsAt(address: inner)) { try table.remove(address: inner) }
                    }
                    continue
                }
                let removed = try table.remove(address: region.address)
                #expect(removed == region)
                live[id] = nil
                for byte in Int(region.address)..<Int(region.end) { owner[byte] = nil }
            }
            #expect(table.count == live.count, "seed \(seed)")
            let sorted = table.regions
            for (a, b) in zip(sorted, sorted.dropFirst()) {
                #expect(a.end <= b.address, "seed \(seed): \(a) and \(b) overlap")
            }
        }
    }
}

@Suite("Extent allocator")
struct ExtentAllocatorTests {
    @Test("first fit, aligned starts, merging on free, precise refusals")
    func basics() throws {
        var allocator = ExtentAllocator(capacity: 1000, alignment: 64)
        let maybeA = allocator.allocate(10)
        let a = try #require(maybeA)
        let maybeB = allocator.allocate(100)
        let b = try #require(maybeB)
        #expect(a == BufferExtent(offset: 0, length: 10))
        #expect(b == BufferExtent(offset: 64, length: 100))
        let none0 = allocator.allocate(0)
        let none1001 = allocator.allocate(1001)
        #expect(none0 == nil && none1001 == nil)
        try allocator.free(a)
        #expect(throws: ExtentAllocatorError.notAllocated(a)) { try allocator.free(a) }
        #expect(throws: ExtentAllocatorError.lengthMismatch(BufferExtent(offset: 64, length: 5), allocatedLength: 100)) {
            try allocator.free(BufferExtent(offset: 64, length: 5))
        }
        // The freed hole is reused first.
        let reused = allocator.allocate(64)
        #expect(reused == BufferExtent(offset: 0, length: 64))
        // The unaligned tail: the last 1000 - 192 = 808 bytes.
        let maybeTail = allocator.allocate(808)
        let tail = try #require(maybeTail)
        #expect(tail.end == 1000)
        let full = allocator.allocate(1)
        #expect(full == nil)
        try allocator.free(tail)
        try allocator.free(b)
        try allocator.free(BufferExtent(offset: 0, length: 64))
        #expect(allocator.freeBytes == 1000)
        #expect(allocator.largestFreeExtent == 1000)
        let whole = allocator.allocate(1000)
        #expect(whole == BufferExtent(offset: 0, length: 1000))
    }

    @Test("random allocations never overlap and always fit when a free range is large enough", arguments: 1...40)
    func randomAgainstModel(seed: UInt64) throws {
        var random = DeterministicRandom(seed: seed &* 7919)
        let capacity = 4096 + Int(random.next() % 512)
        var allocator = ExtentAllocator(capacity: capacity, alignment: 64)
        var used = [Bool](repeating: false, count: capacity)
        var held: [BufferExtent] = []
        for _ in 0..<400 {
            if held.isEmpty || random.chance(0.55) {
                let length = Int(random.next() % 700) + 1
                if let extent = allocator.allocate(length) {
                    #expect(extent.offset % 64 == 0 && extent.length == length && extent.end <= capacity, "seed \(seed): \(extent)")
                    for byte in extent.offset..<extent.end {
                        #expect(!used[byte], "seed \(seed): \(extent) overlaps a live extent")
                        used[byte] = true
                    }
                    held.append(extent)
                } else {
                    // No aligned start may leave room for the allocation's reserved
                    // bytes (its length rounded up to 64, or the rest of an unaligned tail)
                    // clear of every live extent's reserved bytes.
                    func reservedEnd(_ e: BufferExtent) -> Int { min(e.offset + ((e.length + 63) & ~63), capacity) }
                    var fits = false
                    for start in stride(from: 0, to: capacity, by: 64) {
                        let reserved = min((length + 63) & ~63, capacity - start)
                        if reserved >= length, held.allSatisfy({ $0.offset >= start + reserved || reservedEnd($0) <= start }) {
                            fits = true
                            break
                        }
                    }
                    #expect(!fits, "seed \(seed): refused \(length) bytes though a free aligned run exists")
                }
            } else {
                let index = Int(random.next() % UInt64(held.count))
                let extent = held.remove(at: index)
                try allocator.free(extent)
                for byte in extent.offset..<extent.end { used[byte] = false }
                #expect(!allocator.isAllocated(extent))
            }
            #expect(allocator.allocatedCount == held.count)
        }
        for extent in held { try allocator.free(extent) }
        #expect(allocator.freeBytes == capacity, "seed \(seed): freeing everything leaves \(allocator.freeBytes) of \(capacity)")
    }
}
