import ArgumentParser
import CisternBench
import CisternCore
import CisternNIO
import CisternServer
import CisternSim
import CisternWire
import Foundation

/// `cistern bench`: benchmarks that print figures, never pass/fail.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run benchmarks.",
        subcommands: [SimBench.self, DiskBench.self, MetaBench.self, KVBench.self, FileBench.self, CRCBench.self, TransportBench.self])
}

struct SimBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sim",
        abstract: "Simulated small RPCs per wall-clock second on the one simulator thread.")

    @Option(help: "Number of calls.")
    var calls = 400_000

    @Option(help: "Calls in flight at once.")
    var concurrency = 64

    @Flag(help: "Print the result as one JSON object.")
    var json = false

    func run() throws {
        #if DEBUG
        let build = "debug"
        #else
        let build = "release"
        #endif
        let r = SimBenchmark.run(calls: calls, concurrency: concurrency)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            var object = try JSONSerialization.jsonObject(with: encoder.encode(r)) as! [String: Any]
            object["build"] = build
            print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
        } else {
            print("simulated RPCs: \(r.calls) calls, \(r.concurrency) in flight, \(String(format: "%.2f", r.wallSeconds)) s wall, \(String(format: "%.3f", r.simulatedSeconds)) s simulated")
            print("rpcs_per_second: \(Int(r.rpcsPerSecond)) (\(build) build, one thread)")
            if build == "debug" { print("note: a debug build is several times slower; measure with `swift build -c release`") }
        }
    }
}

/// `cistern bench disk`: the disk's raw direct-I/O limits and the chunk engine's
/// figures (on the io_uring disk and on the POSIX disk), side by side with ratios.
struct DiskBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "disk",
        abstract: "Raw disk limits (O_DIRECT, io_uring) beside the chunk engine's figures on the same disk.",
        discussion: """
            Measures, in one run: sequential 1 MiB direct writes and reads and 4 KiB random \
            direct reads at queue depth 32 and 1 on a scratch file; then the chunk engine on \
            DiskFactory's disk and on the POSIX disk: 1 MiB chunks staged and committed one at \
            a time and with --concurrency tasks, read back, and 4 KiB chunks written and read \
            at random with --concurrency tasks. Prints each engine figure with the raw limit \
            it compares with and the ratio. A benchmark: it never fails on slow figures.
            """)

    @Option(help: "Directory to create the scratch directory in (removed afterwards). Default: the system temp dir.")
    var dir: String?

    @Option(name: .customLong("file-mb"), help: "Size of the raw scratch file in MiB.")
    var fileMB = 1024

    @Option(help: "1 MiB chunks per engine pass.")
    var chunks = 256

    @Option(name: .customLong("small-chunks"), help: "4 KiB chunks written, then read at random.")
    var smallChunks = 2048

    @Option(help: "Tasks in flight for the engine's concurrent writes and random reads.")
    var concurrency = 32

    @Option(help: "Seconds each random-read pass runs.")
    var seconds = 2.0

    @Flag(help: "Print the result as one JSON object.")
    var json = false

    func validate() throws {
        guard fileMB >= 1 else { throw ValidationError("--file-mb must be at least 1") }
        guard chunks >= 1, smallChunks >= 1 else { throw ValidationError("--chunks and --small-chunks must be at least 1") }
        guard concurrency >= 1 else { throw ValidationError("--concurrency must be at least 1") }
        guard seconds > 0 else { throw ValidationError("--seconds must be positive") }
    }

    func run() async throws {
        #if DEBUG
        let build = "debug"
        #else
        let build = "release"
        #endif
        let options = DiskBenchmark.Options(
            directory: dir,
            raw: .init(fileBytes: fileMB << 20, randomSeconds: seconds),
            engine: .init(chunks: chunks, smallChunks: smallChunks, concurrency: concurrency, randomSeconds: seconds))
        let report: DiskBenchmark.Report
        do {
            report = try await DiskBenchmark.run(options) { line in
                FileHandle.standardError.write(Data("bench disk: \(line)\n".utf8))
            }
        } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(2)
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            encoder.keyEncodingStrategy = .convertToSnakeCase
            var object = try JSONSerialization.jsonObject(with: encoder.encode(report)) as! [String: Any]
            object["build"] = build
            print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]), as: UTF8.self))
        } else {
            print(DiskBenchmark.table(report))
            print("(\(build) build)")
            if build == "debug" { print("note: a debug build is slower; measure with `make bench-disk`") }
        }
    }
}

/// `cistern bench meta`: raw SQLite insert and point-select rates beside the metadata
/// service's creates and stats on `SQLiteKV`, on the same disk, with ratios.
struct MetaBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "meta",
        abstract: "Raw SQLite limits (WAL, synchronous=FULL) beside the metadata service's creates and stats on the same disk.",
        discussion: """
            Measures, in one run, in a scratch directory: what one create writes (counted on \
            an in-memory store); raw SQLite on a database file in WAL mode with \
            synchronous=FULL: --creates transactions of BEGIN IMMEDIATE, that many rows of \
            that size, COMMIT, then point selects of random keys; then MetaService on \
            SQLiteKV: --creates creates of /bench/d<k>/f<i> over 16 directories and stats of \
            the same paths, one at a time and with --concurrency tasks. Prints each service \
            figure with the raw figure it compares with and the ratio. A benchmark: it never \
            fails on slow figures.
            """)

    @Option(help: "Directory to create the scratch directory in (removed afterwards). Default: the system temp dir.")
    var dir: String?

    @Option(help: "Creates (and stats) per service pass; insert transactions in the raw pass.")
    var creates = 2_000

    @Option(help: "Tasks in flight for the second service pass (1: only the serial pass).")
    var concurrency = 8

    @Flag(help: "Print the result as one JSON object.")
    var json = false

    func validate() throws {
        guard creates >= 1 else { throw ValidationError("--creates must be at least 1") }
        guard concurrency >= 1 else { throw ValidationError("--concurrency must be at least 1") }
    }

    func run() async throws {
        #if DEBUG
        let build = "debug"
        #else
        let build = "release"
        #endif
        let report: MetaBenchmark.Report
        do {
            report = try await MetaBenchmark.run(.init(directory: dir, creates: creates, concurrency: concurrency)) { line in
                FileHandle.standardError.write(Data("bench meta: \(line)\n".utf8))
            }
        } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(2)
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            encoder.keyEncodingStrategy = .convertToSnakeCase
            var object = try JSONSerialization.jsonObject(with: encoder.encode(report)) as! [String: Any]
            object["build"] = build
            print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]), as: UTF8.self))
        } else {
            print(MetaBenchmark.table(report))
            print("(\(build) build)")
            if build == "debug" { print("note: a debug build is slower; measure with `make bench-meta`") }
        }
    }
}

struct KVBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kv",
        abstract: "KV page put/get through a real loopback cluster beside loopback TCP, the disk, redis-server and Mooncake Store.")

    @Option(help: "Scratch directory (a fresh folder inside it is used and removed)") var dir = NSTemporaryDirectory()
    @Option(help: "Bytes moved per page size") var megabytes = 256
    @Option(help: "Pages per batch") var batch = 128
    @Flag(help: "Print the result as one JSON object.") var json = false
    @Flag(help: "Only the native client's cache-durability puts and gets (no durable, HTTP or peer rows): for quick before/after runs while profiling.")
    var nativeOnly = false

    func run() async throws {
        LargeBuffers.tuneAllocator()
        let work = (dir as NSString).appendingPathComponent("cistern-bench-kv-\(getpid())")
        defer { try? FileManager.default.removeItem(atPath: work) }
        // Mooncake Store runs from the virtual environment scripts/deps.sh --bench makes.
        let python = ProcessInfo.processInfo.environment["CISTERN_BENCH_PYTHON"] ?? ".venv-bench/bin/python"
        let script = "scripts/bench_mooncake.py"
        let haveMooncake = FileManager.default.isExecutableFile(atPath: python) && FileManager.default.fileExists(atPath: script)
        let report = try await KVBenchmark.run(binary: selfExecutable(), workDir: work, batch: batch, bytesPerSize: megabytes << 20,
                                               python: haveMooncake && !nativeOnly ? python : nil, mooncakeScript: haveMooncake ? script : nil,
                                               nativeOnly: nativeOnly) { line in
            if !json { FileHandle.standardError.write(Data("... \(line)\n".utf8)) }
        }
        if json {
            let data = try JSONEncoder().encode(report)
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(KVBenchmark.format(report))
        }
    }
}

/// `cistern bench crc`: CRC-32C throughput on the CPU's instruction and on the table,
/// beside memcpy of the same buffer (the machine's limit for touching bytes once).
struct CRCBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crc",
        abstract: "CRC-32C GB/s, hardware and software, beside memcpy of the same buffers.")

    @Option(help: "Bytes to process per figure (MiB).")
    var mebibytes = 2_048

    func run() throws {
        print("crc32c: the CPU's instruction is \(CRC32C.usesHardware ? "in use" : "not available (software table only)")")
        print("| buffer | memcpy GB/s | crc32c hardware GB/s | ratio to memcpy | crc32c software GB/s | hardware / software |")
        print("|---|---|---|---|---|---|")
        for size in [4 << 10, 64 << 10, 1 << 20] {
            let source = [UInt8]((0..<size).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) })
            var target = [UInt8](repeating: 0, count: size)
            let rounds = max(1, (mebibytes << 20) / size)
            func gigabytesPerSecond(_ body: () -> Void) -> Double {
                let start = DispatchTime.now().uptimeNanoseconds
                body()
                return Double(rounds * size) / Double(DispatchTime.now().uptimeNanoseconds - start)
            }
            var sink: UInt32 = 0
            let copy = gigabytesPerSecond {
                source.withUnsafeBytes { s in target.withUnsafeMutableBytes { t in
                    for _ in 0..<rounds { t.copyMemory(from: s); sink &+= UInt32(t[Int(sink) % size]) }
                } }
            }
            let hardware = gigabytesPerSecond {
                source.withUnsafeBytes { s in for _ in 0..<rounds { sink ^= CRC32C.checksum(s, continuing: sink) } }
            }
            let softwareRounds = max(1, rounds / 8)
            let softwareStart = DispatchTime.now().uptimeNanoseconds
            source.withUnsafeBytes { s in for _ in 0..<softwareRounds { sink ^= CRC32C.software(s, continuing: sink) } }
            let software = Double(softwareRounds * size) / Double(DispatchTime.now().uptimeNanoseconds - softwareStart)
            let label = size >= 1 << 20 ? "\(size >> 20) MiB" : "\(size >> 10) KiB"
            print("| \(label) | \(String(format: "%.1f", copy)) | \(String(format: "%.1f", hardware)) | \(String(format: "%.2f", hardware / copy))x | \(String(format: "%.2f", software)) | \(String(format: "%.1f", hardware / software))x |")
            if sink == 0x1234_5678 { print("") }  // keeps the loops from being optimized away
        }
        #if DEBUG
        print("note: a debug build; measure with the release build (make release)")
        #endif
    }
}

/// `cistern bench transport`: request throughput of the TCP transport over loopback
/// (two transports in this process, requests with a bulk payload answered by a
/// small reply), beside one raw TCP stream: what a storage hop costs before any
/// disk is involved.
struct TransportBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "transport",
        abstract: "TCP transport MB/s for requests of a few sizes, beside a raw loopback TCP stream.")

    @Option(help: "Bytes to send per figure (MiB).")
    var mebibytes = 512
    @Option(help: "Requests in flight.")
    var inFlight = 4

    func run() async throws {
        let raw = try KVBenchmark.loopbackTCP(bytes: mebibytes << 20)
        print(String(format: "raw loopback TCP stream: %.1f MB/s", raw / 1e6))
        let runtime = ProductionRuntime(nodeName: "bench", logLevel: .error)
        let resolver = StaticResolver()
        let server = TCPTransport(localNode: NodeID(1), listen: NodeAddress(host: "127.0.0.1", port: 0), resolver: resolver, runtime: runtime)
        let client = TCPTransport(localNode: NodeID(2), listen: NodeAddress(host: "127.0.0.1", port: 0), resolver: resolver, runtime: runtime)
        let address = try await server.start()
        try await client.start()
        resolver.set(NodeID(1), [address])
        server.serve(ServiceID(9)) { request in Message(method: 0, header: [UInt8(truncatingIfNeeded: request.message.bulk.count)]) }
        print("| request bulk | requests in flight | MB/s | requests/s | vs raw TCP |")
        print("|---|---|---|---|---|")
        for size in [64 << 10, 1 << 20, 4 << 20] {
            let payload = [UInt8](repeating: 7, count: size)
            let count = max(inFlight, (mebibytes << 20) / size)
            let start = DispatchTime.now().uptimeNanoseconds
            let next = Counter()
            await withTaskGroup(of: Void.self) { group in
                for _ in 0..<inFlight {
                    group.addTask {
                        while next.take() < count {
                            _ = try? await client.call(NodeID(1), service: ServiceID(9), Message(method: 1, header: [1], bulk: payload), timeoutNanoseconds: 30_000_000_000)
                        }
                    }
                }
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            let rate = Double(count * size) / seconds
            let label = size >= 1 << 20 ? "\(size >> 20) MiB" : "\(size >> 10) KiB"
            print("| \(label) | \(inFlight) | \(String(format: "%.1f", rate / 1e6)) | \(String(format: "%.0f", Double(count) / seconds)) | \(String(format: "%.2f", rate / raw))x |")
        }
        await client.shutdown()
        await server.shutdown()
    }

    final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var value = 0
        func take() -> Int {
            lock.lock()
            defer { lock.unlock() }
            value += 1
            return value - 1
        }
    }
}
