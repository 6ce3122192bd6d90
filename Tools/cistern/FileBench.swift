import ArgumentParser
import Cistern
import CisternConnect
import CisternServer
import Foundation

/// `cistern bench files`: the native client's file throughput against a running
/// cluster, one request at a time (what one fio job with ioengine=psync does on a
/// mount), so scripts/bench_fuse.py can set the mount beside it.
struct FileBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "files",
        abstract: "Sequential and random file I/O through the native client (one request in flight), as JSON with --json.")

    @Option(help: "The data dir of a cluster that cistern up started (default: the last one)") var dataDir: String?
    @Option(help: "Size of the file written then read (MiB)") var megabytes = 256
    @Option(help: "Seconds each random pass runs") var seconds = 10.0
    @Flag(help: "Print the result as one JSON object.") var json = false

    struct Row: Codable {
        var name: String
        var blockBytes: Int
        var megabytesPerSecond: Double
        var operationsPerSecond: Double
    }

    func run() async throws {
        var rows: [Row] = []
        try await withSession(dataDir) { s in
            let c = s.client
            let path = "/bench-files-\(getpid())"
            let total = megabytes << 20
            var block = [UInt8](repeating: 0, count: 1 << 20)
            for k in block.indices { block[k] = UInt8(truncatingIfNeeded: k &* 31 &+ 7) }
            // Sequential write, 1 MiB at a time.
            let w = try await c.open(path, write: true, create: true)
            var start = Date()
            var offset = 0
            while offset < total {
                try await c.write(w, at: UInt64(offset), block)
                offset += block.count
            }
            try await c.close(w, length: UInt64(total))
            rows.append(Self.row("seq-write", 1 << 20, bytes: total, ops: total >> 20, since: start))
            // Sequential read.
            let r = try await c.open(path)
            start = Date()
            offset = 0
            while offset < total {
                let got = try await c.read(r, at: UInt64(offset), length: 1 << 20)
                guard got.count == 1 << 20 else { throw fail("short read at \(offset): \(got.count) bytes") }
                offset += got.count
            }
            rows.append(Self.row("seq-read", 1 << 20, bytes: total, ops: total >> 20, since: start))
            // Random reads and writes at 4 KiB and 64 KiB, for `seconds` each.
            var rng = SystemRandomNumberGenerator()
            for (name, size, write) in [("rand-read", 4096, false), ("rand-read", 65536, false), ("rand-write", 65536, true)] {
                let h = write ? try await c.open(path, write: true) : r
                start = Date()
                var ops = 0
                let payload = Array(block.prefix(size))
                while Date().timeIntervalSince(start) < seconds {
                    let at = UInt64(Int.random(in: 0..<(total / size), using: &rng) * size)
                    if write {
                        try await c.write(h, at: at, payload)
                    } else {
                        _ = try await c.read(h, at: at, length: size)
                    }
                    ops += 1
                }
                rows.append(Self.row(name, size, bytes: ops * size, ops: ops, since: start))
                if write { try await c.close(h, length: UInt64(total)) }
            }
            try await c.close(r, length: nil)
            try await c.remove(path)
        }
        if json {
            print(String(decoding: try JSONEncoder().encode(rows), as: UTF8.self))
        } else {
            for r in rows { print("\(r.name) \(r.blockBytes)B: \(String(format: "%.1f", r.megabytesPerSecond)) MB/s, \(String(format: "%.0f", r.operationsPerSecond)) op/s") }
        }
    }

    static func row(_ name: String, _ block: Int, bytes: Int, ops: Int, since: Date) -> Row {
        let s = max(Date().timeIntervalSince(since), 1e-9)
        return Row(name: name, blockBytes: block, megabytesPerSecond: Double(bytes) / s / 1e6, operationsPerSecond: Double(ops) / s)
    }
}
