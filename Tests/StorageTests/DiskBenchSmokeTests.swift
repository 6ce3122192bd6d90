import CisternBench
import Foundation
import Testing

/// Runs `cistern bench disk`'s measuring code at tiny sizes: every figure comes out
/// positive and the scratch directory is removed. No timing assertions.
@Suite struct DiskBenchSmokeTests {
    @Test func tinyRunGivesPositiveFiguresAndCleansUp() async throws {
        let parent = FileManager.default.temporaryDirectory.appendingPathComponent("cistern-benchsmoke-\(UInt64.random(in: 0...UInt64.max))").path
        defer { try? FileManager.default.removeItem(atPath: parent) }
        let options = DiskBenchmark.Options(
            directory: parent,
            raw: .init(fileBytes: 4 << 20, randomSeconds: 0.05),
            engine: .init(chunks: 8, smallChunks: 8, concurrency: 4, randomSeconds: 0.05))
        let report = try await DiskBenchmark.run(options)

        let raw = report.raw
        #expect(raw.fileBytes == 4 << 20)
        for figure in [raw.sequentialWriteBytesPerSecond, raw.sequentialReadBytesPerSecond, raw.randomReadIOPS, raw.randomReadIOPSDepth1] {
            #expect(figure > 0 && figure.isFinite)
        }
        #expect(report.engines.map(\.disk).last == "posix")
        #expect(report.engines.count == 2)
        for e in report.engines {
            for figure in [
                e.sequentialWriteBytesPerSecond, e.sequentialWriteChunksPerSecond, e.sequentialReadBytesPerSecond,
                e.concurrentWriteBytesPerSecond, e.concurrentWriteChunksPerSecond, e.smallWriteChunksPerSecond,
                e.randomReadIOPS,
            ] {
                #expect(figure > 0 && figure.isFinite, "\(e.disk)")
            }
        }
        for row in report.rows {
            #expect(row.value > 0, "\(row.name)")
            if let ratio = row.ratio { #expect(ratio > 0, "\(row.name)") }
        }
        #expect(DiskBenchmark.table(report).contains("engine rand read 4 KiB x4 (posix)"))
        #expect(!FileManager.default.fileExists(atPath: report.directory))
    }

    @Test func rawFallbackWithoutIOUringGivesPositiveFigures() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("cistern-benchsmoke-\(UInt64.random(in: 0...UInt64.max))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let raw = try RawDiskBenchmark.measure(
            directory: directory, options: .init(fileBytes: 4 << 20, randomSeconds: 0.05, useIOUring: false))
        #expect(raw.method.hasPrefix("pread/pwrite"))
        #expect(raw.randomDepth == 1 && raw.sequentialDepth == 1)
        for figure in [raw.sequentialWriteBytesPerSecond, raw.sequentialReadBytesPerSecond, raw.randomReadIOPS, raw.randomReadIOPSDepth1] {
            #expect(figure > 0 && figure.isFinite)
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty)
    }
}
