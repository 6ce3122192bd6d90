import CisternCore
import CisternRouting

/// Chooses a new file's chains: `stripe` consecutive chains of the table starting at
/// a per-directory round-robin position, then shuffled with a seed derived from the
/// inode number (our own generator, never the standard library's shuffle, so the
/// placement is the same on every build and platform).
public enum ChainAllocator {
    public static func chains(table: [ChainID], start: Int, stripe: Int, seed: UInt64) -> [ChainID] {
        guard !table.isEmpty, stripe > 0 else { return [] }
        let n = min(stripe, table.count)
        var picked = (0..<n).map { table[(start + $0) % table.count] }
        var rng = DeterministicRandom(seed: seed)
        // Fisher-Yates with our generator.
        var i = picked.count - 1
        while i > 0 {
            let j = Int(rng.next() % UInt64(i + 1))
            picked.swapAt(i, j)
            i -= 1
        }
        return picked
    }

    /// The seed of a file's shuffle: a fixed function of its inode number.
    public static func seed(for inode: InodeID) -> UInt64 {
        StableHash.fnv1a64("layout/\(inode.rawValue)")
    }
}
