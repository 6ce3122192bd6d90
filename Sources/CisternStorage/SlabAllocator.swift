import HeapModule

/// Hands out fixed-size blocks of each size class from a few large files, never one
/// file per chunk. Pure bookkeeping: it says when a file must grow (the engine then
/// preallocates the range and calls `grew`), and it is rebuilt after a crash from
/// the blocks that committed metadata still references, so a block is never handed
/// out twice and none leaks.
public struct SlabAllocator: Sendable, Equatable {
    /// Blocks added to a file the first time its class runs out there. Later growths
    /// of the same file double it (each adds as many blocks as it holds), up to
    /// `growBytesMax` per growth, so a file is extended (and fsynced) a few times, not
    /// once every `growBlocks` blocks: each growth stalls the class's writes.
    public let growBlocks: UInt32
    /// The most bytes one growth adds beyond `growBlocks` blocks.
    public static let growBytesMax = 64 << 20
    /// Blocks one file may hold before the class starts a new file.
    public let blocksPerFile: UInt32
    private var classes: [ClassState]

    struct ClassState: Sendable, Equatable {
        /// Blocks made available so far, per file.
        var provisioned: [UInt32] = []
        /// Free blocks, a min-heap so the lowest address is reused first in
        /// O(log n): a target holds millions of blocks and frees one per overwrite.
        var free = Heap<BlockAddress>()
        var used: Set<BlockAddress> = []

        static func == (a: ClassState, b: ClassState) -> Bool {
            a.provisioned == b.provisioned && a.used == b.used && a.free.unordered.sorted() == b.free.unordered.sorted()
        }
    }

    /// What the engine must do before `allocate` can succeed.
    public enum Growth: Error, Sendable, Equatable {
        /// Preallocate `blocks` blocks of `sizeClass` in `file`, starting at block `from`.
        case extend(sizeClass: SizeClass, file: UInt32, from: UInt32, blocks: UInt32)
    }

    public init(growBlocks: UInt32 = 16, blocksPerFile: UInt32 = 256) {
        precondition(growBlocks > 0 && blocksPerFile >= growBlocks, "grow by at least one block, and by no more than a file holds")
        self.growBlocks = growBlocks
        self.blocksPerFile = blocksPerFile
        self.classes = Array(repeating: ClassState(), count: SizeClass.count)
    }

    /// Takes the lowest free block of `c`, or says how to grow.
    public mutating func allocate(_ c: SizeClass) -> Result<BlockAddress, Growth> {
        if !classes[c.index].free.isEmpty {
            let b = classes[c.index].free.removeMin()
            classes[c.index].used.insert(b)
            return .success(b)
        }
        return .failure(nextGrowth(c))
    }

    func nextGrowth(_ c: SizeClass) -> Growth {
        let files = classes[c.index].provisioned
        if let last = files.indices.last, files[last] < blocksPerFile {
            let from = files[last]
            let doubling = min(from, UInt32(max(1, Self.growBytesMax / c.blockBytes)))
            return .extend(sizeClass: c, file: UInt32(last), from: from, blocks: min(max(growBlocks, doubling), blocksPerFile - from))
        }
        return .extend(sizeClass: c, file: UInt32(files.count), from: 0, blocks: growBlocks)
    }

    /// Records that a growth directive was carried out: its blocks become free.
    public mutating func grew(_ g: Growth) {
        guard case .extend(let c, let file, let from, let blocks) = g else { return }
        var state = classes[c.index]
        while state.provisioned.count <= Int(file) { state.provisioned.append(0) }
        guard state.provisioned[Int(file)] == from else { return }
        state.provisioned[Int(file)] = from + blocks
        for b in from..<(from + blocks) { state.free.insert(BlockAddress(sizeClass: c, file: file, block: b)) }
        classes[c.index] = state
    }

    /// Returns a block to its class. Freeing a block that is not in use is a no-op
    /// (recovery may free what a crash already released).
    public mutating func free(_ b: BlockAddress) {
        guard classes[b.sizeClass.index].used.remove(b) != nil else { return }
        classes[b.sizeClass.index].free.insert(b)
    }

    /// Rebuilds state after a restart: `files` gives each class's file sizes in
    /// blocks (from the disk); `inUse` the blocks referenced by recovered metadata.
    /// Everything provisioned and not referenced is free.
    public static func recover(files: [SizeClass: [UInt32]], inUse: Set<BlockAddress>, growBlocks: UInt32 = 16, blocksPerFile: UInt32 = 256) -> SlabAllocator {
        var a = SlabAllocator(growBlocks: growBlocks, blocksPerFile: blocksPerFile)
        for index in 0..<SizeClass.count {
            let c = SizeClass(index: index)!
            var state = ClassState()
            state.provisioned = (files[c] ?? []).map { min($0, blocksPerFile) }
            var free: [BlockAddress] = []
            for (file, count) in state.provisioned.enumerated() {
                for b in 0..<count {
                    let addr = BlockAddress(sizeClass: c, file: UInt32(file), block: b)
                    if inUse.contains(addr) { state.used.insert(addr) } else { free.append(addr) }
                }
            }
            state.free = Heap(free)
            a.classes[index] = state
        }
        return a
    }

    public func isUsed(_ b: BlockAddress) -> Bool { classes[b.sizeClass.index].used.contains(b) }
    public func usedCount(_ c: SizeClass) -> Int { classes[c.index].used.count }
    public func freeCount(_ c: SizeClass) -> Int { classes[c.index].free.count }
    public var usedBytes: UInt64 { classes.indices.reduce(0) { $0 + UInt64(classes[$1].used.count) * UInt64(SizeClass(index: $1)!.blockBytes) } }
    public var provisionedBytes: UInt64 {
        classes.indices.reduce(0) { $0 + UInt64(classes[$1].provisioned.reduce(0, +)) * UInt64(SizeClass(index: $1)!.blockBytes) }
    }
}
