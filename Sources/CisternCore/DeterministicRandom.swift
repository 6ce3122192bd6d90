/// xoshiro256** seeded through SplitMix64: the only source of randomness for
/// component code. Forking by label gives independent, reproducible streams per
/// node and subsystem, so adding a random draw in one subsystem does not shift
/// another's sequence.
public struct DeterministicRandom: RandomNumberGenerator, Sendable {
    private var s0: UInt64, s1: UInt64, s2: UInt64, s3: UInt64
    /// The seed this generator was created from (for forking and reports).
    public let seed: UInt64

    public init(seed: UInt64) {
        self.seed = seed
        var sm = seed
        func splitmix(_ x: inout UInt64) -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s0 = splitmix(&sm); s1 = splitmix(&sm); s2 = splitmix(&sm); s3 = splitmix(&sm)
    }

    @inline(__always)
    private static func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    public mutating func next() -> UInt64 {
        let result = Self.rotl(s1 &* 5, 7) &* 9
        let t = s1 << 17
        s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3
        s2 ^= t
        s3 = Self.rotl(s3, 45)
        return result
    }

    /// An independent generator for `label`, derived from this generator's seed
    /// (not its position), so forks are stable however many draws were made.
    public func fork(_ label: String) -> DeterministicRandom {
        DeterministicRandom(seed: StableHash.fnv1a64(label, seed: seed))
    }

    /// True with probability `p` (0...1).
    public mutating func chance(_ p: Double) -> Bool {
        p > 0 && (p >= 1 || Double(next() >> 11) * 0x1.0p-53 < p)
    }

    /// A uniform double in [0, 1).
    public mutating func unit() -> Double { Double(next() >> 11) * 0x1.0p-53 }
}

/// Hashes that are the same in every process (Swift's `Hasher` is seeded per process).
public enum StableHash {
    public static func fnv1a64(_ text: String, seed: UInt64 = 0) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325 ^ seed
        for b in text.utf8 {
            h ^= UInt64(b)
            h &*= 0x100_0000_01B3
        }
        return h
    }

    public static func fnv1a64(bytes: some Sequence<UInt8>, seed: UInt64 = 0) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325 ^ seed
        for b in bytes {
            h ^= UInt64(b)
            h &*= 0x100_0000_01B3
        }
        return h
    }
}
