import CisternCore

/// The contents of one simulated node's disk. It outlives processes: a restarted
/// process sees what was there, minus what a machine crash lost. Each file keeps
/// its durable image (as of the last fsync) and the operations since, so a crash can
/// drop or tear them.
public final class SimDiskStore: @unchecked Sendable {
    final class File {
        var data: [UInt8] = []
        var durable: [UInt8] = []
        var allocatedBytes: UInt64 = 0
        var unsynced: [Change] = []
    }

    enum Change {
        case write(offset: UInt64, bytes: [UInt8])
        case truncate(length: UInt64)
    }

    /// Torn writes keep a prefix of whole sectors of this size.
    static let sectorBytes = 512

    unowned let world: SimWorld
    public var config: DiskConfig
    var rng: DeterministicRandom
    var files: [String: File] = [:]
    /// Faults injected so far (for reports).
    public private(set) var bitFlips = 0
    public private(set) var lostWrites = 0
    public private(set) var tornWrites = 0

    init(world: SimWorld, config: DiskConfig, rng: DeterministicRandom) {
        self.world = world
        self.config = config
        self.rng = rng
    }

    public var usedBytes: UInt64 {
        files.values.reduce(0) { $0 + max(UInt64($1.data.count), $1.allocatedBytes) }
    }

    public var fileNames: [String] { files.keys.sorted() }

    /// The bytes of `path` as a reader sees them now (nil if absent).
    public func contents(_ path: String) -> [UInt8]? { files[path]?.data }

    func sampleLatency() -> UInt64 {
        var ns = Double(config.latencyMinNanoseconds)
        if config.latencyMeanExtraNanoseconds > 0 {
            ns += -Double(config.latencyMeanExtraNanoseconds) * log(max(rng.unit(), 1e-12))
        }
        return UInt64(min(ns * max(config.slowFactor, 0), 1e13))
    }

    /// A machine crash: each unsynced change survives, is lost, or (for writes longer
    /// than a sector) is torn to a prefix of whole sectors.
    func crash() {
        for path in files.keys.sorted() {
            let f = files[path]!
            guard !f.unsynced.isEmpty else { continue }
            var image = f.durable
            for change in f.unsynced {
                let roll = rng.unit()
                switch change {
                case .write(let offset, let bytes):
                    if roll < 0.4 {
                        lostWrites += 1
                        continue
                    }
                    var kept = bytes
                    if roll < 0.6, bytes.count > Self.sectorBytes {
                        let sectors = bytes.count / Self.sectorBytes
                        kept = Array(bytes.prefix(Self.sectorBytes * Int.random(in: 0..<sectors, using: &rng)))
                        tornWrites += 1
                    }
                    Self.apply(.write(offset: offset, bytes: kept), to: &image)
                case .truncate:
                    if roll < 0.4 {
                        lostWrites += 1
                        continue
                    }
                    Self.apply(change, to: &image)
                }
            }
            f.data = image
            f.durable = image
            f.unsynced.removeAll()
        }
        world.trace.note(.diskFault, at: world.nowNanoseconds, "crash: \(lostWrites) lost, \(tornWrites) torn writes so far")
    }

    func wipe() { files.removeAll() }

    /// Flips one random bit in `path` (or in a random non-empty file), on the media:
    /// the durable image and the cached view both change. Returns what was flipped.
    /// `within` limits the flip to a byte range of the file (for example one chunk's block).
    /// `matching` limits it to files whose path contains that text (for example
    /// `/chunks/` for chunk data).
    @discardableResult
    public func flipBit(in path: String? = nil, within range: Range<Int>? = nil, matching: String? = nil) -> (path: String, offset: Int, bit: Int)? {
        let candidates = (path.map { [$0] } ?? fileNames).filter { name in
            (files[name]?.data.count ?? 0) > 0 && (matching.map { name.contains($0) } ?? true)
        }
        guard !candidates.isEmpty else { return nil }
        let chosen = candidates[Int.random(in: 0..<candidates.count, using: &rng)]
        let f = files[chosen]!
        let span = range.map { max(0, $0.lowerBound)..<min(f.data.count, $0.upperBound) } ?? 0..<f.data.count
        guard !span.isEmpty else { return nil }
        let offset = Int.random(in: span, using: &rng)
        let bit = Int.random(in: 0..<8, using: &rng)
        f.data[offset] ^= UInt8(1 << bit)
        if offset < f.durable.count { f.durable[offset] ^= UInt8(1 << bit) }
        bitFlips += 1
        world.trace.note(.diskFault, at: world.nowNanoseconds, "bit flip in \(chosen) at \(offset) bit \(bit)")
        return (chosen, offset, bit)
    }

    static func apply(_ change: Change, to image: inout [UInt8]) {
        // Bulk copies, not element-wise generic collection operations: simulated
        // logs take millions of small writes and debug builds run this unspecialised.
        switch change {
        case .write(let offset, let bytes):
            let start = Int(offset)
            let end = start + bytes.count
            if image.count < end { image.append(contentsOf: [UInt8](repeating: 0, count: end - image.count)) }
            guard !bytes.isEmpty else { return }
            image.withUnsafeMutableBytes { dst in
                bytes.withUnsafeBytes { src in
                    (dst.baseAddress! + start).copyMemory(from: src.baseAddress!, byteCount: src.count)
                }
            }
        case .truncate(let length):
            let n = Int(length)
            if image.count > n {
                image.removeLast(image.count - n)
            } else if image.count < n {
                image.append(contentsOf: [UInt8](repeating: 0, count: n - image.count))
            }
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
