import Cistern
import CisternConnect
import CisternServer
import Foundation
import Testing
import CisternRouting

/// The metadata servers' background work with real processes: two metadata servers
/// over one SQLite file, three storage nodes, a client over TCP. A writer that goes
/// away without closing gets its file's length set from storage; a removed file's
/// chunks leave every replica; one server does the work, and when it is killed with
/// SIGKILL the other takes over. The counters on `/metrics` say so.
@Suite(.serialized) struct MaintenanceProcessTests {
    /// The text of `GET http://address/metrics` (curl), or "" when it cannot be read.
    func metrics(_ address: String) -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        p.arguments = ["-s", "--max-time", "5", "http://\(address)/metrics"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return "" }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    /// The value of an unlabelled sample `name` in a Prometheus text exposition.
    func sample(_ text: String, _ name: String) -> Double {
        for line in text.split(separator: "\n") where line.hasPrefix(name + " ") {
            return Double(line.split(separator: " ").last ?? "") ?? 0
        }
        return 0
    }

    /// Polls `condition` every 250 ms for up to `seconds`.
    func eventually(_ seconds: Double, _ condition: () async throws -> Bool) async throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try await condition() { return true }
            try await Task.sleep(nanoseconds: 250_000_000)
        }
        return try await condition()
    }

    @Test func abandonedWritesAreReconciledRemovedFilesCollectedAndTheWorkSurvivesItsOwner() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: LocalClusterKillTests.binary), "build the cistern binary first (swift build)")
        try #require(FileManager.default.isExecutableFile(atPath: "/usr/bin/curl"), "curl reads the metrics endpoints")
        let dir = NSTemporaryDirectory() + "cistern-maint-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        let cluster = LocalCluster(dataDir: dir)
        let settings = ServerConfig.Meta(maintenanceIntervalSeconds: 0.5, gcDelaySeconds: 1, sessionTimeoutSeconds: 4)
        try await cluster.up(storageNodes: 3, metaServers: 2, meta: settings, binary: LocalClusterKillTests.binary)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let metricsOf = try ["meta1", "meta2"].map { name in
                (name, try ServerConfig.load(path: "\(dir)/config/\(name).yaml").metrics!.listen)
            }
            func chunksLeft(_ client: CisternClient, _ h: Cistern.FileHandle, _ count: UInt64) async throws -> Int {
                var left = 0
                for k in 0..<count where try await client.storage.length(of: ChunkID(inode: h.inode.rawValue, index: k), chain: h.layout.chain(ofChunk: k)!) != nil {
                    left += 1
                }
                return left
            }

            // A writer writes 2.5 chunks (1 MiB each) and disconnects without closing.
            let data = (0..<(5 << 19)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 11) }
            let writer = try await ClientSession.connect(cluster, name: "writer")
            let h = try await writer.client.open("/abandoned", write: true, create: true)
            try await writer.client.write(h, at: 0, data)
            await writer.close()

            let session = try await ClientSession.connect(cluster, name: "checker")
            let client = session.client
            let reconciled = try await eventually(30) { try await client.stat("/abandoned").length == UInt64(data.count) }
            let length = try await client.stat("/abandoned").length
            #expect(reconciled, "the abandoned file's length is \(length), expected \(data.count)")
            #expect(try await client.readFile("/abandoned") == data)

            // Removed: its chunks go from every replica after the delay.
            #expect(try await chunksLeft(client, h, 3) == 3)
            try await client.remove("/abandoned")
            let collected = try await eventually(30) { try await chunksLeft(client, h, 3) == 0 }
            #expect(collected, "a removed file's chunks are still on the storage nodes")

            // One owner, and its counters show the work.
            var texts = metricsOf.map { ($0.0, metrics($0.1)) }
            let owners = texts.filter { sample($0.1, "cistern_meta_maintenance_owner") == 1 }.map(\.0)
            #expect(owners.count == 1, "servers reporting themselves owner: \(owners)")
            let reconciledCount = texts.map { sample($0.1, "cistern_meta_sessions_reconciled_total") }.reduce(0, +)
            let gcCount = texts.map { sample($0.1, "cistern_meta_gc_files_total") }.reduce(0, +)
            #expect(reconciledCount >= 1 && gcCount >= 1, "metrics: sessions reconciled \(reconciledCount), files collected \(gcCount)")

            // The owner dies with SIGKILL; the other server collects the next file.
            let owner = owners.first ?? "meta1"
            let survivor = owner == "meta1" ? "meta2" : "meta1"
            cluster.kill9(owner)
            try await client.writeFile("/second", Array(data[0..<(3 << 19)]))
            let g = try await client.open("/second")
            try await client.remove("/second")
            let collectedAfter = try await eventually(40) { try await chunksLeft(client, g, 2) == 0 }
            #expect(collectedAfter, "after \(owner) was killed, \(survivor) did not collect the removed file")
            texts = metricsOf.filter { $0.0 == survivor }.map { ($0.0, metrics($0.1)) }
            #expect(sample(texts[0].1, "cistern_meta_maintenance_owner") == 1, "\(survivor) does not report itself owner")
            #expect(sample(texts[0].1, "cistern_meta_gc_files_total") >= 1)
            print("maintenance e2e: owner \(owner) killed, \(survivor) took over; reconciled \(reconciledCount), collected \(gcCount) before the kill")
            await session.close()
        } catch {
            try? await cluster.down()
            throw error
        }
        try await cluster.down()
    }
}
