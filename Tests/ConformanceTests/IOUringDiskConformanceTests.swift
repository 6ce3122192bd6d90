import CisternConformance
import CisternCore
import CisternNIO
import CisternPOSIX
import CisternURing
import CURingShim
import Foundation
import Synchronization
import Testing

/// Fresh `IOUringDisk`s, each rooted at its own directory under one temporary directory
/// that `finish()` removes.
final class IOUringDiskHarness: DiskHarness {
    let runtime: any Runtime = ProductionRuntime(nodeName: "uring-disk-test")
    let base: String
    private let disks = Mutex(0)

    init() throws {
        base = FileManager.default.temporaryDirectory.path + "/cistern-uring-\(UInt64.random(in: 0...UInt64.max))"
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
    }

    func makeDisk() async throws -> any Disk {
        try makeURingDisk()
    }

    func makeURingDisk() throws -> IOUringDisk {
        let index = disks.withLock { count in
            count += 1
            return count
        }
        return try IOUringDisk(root: "\(base)/disk\(index)")
    }

    func finish() async {
        try? FileManager.default.removeItem(atPath: base)
    }

    /// Runs `body` with the harness and removes the temporary directory afterwards.
    static func with(_ body: (IOUringDiskHarness) async throws -> Void) async throws {
        let harness = try IOUringDiskHarness()
        do {
            try await body(harness)
        } catch {
            await harness.finish()
            throw error
        }
        await harness.finish()
    }
}

/// A small seeded generator, so the mixed batch is the same on every run.
private struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// io_uring is a Linux feature that a kernel, a sysctl or a seccomp filter can deny:
/// the tests that need a ring run only where the probe succeeds.
private let uringAvailable = IOUringProbe.probe().isAvailable

@Suite struct IOUringDiskConformanceTests {
    @Test(.enabled(if: uringAvailable, "io_uring is unavailable here"))
    func passesTheDiskConformanceSuite() async throws {
        try await IOUringDiskHarness.with { harness in
            try await DiskConformance.run(harness)
        }
    }

    @Test(.enabled(if: uringAvailable, "io_uring is unavailable here"))
    func aMixedBatchAcrossEightFilesRunsInOrder() async throws {
        try await IOUringDiskHarness.with { harness in
            try await Self.mixedBatch(on: try harness.makeURingDisk(), seed: 0x5EED_0500, blockAligned: false)
        }
    }

    /// The same with offsets and most lengths in whole 4 KiB blocks, so reads and writes
    /// go through the files' O_DIRECT descriptors (where the file system gives one),
    /// mixed with unaligned ones through the page cache, truncates to odd sizes and
    /// reads past the end: every read sees the model either way.
    @Test(.enabled(if: uringAvailable, "io_uring is unavailable here"))
    func directAndBufferedTransfersOfOneFileAgree() async throws {
        try await IOUringDiskHarness.with { harness in
            let disk = try harness.makeURingDisk()
            let probe = try await disk.open("probe", create: true)
            // Most file systems give a direct descriptor; some refuse O_DIRECT.
            let fileSystemAllows = cistern_open_direct(harness.base + "/disk1/probe", 0)
            if fileSystemAllows >= 0 { _ = close(fileSystemAllows) }
            #expect(disk.usesDirectIO(probe) == (fileSystemAllows >= 0))
            for seed: UInt64 in [1, 2, 3] { try await Self.mixedBatch(on: disk, seed: seed, blockAligned: true) }
        }
    }

    /// Without O_DIRECT (`directIO: false`, or a file system that refuses it)
    /// everything goes through the page cache and behaves the same.
    @Test(.enabled(if: uringAvailable, "io_uring is unavailable here"))
    func withoutDirectIOEverythingGoesThroughThePageCache() async throws {
        try await IOUringDiskHarness.with { harness in
            let buffered = try IOUringDisk(root: harness.base + "/buffered", directIO: false)
            #expect(!buffered.usesDirectIO(try await buffered.open("f", create: true)))
            try await Self.mixedBatch(on: buffered, seed: 5, blockAligned: true)
        }
    }

    /// 500 random operations over eight new files in one batch, checked against a model
    /// of each file updated in batch order.
    static func mixedBatch(on disk: IOUringDisk, seed batchSeed: UInt64, blockAligned: Bool) async throws {
        var files: [DiskFile] = []
        for index in 0..<8 { files.append(try await disk.open("mixed-\(batchSeed)-\(index)", create: true)) }
        // A model of each file, updated in batch order; every read must see it.
        var model = [[UInt8]](repeating: [], count: 8)
        var ops: [DiskOp] = []
        var expected: [DiskCompletion] = []
        var random = SplitMix64(seed: batchSeed)  // fixed: a failure reproduces
        var seed: UInt8 = 0
        while ops.count < 500 {
            let which = Int.random(in: 0..<8, using: &random)
            let file = files[which]
            let unaligned = !blockAligned || Int.random(in: 0..<4, using: &random) == 0
            let offset = unaligned ? Int.random(in: 0..<6000, using: &random) : 4096 * Int.random(in: 0..<4, using: &random)
            switch Int.random(in: 0..<10, using: &random) {
            case 0..<4:
                let count = unaligned ? Int.random(in: 1..<3000, using: &random) : 4096 * Int.random(in: 1..<3, using: &random)
                seed &+= 1
                let bytes = (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31) &+ seed }
                if model[which].count < offset + count {
                    model[which] += [UInt8](repeating: 0, count: offset + count - model[which].count)
                }
                model[which].replaceSubrange(offset..<(offset + count), with: bytes)
                ops.append(.write(file, offset: UInt64(offset), bytes: bytes))
                expected.append(.done)
            case 4..<8:
                let count = unaligned ? Int.random(in: 0..<3000, using: &random) : Int.random(in: 1..<9000, using: &random)
                let end = min(offset + count, model[which].count)
                ops.append(.read(file, offset: UInt64(offset), length: count))
                expected.append(.read(offset < end ? Array(model[which][offset..<end]) : []))
            case 8:
                let length = Int.random(in: 0..<8000, using: &random)
                if model[which].count > length {
                    model[which].removeSubrange(length...)
                } else {
                    model[which] += [UInt8](repeating: 0, count: length - model[which].count)
                }
                ops.append(.truncate(file, length: UInt64(length)))
                expected.append(.done)
            default:
                if Bool.random(using: &random) {
                    ops.append(.fsync(file))
                } else {
                    ops.append(.fallocate(file, offset: UInt64(offset), length: 4096))
                }
                expected.append(.done)
            }
        }
        let results = await disk.submit(ops)
        #expect(results.count == 500)
        for (index, (result, want)) in zip(results, expected).enumerated() {
            #expect(result == .success(want), "operation \(index) (\(ops[index])) gave \(result)")
        }
        for (index, file) in files.enumerated() {
            #expect(try await disk.size(file) == UInt64(model[index].count))
            #expect(try await disk.read(file, offset: 0, length: model[index].count + 5000) == model[index])
            #expect(try await disk.read(file, offset: 1, length: model[index].count + 5000) == Array(model[index].dropFirst()))
            await disk.close(file)
        }
    }

    @Test(.enabled(if: uringAvailable, "io_uring is unavailable here"))
    func twoHandlesOnOneFileAreOrderedInABatch() async throws {
        try await IOUringDiskHarness.with { harness in
            let disk = try harness.makeURingDisk()
            let first = try await disk.open("shared", create: true)
            let second = try await disk.open("shared", create: false)
            let results = await disk.submit([
                .write(first, offset: 0, bytes: [1, 2, 3, 4]),
                .read(second, offset: 0, length: 4),
                .truncate(second, length: 2),
                .read(first, offset: 0, length: 4),
            ])
            #expect(results == [.success(.done), .success(.read([1, 2, 3, 4])), .success(.done), .success(.read([1, 2]))])
            await disk.close(first)
            await disk.close(second)
        }
    }

    @Test(.enabled(if: uringAvailable, "io_uring is unavailable here"))
    func sixteenMiBRoundTrip() async throws {
        try await IOUringDiskHarness.with { harness in
            let disk = try harness.makeURingDisk()
            let file = try await disk.open("big", create: true)
            let count = 16 << 20
            let bytes = (0..<count).map { UInt8(truncatingIfNeeded: ($0 >> 3) &* 131 &+ $0) }
            try await disk.write(file, offset: 7, bytes)
            #expect(try await disk.size(file) == UInt64(count + 7))
            let back = try await disk.read(file, offset: 7, length: count)
            #expect(back.count == count)
            #expect(back == bytes)
            // Many large operations in one batch: more than fit in one ring's flight.
            let results = await disk.submit((0..<8).map { .read(file, offset: UInt64($0) << 21, length: 2 << 20) })
            for (index, result) in results.enumerated() {
                let start = index << 21
                let want = [UInt8](repeating: 0, count: start < 7 ? 7 - start : 0)
                    + Array(bytes[max(start - 7, 0)..<min(start + (2 << 20) - 7, count)])
                #expect(result == .success(.read(want)), "read \(index)")
            }
            await disk.close(file)
        }
    }

    @Test(.enabled(if: uringAvailable, "io_uring is unavailable here"))
    func fsyncAndFallocateGoThroughTheRing() async throws {
        try await IOUringDiskHarness.with { harness in
            let disk = try harness.makeURingDisk()
            let file = try await disk.open("sync", create: true)
            let results = await disk.submit([
                .write(file, offset: 0, bytes: [1, 2, 3]),
                .fallocate(file, offset: 0, length: 1 << 20),
                .fsync(file),
                .read(file, offset: 0, length: 10),
                .fallocate(file, offset: 4096, length: 0),
            ])
            #expect(results == [.success(.done), .success(.done), .success(.done), .success(.read([1, 2, 3])), .success(.done)])
            #expect(try await disk.size(file) == 3, "fallocate keeps the size")
            // The reservation is real where the file system supports it: blocks were
            // allocated past the end without changing the size.
            var info = stat()
            #expect(stat(harness.base + "/disk1/sync", &info) == 0)
            #expect(info.st_size == 3)
            print("allocated blocks after fallocate: \(info.st_blocks) (512-byte units)")
            // An offset beyond the largest file offset fails like POSIXDisk.
            await #expect(throws: DiskError.self) {
                try await disk.fallocate(file, offset: UInt64.max - 1, length: 10)
            }
            await disk.close(file)
        }
    }

    @Test(.enabled(if: uringAvailable, "io_uring is unavailable here"))
    func concurrentBatchesUseSeparateRings() async throws {
        try await IOUringDiskHarness.with { harness in
            let disk = try harness.makeURingDisk()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for task in 0..<16 {
                    group.addTask {
                        let file = try await disk.open("c\(task)", create: true)
                        for round in 0..<20 {
                            let bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: task * 20 + round), count: 4096)
                            let results = await disk.submit([
                                .write(file, offset: UInt64(round) * 4096, bytes: bytes),
                                .read(file, offset: UInt64(round) * 4096, length: 4096),
                            ])
                            guard results == [.success(.done), .success(.read(bytes))] else {
                                throw DiskError.ioError(path: "c\(task)", detail: "round \(round): \(results)")
                            }
                        }
                        await disk.close(file)
                    }
                }
                try await group.waitForAll()
            }
        }
    }

    @Test func diskFactoryPicksIOUringWhenTheProbeSucceeds() async throws {
        let base = FileManager.default.temporaryDirectory.path + "/cistern-factory-\(UInt64.random(in: 0...UInt64.max))"
        defer { try? FileManager.default.removeItem(atPath: base) }
        let (disk, kind) = try DiskFactory.makeBest(root: base)
        switch IOUringProbe.probe() {
        case .available:
            #expect(kind == "io_uring")
            #expect(disk is IOUringDisk)
        case .unavailable(let reason):
            #expect(kind == "posix (io_uring unavailable: \(reason))")
            #expect(disk is POSIXDisk)
        }
        let file = try await disk.open("x", create: true)
        try await disk.write(file, offset: 0, [1, 2, 3])
        #expect(try await disk.read(file, offset: 0, length: 8) == [1, 2, 3])
        await disk.close(file)
        #expect(throws: DiskError.self) { try DiskFactory.makeBest(root: "") }
    }

    @Test(.enabled(if: uringAvailable, "io_uring is unavailable here"))
    func mapsErrorsLikePOSIXDisk() async throws {
        try await IOUringDiskHarness.with { harness in
            let disk = try IOUringDisk(root: harness.base + "/errors/")
            #expect(disk.root == harness.base + "/errors")
            let file = try await disk.open("plain", create: true)
            await disk.close(file)
            await #expect(throws: DiskError.notFound(path: "plain/x")) { try await disk.open("plain/x", create: false) }
            try FileManager.default.createDirectory(atPath: harness.base + "/errors/dir", withIntermediateDirectories: true)
            // A directory is not a file: ioError naming the reason (EISDIR, as POSIXDisk).
            do {
                _ = try await disk.open("dir", create: false)
                Issue.record("opening a directory should fail")
            } catch let error as DiskError {
                guard case .ioError(let path, let detail) = error else {
                    Issue.record("expected ioError, got \(error)")
                    return
                }
                #expect(path == "dir")
                #expect(detail.contains("errno") || detail.contains("not a regular file"))
            } catch {
                Issue.record("expected a DiskError, got \(error)")
            }
            _ = FileManager.default.createFile(atPath: harness.base + "/notadir", contents: Data([1]))
            #expect(throws: DiskError.self) { try IOUringDisk(root: harness.base + "/notadir") }
        }
    }
}
