import ArgumentParser
import Cistern
import CisternServer
import Foundation

/// `cistern demo`: a real local cluster and a KV cache workload with a progress line.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start a local cluster, run a KV cache workload against it with a progress display, check every page, stop it.")
    @Option(help: "Where the cluster lives (default: a fresh temporary folder, removed afterwards)") var dataDir: String?
    @Option(help: "Storage nodes") var storageNodes = 3
    @Option(help: "Seconds of workload") var seconds = 20
    @Option(help: "Page size in bytes") var pageBytes = 64 << 10
    @Option(help: "Pages per batch") var batch = 32

    func run() async throws {
        let dir = dataDir ?? NSTemporaryDirectory() + "cistern-demo-\(getpid())"
        let cluster = LocalCluster(dataDir: dir)
        do {
            try await cluster.up(storageNodes: storageNodes, binary: selfExecutable()) { print("up: \($0)") }
        } catch {
            throw fail("\(error)")
        }
        var failure: String?
        do {
            let s = try await ClientSession.connect(cluster, name: "demo")
            let ns = try await s.client.kvNamespace("demo", pageBytes: pageBytes, capacityPages: 1 << 20)
            let start = Date()
            var lastPrint = Date.distantPast
            var prompts = 0, stored = 0, read = 0, hits = 0, looked = 0, wrong = 0
            var rng = SystemRandomNumberGenerator()
            func page(_ key: String) -> [UInt8] {
                var h: UInt64 = 0xcbf2_9ce4_8422_2325
                for b in key.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
                return (0..<pageBytes).map { UInt8(truncatingIfNeeded: h >> UInt64(($0 % 8) * 8) &+ UInt64($0 / 8)) }
            }
            while Date().timeIntervalSince(start) < Double(seconds) {
                // A prompt: a prefix chain of pages; reuse what exists, put the rest.
                let prompt = Int.random(in: 0..<24, using: &rng)
                let keys = (0..<batch).map { "prompt\(prompt)-page\($0)" }
                let e = try await ns.exists(keys)
                looked += keys.count
                hits += e.consecutiveHits
                if e.consecutiveHits > 0 {
                    for (k, g) in zip(keys, try await ns.get(Array(keys[0..<e.consecutiveHits]))) {
                        if g.bytes == page(k) { read += 1 } else { wrong += 1 }
                    }
                }
                if e.consecutiveHits < keys.count {
                    stored += try await ns.put(keys[e.consecutiveHits...].map { ($0, page($0)) }).filter { $0 == .stored }.count
                }
                prompts += 1
                if Date().timeIntervalSince(lastPrint) >= 1 {
                    lastPrint = Date()
                    let t = Date().timeIntervalSince(start)
                    let mb = Double((stored + read) * pageBytes) / t / 1e6
                    print(String(format: "\r[%3.0fs] prompts %d  pages stored %d  read %d  hit ratio %.2f  %.1f MB/s  wrong %d   ", t, prompts, stored, read,
                                 looked > 0 ? Double(hits) / Double(looked) : 0, mb, wrong), terminator: "")
                    fflushStdout()
                }
            }
            print("")
            if wrong > 0 { failure = "\(wrong) page(s) read back wrong" }
            print("usage: \(try await ns.usage())")
            await s.close()
        } catch {
            failure = "\(error)"
        }
        try? await cluster.down()
        if dataDir == nil { try? FileManager.default.removeItem(atPath: dir) }
        if let failure { throw fail(failure) }
        print("demo finished: every page read back matched what was put")
    }
}

func fflushStdout() {
    FileHandle.standardOutput.synchronizeFile()
}
