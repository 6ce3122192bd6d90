import CisternCore
import CisternNIO
import CisternPOSIX
import CisternURing
import Foundation

/// `cistern bench disk`: the disk's raw limits and the chunk engine's figures on the
/// same directory in one run, side by side, each engine figure with the raw limit it
/// compares with and the ratio. A benchmark: it reports figures, never pass/fail.
public enum DiskBenchmark {
    /// What to measure, and where.
    public struct Options: Sendable {
        /// Where to create the scratch directory (a fresh subdirectory, removed
        /// afterwards); nil: the system temporary directory.
        public var directory: String?
        /// The raw passes.
        public var raw: RawDiskBenchmark.Options
        /// The engine passes (run once on `DiskFactory`'s disk, once on `POSIXDisk`).
        public var engine: EngineBenchmark.Options

        /// - Parameters:
        ///   - directory: parent of the scratch directory (default: the system temp dir).
        ///   - raw: the raw passes' sizes.
        ///   - engine: the engine passes' sizes.
        public init(directory: String? = nil, raw: RawDiskBenchmark.Options = .init(), engine: EngineBenchmark.Options = .init()) {
            self.directory = directory
            self.raw = raw
            self.engine = engine
        }
    }

    /// One line of the comparison: an engine figure, the raw limit it compares with,
    /// and `value / raw`. Raw rows have no `raw` and no `ratio`.
    public struct Row: Sendable, Codable {
        /// What was measured, e.g. "engine seq write 1 MiB (io_uring)".
        public var name: String
        /// The figure, in `unit`.
        public var value: Double
        /// "MB/s" (10^6 bytes per second), "IOPS" or "chunks/s".
        public var unit: String
        /// The raw figure's name, when this row compares with one.
        public var rawName: String?
        /// The raw figure, in `unit`.
        public var raw: Double?
        /// `value / raw`.
        public var ratio: Double?
        /// A second figure for the same run, e.g. chunks/s beside MB/s.
        public var detail: String?
    }

    /// Everything one run measured.
    public struct Report: Sendable, Codable {
        /// The disk's raw limits.
        public var raw: RawDiskBenchmark.Result
        /// One result per disk the engine ran on: `DiskFactory`'s, then `POSIXDisk`.
        public var engines: [EngineBenchmark.Result]
        /// The comparison table, raw rows first.
        public var rows: [Row]
        /// What the figures mean (page cache, fallbacks).
        public var notes: [String]
        /// The scratch directory (already removed).
        public var directory: String
        /// Wall-clock seconds of the whole run.
        public var wallSeconds: Double
    }

    /// Runs the raw passes, then the engine on `DiskFactory.makeBest`'s disk and on a
    /// `POSIXDisk`, each in its own subdirectory of one scratch directory that is
    /// removed afterwards (also when a pass throws). `progress` gets a line before
    /// each phase.
    public static func run(_ options: Options, progress: (String) -> Void = { _ in }) async throws -> Report {
        let clock = ContinuousClock()
        let begin = clock.now
        let parent = options.directory ?? FileManager.default.temporaryDirectory.path
        let directory = parent + "/cistern-bench-disk-\(UInt64.random(in: 0...UInt64.max) >> 16)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }

        progress("raw: \(options.raw.fileBytes >> 20) MiB scratch file in \(directory)")
        let raw = try RawDiskBenchmark.measure(directory: directory, options: options.raw)

        let runtime = ProductionRuntime(nodeName: "bench-disk", baseSeed: 1, logLevel: .critical)
        var engines: [EngineBenchmark.Result] = []
        var notes: [String] = []
        let (best, bestKind) = try DiskFactory.makeBest(root: directory + "/engine-best")
        let label = bestKind == "io_uring" ? "io_uring" : "posix"
        if bestKind != "io_uring" { notes.append("DiskFactory chose \(bestKind)") }
        progress("engine on \(bestKind)")
        engines.append(try await EngineBenchmark.measure(disk: best, kind: label, runtime: runtime, options: options.engine))
        progress("engine on posix")
        let posix = try POSIXDisk(root: directory + "/engine-posix")
        engines.append(try await EngineBenchmark.measure(disk: posix, kind: "posix", runtime: runtime, options: options.engine))

        notes.append(contentsOf: raw.notes)
        notes.append(
            "raw figures bypass the page cache (O_DIRECT), and so does the engine on io_uring (O_DIRECT for its aligned blocks); "
                + "on posix the engine reads chunks it just wrote through the page cache, so its read ratios above 1x are the page cache")
        notes.append("engine writes are fsync-bound: every block and every metadata group commit is fsynced; raw writes fsync once at the end")
        notes.append("4 KiB chunks occupy 64 KiB blocks (the smallest size class)")
        return Report(
            raw: raw, engines: engines, rows: rows(raw: raw, engines: engines), notes: notes,
            directory: directory, wallSeconds: seconds(begin.duration(to: clock.now)))
    }

    /// The comparison rows of `raw` and `engines`.
    public static func rows(raw: RawDiskBenchmark.Result, engines: [EngineBenchmark.Result]) -> [Row] {
        let seqDepth = " QD\(raw.sequentialDepth)"
        let seqSize = size(raw.sequentialBlockBytes)
        let smallSize = size(raw.randomBlockBytes)
        let rawWrite = Row(name: "raw seq write \(seqSize)\(seqDepth)", value: raw.sequentialWriteBytesPerSecond / 1e6, unit: "MB/s")
        let rawRead = Row(name: "raw seq read \(seqSize)\(seqDepth)", value: raw.sequentialReadBytesPerSecond / 1e6, unit: "MB/s")
        let rawRandom = Row(name: "raw rand read \(smallSize) QD\(raw.randomDepth)", value: raw.randomReadIOPS, unit: "IOPS")
        let rawRandom1 = Row(name: "raw rand read \(smallSize) QD1", value: raw.randomReadIOPSDepth1, unit: "IOPS")
        // Without io_uring both random passes ran at queue depth 1: show one.
        var rows = raw.randomDepth == 1 ? [rawWrite, rawRead, rawRandom] : [rawWrite, rawRead, rawRandom, rawRandom1]
        func compare(_ name: String, _ value: Double, _ unit: String, _ with: Row?, detail: String? = nil) -> Row {
            Row(
                name: name, value: value, unit: unit, rawName: with?.name, raw: with?.value,
                ratio: with.map { $0.value > 0 ? value / $0.value : 0 }, detail: detail)
        }
        for e in engines {
            let big = size(e.chunkBytes)
            let small = size(e.smallChunkBytes)
            let d = e.disk
            rows.append(compare(
                "engine seq write \(big) (\(d))", e.sequentialWriteBytesPerSecond / 1e6, "MB/s", rawWrite,
                detail: "\(format(e.sequentialWriteChunksPerSecond)) chunks/s"))
            rows.append(compare(
                "engine write \(big) x\(e.concurrency) (\(d))", e.concurrentWriteBytesPerSecond / 1e6, "MB/s", rawWrite,
                detail: "\(format(e.concurrentWriteChunksPerSecond)) chunks/s"))
            rows.append(compare("engine seq read \(big) (\(d))", e.sequentialReadBytesPerSecond / 1e6, "MB/s", rawRead))
            rows.append(compare("engine write \(small) x\(e.concurrency) (\(d))", e.smallWriteChunksPerSecond, "chunks/s", nil))
            rows.append(compare("engine rand read \(small) x\(e.concurrency) (\(d))", e.randomReadIOPS, "IOPS", rawRandom))
        }
        return rows
    }

    /// The report as aligned text: a header, the table, and the notes.
    public static func table(_ report: Report) -> String {
        let r = report.raw
        var lines = [
            "disk benchmark: \(r.fileBytes >> 20) MiB scratch file, raw I/O via \(r.method); "
                + "engine: \(report.engines.first.map { "\($0.chunks) x \(size($0.chunkBytes)) chunks, \($0.smallChunks) x \(size($0.smallChunkBytes)) chunks, \($0.concurrency) tasks" } ?? "not run")",
            "",
        ]
        let nameWidth = report.rows.map(\.name.count).max() ?? 0
        let valueWidth = report.rows.map { format($0.value).count + 1 + $0.unit.count }.max() ?? 0
        let rawWidth = report.rows.compactMap { row in row.raw.map { format($0).count + 1 + row.unit.count } }.max() ?? 0
        for row in report.rows {
            var line = pad(row.name, nameWidth) + "  " + pad("\(format(row.value)) \(row.unit)", valueWidth, left: true)
            if let raw = row.raw, let ratio = row.ratio {
                line += "   raw " + pad("\(format(raw)) \(row.unit)", rawWidth, left: true) + "   " + pad(String(format: "%.2fx", ratio), 7, left: true)
            } else if row.name.hasPrefix("engine") {
                line += "   " + pad("(no raw counterpart)", rawWidth + 4 + 3 + 7)
            }
            if let detail = row.detail { line += "   " + detail }
            lines.append(line.trimmingTrailingSpaces())
        }
        lines.append("")
        for note in report.notes { lines.append("note: \(note)") }
        lines.append("MB = 10^6 bytes; x32 = 32 tasks in flight; QDn = queue depth n. Scratch directory removed; run took \(String(format: "%.1f", report.wallSeconds)) s.")
        return lines.joined(separator: "\n")
    }

    static func size(_ bytes: Int) -> String {
        if bytes >= 1 << 20 && bytes % (1 << 20) == 0 { return "\(bytes >> 20) MiB" }
        if bytes >= 1 << 10 && bytes % (1 << 10) == 0 { return "\(bytes >> 10) KiB" }
        return "\(bytes) B"
    }

    static func format(_ value: Double) -> String {
        value >= 100 ? String(Int(value.rounded())) : String(format: "%.1f", value)
    }

    static func pad(_ s: String, _ width: Int, left: Bool = false) -> String {
        let fill = String(repeating: " ", count: max(0, width - s.count))
        return left ? fill + s : s + fill
    }
}

extension String {
    fileprivate func trimmingTrailingSpaces() -> String {
        var s = self
        while s.hasSuffix(" ") { s.removeLast() }
        return s
    }
}
