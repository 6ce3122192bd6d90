import Cistern
import CisternServer
import Foundation
import Testing

/// End to end with real processes: a loopback cluster from `cistern up` (one cluster
/// manager, one metadata server, three storage nodes), written and read through the
/// client over TCP while a storage process is killed with SIGKILL and restarted.
@Suite(.serialized) struct LocalClusterKillTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    static var binary: String { root + "/.build/debug/cistern" }

    func page(_ key: String, _ n: Int) -> [UInt8] {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in key.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return (0..<n).map { i in UInt8(truncatingIfNeeded: h >> UInt64((i % 8) * 8) &+ UInt64(i / 8)) }
    }

    @Test func everyAcknowledgedWriteSurvivesAStorageProcessKilledWithSIGKILL() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.binary), "build the cistern binary first (swift build)")
        let dir = NSTemporaryDirectory() + "cistern-e2e-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        let cluster = LocalCluster(dataDir: dir)
        try await cluster.up(storageNodes: 3, binary: Self.binary)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let session = try await ClientSession.connect(cluster, name: "e2e")
            let client = session.client
            // A file written before the failure.
            try await client.mkdir("/e2e")
            let file = page("file", 3 << 20)
            try await client.writeFile("/e2e/before.bin", file)

            let ns = try await client.kvNamespace("e2e", pageBytes: 64 << 10, capacityPages: 4_096)
            let acked = AckedKeys()
            let stop = StopFlag()
            // Writer: batches of 8 pages, recording what was acknowledged.
            let writer = Task {
                var i = 0
                while !stop.isSet {
                    let keys = (i..<i + 8).map { "k\($0)" }
                    i += 8
                    if let outcomes = try? await ns.put(keys.map { ($0, page($0, 64 << 10)) }) {
                        for (k, o) in zip(keys, outcomes) where o == .stored { acked.add(k) }
                    }
                }
                return i
            }
            // Reader: every acknowledged page must read back exactly (or fail to be
            // read during the outage, never read wrong).
            let reader = Task {
                var checked = 0
                var wrong: [String] = []
                while !stop.isSet {
                    let keys = acked.sample(16)
                    if keys.isEmpty { try? await Task.sleep(nanoseconds: 50_000_000); continue }
                    if let got = try? await ns.get(keys) {
                        for (k, g) in zip(keys, got) {
                            if case .found(let b) = g { checked += 1; if b != page(k, 64 << 10) { wrong.append(k) } }
                            if g == .missing { wrong.append("\(k) missing") }
                        }
                    }
                }
                return (checked, wrong)
            }
            try await Task.sleep(nanoseconds: 3_000_000_000)
            let beforeKill = acked.count
            cluster.kill9("storage2")
            try await Task.sleep(nanoseconds: 8_000_000_000)
            let duringOutage = acked.count - beforeKill
            try cluster.start("storage2", role: "storage", binary: Self.binary)
            try await cluster.waitForPID("storage2")
            try await Task.sleep(nanoseconds: 3_000_000_000)
            stop.set()
            let written = await writer.value
            let (checked, wrong) = await reader.value
            #expect(wrong.isEmpty, "reads returned wrong or missing pages: \(wrong.prefix(5))")
            #expect(beforeKill > 0 && duringOutage > 0, "writes must go on while a storage node is down (before \(beforeKill), during \(duringOutage))")
            #expect(checked > 0)

            // The restarted node resyncs: every chain ends fully SERVING.
            let deadline = Date().addingTimeInterval(60)
            var settled = false
            while Date() < deadline {
                await client.mgmtd.refreshRouting()
                if let r = await client.mgmtd.routing, !r.chains.isEmpty,
                   r.chains.allSatisfy({ $0.targets.count == 3 && $0.targets.allSatisfy { $0.state == .serving } }) {
                    settled = true
                    break
                }
                try await Task.sleep(nanoseconds: 500_000_000)
            }
            #expect(settled, "the chains did not all return to SERVING with three replicas after the restart")

            // Every acknowledged write reads back, from any replica.
            let all = acked.all()
            for batch in stride(from: 0, to: all.count, by: 64).map({ Array(all[$0..<min($0 + 64, all.count)]) }) {
                let got = try await ns.get(batch)
                for (k, g) in zip(batch, got) { #expect(g.bytes == page(k, 64 << 10), "\(k) after the restart: \(g == .missing ? "missing" : "wrong or failed")") }
            }
            #expect(try await client.readFile("/e2e/before.bin") == file)
            print("e2e: \(written) pages attempted, \(all.count) acknowledged (\(duringOutage) while storage2 was down), \(checked) reads checked during the run")
            await session.close()
        } catch {
            try? await cluster.down()
            throw error
        }
        try await cluster.down()
    }
}

final class AckedKeys: @unchecked Sendable {
    private let lock = NSLock()
    private var keys: [String] = []
    private var rng = SystemRandomNumberGenerator()
    func add(_ k: String) { lock.withLock { keys.append(k) } }
    var count: Int { lock.withLock { keys.count } }
    func all() -> [String] { lock.withLock { keys } }
    func sample(_ n: Int) -> [String] {
        lock.withLock { keys.isEmpty ? [] : (0..<n).map { _ in keys[Int.random(in: 0..<keys.count, using: &rng)] } }
    }
}

final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
}

/// Runs the built `cistern` binary with `args`: its exit status and its output
/// (stdout and stderr together).
func runCistern(_ args: [String]) throws -> (Int32, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: LocalClusterKillTests.binary)
    p.arguments = args
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    while p.isRunning { usleep(10_000) }
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// The CLI against a running cluster: `cistern kv` and `cistern fs` round trips.
@Suite(.serialized) struct CLICommandTests {
    func run(_ args: [String]) throws -> (Int32, String) { try runCistern(args) }

    @Test func kvAndFsCommandsRoundTripThroughARealCluster() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: LocalClusterKillTests.binary))
        let dir = NSTemporaryDirectory() + "cistern-cli-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        let (upStatus, upOut) = try run(["up", "--data-dir", dir, "--storage-nodes", "3"])
        #expect(upStatus == 0, "\(upOut)")
        defer {
            _ = try? run(["down", "--data-dir", dir])
            try? FileManager.default.removeItem(atPath: dir)
        }
        let page = dir + "/page.bin", back = dir + "/back.bin"
        try Data((0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 13) }).write(to: URL(fileURLWithPath: page))
        #expect(try run(["kv", "put", "ns1", "key1", page, "--data-dir", dir]).1.contains("key1: stored"))
        #expect(try run(["kv", "put", "ns1", "key1", page, "--data-dir", dir]).1.contains("key1: existed"))
        #expect(try run(["kv", "get", "ns1", "key1", back, "--data-dir", dir]).0 == 0)
        #expect(FileManager.default.contentsEqual(atPath: page, andPath: back))
        #expect(try run(["kv", "exists", "ns1", "key1", "nope", "--data-dir", dir]).1.contains("consecutive hits: 1"))
        let (missing, why) = try run(["kv", "get", "ns1", "nope", "--data-dir", dir])
        #expect(missing == 1 && why.contains("not in ns1"), "\(why)")
        #expect(try run(["fs", "mkdir", "/d", "--data-dir", dir]).0 == 0)
        #expect(try run(["fs", "put", page, "/d/f", "--data-dir", dir]).0 == 0)
        #expect(try run(["fs", "ls", "/d", "--data-dir", dir]).1.contains("100000\tf"))
        try? FileManager.default.removeItem(atPath: back)
        #expect(try run(["fs", "get", "/d/f", back, "--data-dir", dir]).0 == 0)
        #expect(FileManager.default.contentsEqual(atPath: page, andPath: back))
        #expect(try run(["admin", "nodes", "--data-dir", dir]).1.contains("storage3"))
        #expect(try run(["fs", "rm", "/d", "--recursive", "--data-dir", dir]).0 == 0)
    }
}
