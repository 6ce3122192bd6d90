import Cistern
import CisternCore
import CisternKV
import CisternMeta
import CisternSim
import Testing
import CisternRouting

/// The metadata servers' background work in a simulated cluster with two metadata
/// servers, a real client and real storage: abandoned write sessions, garbage
/// collection, and one owner that hands over when it dies.
@Suite struct MaintenanceSimTests {
    @Test func abandonedFilesGetTheirLengthRemovedFilesLoseTheirChunksAndTheWorkChangesHandsWhenItsOwnerDies() {
        var settings = MaintenanceSettings()
        settings.intervalNanoseconds = 1_000_000_000
        settings.garbageDelayNanoseconds = 2_000_000_000
        settings.sessionTimeoutNanoseconds = 6_000_000_000
        var options = ClientOptions()
        options.sessionKeepAliveNanoseconds = 2_000_000_000
        let log = withSimCluster(seed: 3, untilSeconds: 400, metaServers: 2, maintenance: settings, clientOptions: options) { world, client, log in
            let rt = client.runtime
            func chunksLeft(_ h: FileHandle, _ count: UInt64) async throws -> Int {
                var left = 0
                for k in 0..<count {
                    let chain = h.layout.chain(ofChunk: k)!
                    if try await client.storage.length(of: ChunkID(inode: h.inode.rawValue, index: k), chain: chain) != nil { left += 1 }
                }
                return left
            }
            func owners() async -> [NodeID: Int] {
                var out: [NodeID: Int] = [:]
                for (node, server) in log.metaServers { out[node] = await server.maintenance.roundsOwned }
                return out
            }
            do {
                // 150,000 bytes: three chunks of 64 KiB, the last one partial.
                let data = pattern(150_000, seed: 3)
                let h = try await client.open("/held", write: true, create: true)
                try await client.write(h, at: 0, data)
                // Its writer stays alive (keep-alives every 2 s) far past the 6 s
                // session timeout: the session is left alone.
                try await rt.sleep(nanoseconds: 20_000_000_000)
                let whileAlive = try await client.stat("/held").length
                log.check(whileAlive == 0, "the file was reconciled (length \(whileAlive)) while its writer was alive")
                // The writer falls silent without closing, as if it died.
                await client.stop()
                try await rt.sleep(nanoseconds: 10_000_000_000)
                let reconciled = try await client.stat("/held").length
                log.check(reconciled == 150_000, "after the writer went silent the length is \(reconciled), expected 150000 from storage")
                log.check(try await client.readFile("/held") == data, "the reconciled file does not read back what was written")

                // Removed: after the delay its chunks go from every replica.
                log.check(try await chunksLeft(h, 3) == 3, "the chunks were not all there before the removal")
                try await client.remove("/held")
                try await rt.sleep(nanoseconds: 1_000_000_000)
                log.check(try await chunksLeft(h, 3) == 3, "chunks were deleted before the collection delay")
                try await rt.sleep(nanoseconds: 5_000_000_000)
                log.check(try await chunksLeft(h, 3) == 0, "chunks of a removed file are still on storage")

                // One server did all the work.
                let before = await owners()
                log.check(before.values.filter { $0 > 0 }.count == 1, "rounds owned per server: \(before) (expected one owner)")
                guard let (owner, _) = before.first(where: { $0.value > 0 }) else { return }
                let other = before.keys.first { $0 != owner }!
                log.notes.append("owner \(owner) ran \(before[owner]!) rounds")

                // The owner dies; the other takes over within the lease (3 s) and
                // collects the next removed file.
                world.kill(world.node(owner)!)
                let g = try await client.open("/second", write: true, create: true)
                try await client.write(g, at: 0, pattern(70_000, seed: 4))
                try await client.close(g, length: 70_000)
                try await client.remove("/second")
                try await rt.sleep(nanoseconds: 10_000_000_000)
                log.check(try await chunksLeft(g, 2) == 0, "after the owner died the removed file's chunks were not collected")
                let after = await owners()
                log.check((after[other] ?? 0) > 0, "the surviving server never took the work over: \(after)")
            } catch {
                log.failures.append("\(error)")
            }
        }
        #expect(log.failures.isEmpty, "\(log.failures) \(log.notes)")
    }
}
