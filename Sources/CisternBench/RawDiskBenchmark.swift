import CURingShim
import CisternCore
import CisternURing

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Measures what the disk under a directory can do, below every Cistern layer: direct
/// (O_DIRECT, page cache bypassed) I/O on one scratch file through io_uring, issued
/// and reaped by a tight C loop (`cistern_ring_run_fixed_io`), so the figures are the
/// limits the chunk engine's figures compare with.
///
/// Promises: the scratch file is written in full (and fsynced) before any read is
/// timed, so reads never hit holes; it is removed before `measure` returns, whether
/// it succeeds or throws. Without io_uring every figure is measured with
/// `pread`/`pwrite` at queue depth 1 and `Result.method` says so; on a file system
/// without O_DIRECT the file is opened buffered and `Result.direct` is false.
public enum RawDiskBenchmark {
    /// What to measure.
    public struct Options: Sendable {
        /// Size of the scratch file, rounded down to a whole number of sequential blocks.
        public var fileBytes: Int
        /// Size of each sequential read and write.
        public var sequentialBlockBytes: Int
        /// Operations in flight for the sequential passes.
        public var sequentialDepth: Int
        /// Size of each random read.
        public var randomBlockBytes: Int
        /// Operations in flight for the deep random-read pass (the other runs at 1).
        public var randomDepth: Int
        /// How long each random-read pass runs.
        public var randomSeconds: Double
        /// Whether to use io_uring when it is available (false: the pread/pwrite path).
        public var useIOUring: Bool

        /// - Parameters:
        ///   - fileBytes: scratch file size (default 1 GiB).
        ///   - sequentialBlockBytes: sequential I/O size (default 1 MiB).
        ///   - sequentialDepth: sequential queue depth (default 32, as fio measured it).
        ///   - randomBlockBytes: random read size (default 4 KiB; a multiple of 4096).
        ///   - randomDepth: deep random-read queue depth (default 32).
        ///   - randomSeconds: duration of each random-read pass (default 2 s).
        ///   - useIOUring: false measures with pread/pwrite at queue depth 1 even where
        ///     io_uring works (default true).
        public init(
            fileBytes: Int = 1 << 30, sequentialBlockBytes: Int = 1 << 20, sequentialDepth: Int = 32,
            randomBlockBytes: Int = 4096, randomDepth: Int = 32, randomSeconds: Double = 2, useIOUring: Bool = true
        ) {
            self.fileBytes = fileBytes
            self.sequentialBlockBytes = sequentialBlockBytes
            self.sequentialDepth = sequentialDepth
            self.randomBlockBytes = randomBlockBytes
            self.randomDepth = randomDepth
            self.randomSeconds = randomSeconds
            self.useIOUring = useIOUring
        }
    }

    /// The raw figures. Rates are per wall-clock second.
    public struct Result: Sendable, Codable {
        /// How the I/O was issued, e.g. "io_uring, O_DIRECT".
        public var method: String
        /// Whether the file was opened with O_DIRECT (false: the page cache was in the way).
        public var direct: Bool
        /// Bytes in the scratch file.
        public var fileBytes: Int
        /// Size of each sequential read and write.
        public var sequentialBlockBytes: Int
        /// Queue depth the sequential passes actually ran at (1 without io_uring).
        public var sequentialDepth: Int
        /// Size of each random read.
        public var randomBlockBytes: Int
        /// Queue depth the deep random-read pass actually ran at (1 without io_uring).
        public var randomDepth: Int
        /// Sequential overwrite of the whole file, a final fsync included.
        public var sequentialWriteBytesPerSecond: Double
        /// Sequential read of the whole file.
        public var sequentialReadBytesPerSecond: Double
        /// Random reads per second at `randomDepth`.
        public var randomReadIOPS: Double
        /// Random reads per second at queue depth 1.
        public var randomReadIOPSDepth1: Double
        /// Anything that makes these figures differ from true direct-I/O limits.
        public var notes: [String]
    }

    /// Creates `directory/raw-disk.scratch`, measures, and removes the file.
    public static func measure(directory: String, options: Options = Options()) throws -> Result {
        let block = options.sequentialBlockBytes
        let small = options.randomBlockBytes
        guard block > 0, block % 4096 == 0, small > 0, small % 4096 == 0, block <= Int(UInt32.max) else {
            throw DiskBenchError("block sizes must be positive multiples of 4096 bytes")
        }
        let blocks = max(1, options.fileBytes / block)
        let fileBytes = blocks * block
        var notes: [String] = []

        let path = directory + "/raw-disk.scratch"
        var direct = true
        var fd = cistern_open_direct(path, 1)
        if fd == -EINVAL {
            direct = false
            notes.append("the file system refused O_DIRECT: raw figures include the page cache")
            fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
            if fd < 0 { fd = -errno }
        }
        guard fd >= 0 else { throw DiskBenchError("open \(path): \(errorText(-fd))") }

        // The ring, or nil for the pread/pwrite fallback.
        var ring: OpaquePointer? = nil
        var method = direct ? "io_uring, O_DIRECT" : "io_uring, buffered"
        switch options.useIOUring ? IOUringProbe.probe() : .unavailable(reason: "io_uring not requested") {
        case .available:
            let rc = cistern_ring_create(64, &ring)
            if rc < 0 {
                ring = nil
                method = "pread/pwrite\(direct ? ", O_DIRECT" : ""), queue depth 1 (io_uring ring setup failed: \(errorText(-rc)))"
            }
        case .unavailable(let reason):
            method = "pread/pwrite\(direct ? ", O_DIRECT" : ""), queue depth 1 (\(reason))"
        }
        if ring == nil {
            notes.append("io_uring not used: every raw figure is pread/pwrite at queue depth 1")
        }
        let ringEntries = ring.map { Int(cistern_ring_entries($0)) } ?? 1
        let seqDepth = ring == nil ? 1 : max(1, min(options.sequentialDepth, ringEntries))
        let randDepth = ring == nil ? 1 : max(1, min(options.randomDepth, ringEntries))

        let bufferBytes = max(seqDepth * block, randDepth * small)
        guard let buffer = cistern_aligned_alloc(4096, UInt64(bufferBytes)) else {
            close(fd)
            unlink(path)
            throw DiskBenchError("cannot allocate \(bufferBytes) aligned bytes")
        }
        // A failed ring submission may leave operations in the kernel: then the buffer,
        // descriptor and ring are deliberately leaked rather than freed under it.
        var ringBroken = false
        defer {
            if !ringBroken {
                if let ring { cistern_ring_destroy(ring) }
                cistern_aligned_free(buffer)
                close(fd)
            }
            unlink(path)
        }
        // Random content, so nothing below can compress or deduplicate it.
        var random = DeterministicRandom(seed: 0x0C15_7E27)
        let words = buffer.bindMemory(to: UInt64.self, capacity: bufferBytes / 8)
        for i in 0..<(bufferBytes / 8) { words[i] = random.next() }

        func run(write: Bool, bytes: Int, offsets: [UInt64], depth: Int) throws {
            let rc = offsets.withUnsafeBufferPointer { p -> Int32 in
                if let ring {
                    return cistern_ring_run_fixed_io(
                        ring, fd, write ? 1 : 0, buffer, UInt32(bytes), p.baseAddress, UInt32(p.count), UInt32(depth))
                }
                return cistern_sync_run_fixed_io(fd, write ? 1 : 0, buffer, UInt32(bytes), p.baseAddress, UInt32(p.count))
            }
            if rc < 0 {
                if ring != nil { ringBroken = true }
                throw DiskBenchError("\(write ? "write" : "read") on \(path): \(errorText(-rc))")
            }
        }
        func sync() throws {
            if fsync(fd) != 0 { throw DiskBenchError("fsync \(path): \(errorText(errno))") }
        }

        let sequential = (0..<blocks).map { UInt64($0 * block) }
        // Lay the file out first (allocating its extents), so the timed pass overwrites.
        try run(write: true, bytes: block, offsets: sequential, depth: seqDepth)
        try sync()

        let clock = ContinuousClock()
        var start = clock.now
        try run(write: true, bytes: block, offsets: sequential, depth: seqDepth)
        try sync()
        let writeSeconds = seconds(start.duration(to: clock.now))

        start = clock.now
        try run(write: false, bytes: block, offsets: sequential, depth: seqDepth)
        let readSeconds = seconds(start.duration(to: clock.now))

        let smallBlocks = UInt64(fileBytes / small)
        func randomReads(depth: Int) throws -> Double {
            let batch = depth == 1 ? 256 : 64 * depth
            var offsets = [UInt64](repeating: 0, count: batch)
            var done = 0
            let begin = clock.now
            var elapsed = 0.0
            repeat {
                for i in 0..<batch { offsets[i] = random.next(upperBound: smallBlocks) * UInt64(small) }
                try run(write: false, bytes: small, offsets: offsets, depth: depth)
                done += batch
                elapsed = seconds(begin.duration(to: clock.now))
            } while elapsed < options.randomSeconds
            return Double(done) / elapsed
        }
        let deep = try randomReads(depth: randDepth)
        let shallow = try randomReads(depth: 1)

        return Result(
            method: method, direct: direct, fileBytes: fileBytes, sequentialBlockBytes: block,
            sequentialDepth: seqDepth, randomBlockBytes: small, randomDepth: randDepth,
            sequentialWriteBytesPerSecond: Double(fileBytes) / writeSeconds,
            sequentialReadBytesPerSecond: Double(fileBytes) / readSeconds,
            randomReadIOPS: deep, randomReadIOPSDepth1: shallow, notes: notes)
    }

    static func errorText(_ code: Int32) -> String {
        let text = strerror(code).map { String(cString: $0) } ?? "unknown error"
        return "\(text) (errno \(code))"
    }
}

/// A benchmark could not run (a file could not be created, an I/O failed, a bad size).
public struct DiskBenchError: Error, CustomStringConvertible {
    /// What went wrong, for the person running the benchmark.
    public let description: String
    init(_ description: String) { self.description = description }
}

/// A duration in seconds.
func seconds(_ d: Duration) -> Double {
    Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}
