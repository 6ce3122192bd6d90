import CisternCore
import CisternStorage
import CisternRouting

/// Measures the chunk engine on one `Disk`: what stage+commit and read cost per chunk,
/// one at a time and with many chunks in flight.
///
/// The engine fsyncs every block it writes and every metadata group commit, so its
/// writes are fsync-bound. On the io_uring disk its blocks are read and written with
/// O_DIRECT (they are 4 KiB-aligned), so figures are the device's; on `POSIXDisk` they
/// go through the page cache, and the chunks were just written, so read figures there
/// are mostly memory speed, not disk speed.
public enum EngineBenchmark {
    /// What to measure.
    public struct Options: Sendable {
        /// Large chunks written one at a time, read back, and written again concurrently.
        public var chunks: Int
        /// Size of each large chunk.
        public var chunkBytes: Int
        /// Small chunks written concurrently, then read at random.
        public var smallChunks: Int
        /// Size of each small chunk.
        public var smallChunkBytes: Int
        /// Tasks in flight for the concurrent writes and the random reads.
        public var concurrency: Int
        /// How long the random-read pass runs.
        public var randomSeconds: Double

        /// - Parameters:
        ///   - chunks: large chunks per pass (default 256).
        ///   - chunkBytes: large chunk size (default 1 MiB).
        ///   - smallChunks: small chunks (default 2048).
        ///   - smallChunkBytes: small chunk size (default 4 KiB).
        ///   - concurrency: tasks in flight (default 32).
        ///   - randomSeconds: duration of the random-read pass (default 2 s).
        public init(
            chunks: Int = 256, chunkBytes: Int = 1 << 20, smallChunks: Int = 2048, smallChunkBytes: Int = 4096,
            concurrency: Int = 32, randomSeconds: Double = 2
        ) {
            self.chunks = chunks
            self.chunkBytes = chunkBytes
            self.smallChunks = smallChunks
            self.smallChunkBytes = smallChunkBytes
            self.concurrency = concurrency
            self.randomSeconds = randomSeconds
        }
    }

    /// The engine's figures on one disk. Rates are per wall-clock second.
    public struct Result: Sendable, Codable {
        /// Which `Disk` the engine ran on, e.g. "io_uring" or "posix".
        public var disk: String
        /// Large chunks per pass.
        public var chunks: Int
        /// Size of each large chunk.
        public var chunkBytes: Int
        /// Small chunks written and read.
        public var smallChunks: Int
        /// Size of each small chunk.
        public var smallChunkBytes: Int
        /// Tasks in flight for the concurrent passes (at most the chunks of a pass).
        public var concurrency: Int
        /// Large chunks staged and committed one after another: bytes per second.
        public var sequentialWriteBytesPerSecond: Double
        /// The same pass: chunks per second.
        public var sequentialWriteChunksPerSecond: Double
        /// The same chunks read back one after another (page cache).
        public var sequentialReadBytesPerSecond: Double
        /// Other large chunks staged and committed with `concurrency` tasks in flight:
        /// bytes per second.
        public var concurrentWriteBytesPerSecond: Double
        /// The same pass: chunks per second.
        public var concurrentWriteChunksPerSecond: Double
        /// Small chunks staged and committed with `concurrency` tasks in flight.
        public var smallWriteChunksPerSecond: Double
        /// Random reads of the small chunks with `concurrency` tasks in flight (page cache).
        public var randomReadIOPS: Double
    }

    /// Opens a chunk engine on `disk` (an empty root) and runs every pass. `kind`
    /// names the disk in the result.
    public static func measure(disk: any Disk, kind: String, runtime: any Runtime, options: Options = Options()) async throws -> Result {
        guard options.chunks > 0, options.smallChunks > 0, options.concurrency > 0,
              options.chunkBytes > 0, options.smallChunkBytes > 0
        else { throw DiskBenchError("chunk counts, sizes and concurrency must be positive") }
        let engine = try await ChunkEngine.open(disk: disk, runtime: runtime)
        var random = DeterministicRandom(seed: 0xC157_E2)
        let large = (0..<options.chunkBytes).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        let small = (0..<options.smallChunkBytes).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        let clock = ContinuousClock()

        // One at a time: stage (block write + fsync, metadata append + fsync), commit
        // (metadata append + fsync).
        var start = clock.now
        for i in 0..<options.chunks {
            let id = ChunkID(inode: 1, index: UInt64(i))
            try await engine.stage(id, data: large, version: 1, chainVersion: 1)
            try await engine.commit(id, version: 1)
        }
        let writeSeconds = seconds(start.duration(to: clock.now))

        start = clock.now
        for i in 0..<options.chunks {
            let read = try await engine.read(ChunkID(inode: 1, index: UInt64(i)))
            guard read.data.count == options.chunkBytes else { throw DiskBenchError("chunk \(i) read back short") }
        }
        let readSeconds = seconds(start.duration(to: clock.now))

        start = clock.now
        try await writeConcurrently(engine, inode: 2, count: options.chunks, data: large, tasks: options.concurrency)
        let concurrentSeconds = seconds(start.duration(to: clock.now))

        start = clock.now
        try await writeConcurrently(engine, inode: 3, count: options.smallChunks, data: small, tasks: options.concurrency)
        let smallSeconds = seconds(start.duration(to: clock.now))

        let smallCount = UInt64(options.smallChunks)
        let limit = options.randomSeconds
        start = clock.now
        let reads = try await withThrowingTaskGroup(of: Int.self) { group in
            for t in 0..<options.concurrency {
                group.addTask {
                    var random = DeterministicRandom(seed: UInt64(t) &+ 1)
                    var done = 0
                    let clock = ContinuousClock()
                    let begin = clock.now
                    repeat {
                        for _ in 0..<16 {
                            let id = ChunkID(inode: 3, index: random.next(upperBound: smallCount))
                            _ = try await engine.read(id)
                        }
                        done += 16
                    } while seconds(begin.duration(to: clock.now)) < limit
                    return done
                }
            }
            return try await group.reduce(0, +)
        }
        let randomSeconds = seconds(start.duration(to: clock.now))

        let bytes = Double(options.chunks * options.chunkBytes)
        return Result(
            disk: kind, chunks: options.chunks, chunkBytes: options.chunkBytes, smallChunks: options.smallChunks,
            smallChunkBytes: options.smallChunkBytes, concurrency: options.concurrency,
            sequentialWriteBytesPerSecond: bytes / writeSeconds,
            sequentialWriteChunksPerSecond: Double(options.chunks) / writeSeconds,
            sequentialReadBytesPerSecond: bytes / readSeconds,
            concurrentWriteBytesPerSecond: bytes / concurrentSeconds,
            concurrentWriteChunksPerSecond: Double(options.chunks) / concurrentSeconds,
            smallWriteChunksPerSecond: Double(options.smallChunks) / smallSeconds,
            randomReadIOPS: Double(reads) / randomSeconds)
    }

    /// Stages and commits chunks 0..<count of `inode`, `tasks` at a time.
    static func writeConcurrently(_ engine: ChunkEngine, inode: UInt64, count: Int, data: [UInt8], tasks: Int) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for t in 0..<min(tasks, count) {
                group.addTask {
                    for i in stride(from: t, to: count, by: tasks) {
                        let id = ChunkID(inode: inode, index: UInt64(i))
                        try await engine.stage(id, data: data, version: 1, chainVersion: 1)
                        try await engine.commit(id, version: 1)
                    }
                }
            }
            try await group.waitForAll()
        }
    }
}
