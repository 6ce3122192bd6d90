import Cistern
import CisternCore
import CisternKV
import CisternMeta
import CisternSim
import Testing

/// A small simulated cluster for client tests: one cluster manager, `storage`
/// storage nodes (one target each), one metadata server (namespace + KV index), and
/// a client process whose test body runs once chains exist.
final class ClientTestLog: @unchecked Sendable {
    var failures: [String] = []
    var notes: [String] = []
    var done = false
    /// The metadata servers by node, as started (and restarted).
    var metaServers: [NodeID: MetadataServer] = [:]
    func check(_ ok: Bool, _ what: @autoclosure () -> String) { if !ok { failures.append(what()) } }
}

func withSimCluster(seed: UInt64, storage: Int = 3, chunkBytes: UInt32 = 64 << 10, untilSeconds: UInt64 = 300,
                    metaServers: Int = 1, maintenance: MaintenanceSettings = MaintenanceSettings(), clientOptions: ClientOptions = ClientOptions(),
                    _ body: @escaping @Sendable (SimWorld, CisternClient, ClientTestLog) async -> Void) -> ClientTestLog {
    SimWorld.simulate(seed: seed) { world -> ClientTestLog in
        let log = ClientTestLog()
        let m = world.addNode(name: "m1", host: "10.0.0.1")
        let mgmtdID = m.id
        m.boot = { ctx in ctx.retain(await Mgmtd.start(id: ctx.node, runtime: ctx.runtime, transport: ctx.transport, kv: ctx.kv)) }
        world.start(m)
        for i in 1...storage {
            let s = world.addNode(name: "s\(i)", host: "10.0.1.\(i)")
            s.boot = { ctx in
                let c = MgmtdClient(node: ctx.node, role: .storage, name: ctx.name, runtime: ctx.runtime, transport: ctx.transport, replicas: [mgmtdID])
                for _ in 0..<50 {
                    if let svc = try? await StorageService.start(node: ctx.node, runtime: ctx.runtime, transport: ctx.transport, disk: ctx.disk, mgmtd: c, targets: [TargetID(UInt64(i * 100 + 1))]) {
                        ctx.retain(svc)
                        return
                    }
                    try? await ctx.runtime.sleep(nanoseconds: 100_000_000)
                }
            }
            world.start(s)
        }
        var metaIDs: [NodeID] = []
        for i in 1...max(1, metaServers) {
            let metaNode = world.addNode(name: "meta\(i)", host: "10.0.2.\(i)")
            metaIDs.append(metaNode.id)
            metaNode.boot = { ctx in
                let c = MgmtdClient(node: ctx.node, role: .meta, name: ctx.name, runtime: ctx.runtime, transport: ctx.transport, replicas: [mgmtdID])
                let server = await MetadataServer.start(kv: ctx.kv, runtime: ctx.runtime, transport: ctx.transport, mgmtd: c, chunkBytes: chunkBytes,
                                                        heartbeatNanoseconds: 500_000_000, maintenance: maintenance)
                ctx.retain(server)
                log.metaServers[ctx.node] = server
            }
            world.start(metaNode)
        }
        let metaNodes = metaIDs
        let clientNode = world.addNode(name: "client", host: "10.0.3.1")
        clientNode.boot = { ctx in
            let client = CisternClient(runtime: ctx.runtime, transport: ctx.transport, node: ctx.node, mgmtd: [mgmtdID], meta: metaNodes, options: clientOptions)
            await client.start()
            try? await ctx.runtime.sleep(nanoseconds: 2_000_000_000)
            guard case .ok? = try? await client.mgmtd.call(.createChains(replicas: min(3, storage))) else {
                log.failures.append("could not create chains")
                log.done = true
                return
            }
            // Let the metadata server see the chain table.
            try? await ctx.runtime.sleep(nanoseconds: 1_500_000_000)
            await body(world, client, log)
            log.done = true
        }
        world.start(clientNode)
        world.run(untilNanoseconds: untilSeconds * 1_000_000_000) { log.done }
        if !log.done { log.failures.append("the test body did not finish within \(untilSeconds) simulated seconds") }
        return log
    }
}

func pattern(_ n: Int, seed: UInt64) -> [UInt8] {
    var rng = DeterministicRandom(seed: seed)
    return (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
}

@Suite struct ClientSimTests {
    @Test func fileWritesSplitAcrossChunksAndChainsReadBackExactly() {
        let log = withSimCluster(seed: 1) { _, client, log in
            do {
                let data = pattern(300_000, seed: 1)
                try await client.mkdir("/data")
                try await client.writeFile("/data/a.bin", data)
                log.check(try await client.readFile("/data/a.bin") == data, "whole-file read differs")
                let st = try await client.stat("/data/a.bin")
                log.check(st.length == 300_000, "length \(st.length)")
                // An unaligned overwrite across a chunk boundary, then a read of a window.
                let h = try await client.open("/data/a.bin", write: true)
                let patch = pattern(70_000, seed: 2)
                try await client.write(h, at: 60_000, patch)
                try await client.close(h, length: 300_000)
                var expected = data
                expected.replaceSubrange(60_000..<130_000, with: patch)
                let r = try await client.open("/data/a.bin")
                log.check(try await client.read(r, at: 50_000, length: 100_000) == Array(expected[50_000..<150_000]), "window read differs")
                log.check(try await client.read(r, at: 299_990, length: 100) == Array(expected[299_990...]), "read past the end is not cut at the length")
                // A sparse file reads zeros in its hole.
                let s = try await client.open("/data/sparse", write: true, create: true)
                try await client.write(s, at: 200_000, [1, 2, 3])
                try await client.close(s, length: 200_003)
                let back = try await client.readFile("/data/sparse")
                log.check(back.count == 200_003 && back[0..<200_000].allSatisfy { $0 == 0 } && Array(back[200_000...]) == [1, 2, 3], "sparse read wrong")
                log.check(try await client.list("/data").map(\.name) == ["a.bin", "sparse"], "list wrong")
                // Small reads ask for byte ranges: in a hole, across a chunk boundary.
                let sr = try await client.open("/data/sparse")
                log.check(try await client.read(sr, at: 100, length: 50) == [UInt8](repeating: 0, count: 50), "small read in a hole")
                log.check(try await client.read(sr, at: 199_998, length: 10) == [0, 0, 1, 2, 3], "small read at the end")
                let k = UInt64(h.layout.chunkBytes)
                log.check(try await client.read(r, at: k - 7, length: 14) == Array(expected[Int(k) - 7..<Int(k) + 7]), "small read across a chunk boundary")
                // Shrinking then growing a file: the cut-off bytes read as zeros.
                _ = try await client.truncate("/data/a.bin", length: k + 1_234)
                let g = try await client.open("/data/a.bin", write: true)
                try await client.write(g, at: 299_999, [9])
                try await client.close(g, length: 300_000)
                let after = try await client.readFile("/data/a.bin")
                log.check(after.count == 300_000 && Array(after[..<(Int(k) + 1_234)]) == Array(expected[..<(Int(k) + 1_234)]), "bytes before the cut changed")
                log.check(after[(Int(k) + 1_234)..<299_999].allSatisfy { $0 == 0 } && after[299_999] == 9, "truncated bytes came back")
            } catch {
                log.failures.append("\(error)")
            }
        }
        #expect(log.failures.isEmpty, "\(log.failures)")
    }

    @Test func theIORingRunsABatchOfReadsAndWritesAgainstARegisteredBuffer() {
        let log = withSimCluster(seed: 2) { _, client, log in
            do {
                let f = try await client.open("/ring.bin", write: true, create: true)
                let buffer = IOBuffer(count: 1 << 20)
                let ring = IORing(client: client, buffer: buffer)
                var expected: [(UInt64, [UInt8])] = []
                for i in 0..<8 {
                    let bytes = pattern(50_000 + i * 1_000, seed: UInt64(10 + i))
                    buffer.store(bytes, at: i * 100_000)
                    try await ring.prepareWrite(f, at: UInt64(i) * 70_000, length: bytes.count, bufferOffset: i * 100_000, userData: UInt64(i))
                    expected.append((UInt64(i) * 70_000, bytes))
                }
                log.check(await ring.submit() == 8, "submitted count")
                let writes = await ring.wait(atLeast: 8)
                log.check(writes.count == 8 && writes.allSatisfy { (try? $0.result.get()) != nil }, "writes: \(writes)")
                try await client.close(f, length: 7 * 70_000 + 57_000)
                // Read back in another region of the buffer (overlapping writes: later ones win).
                var model = [UInt8](repeating: 0, count: 7 * 70_000 + 57_000)
                for (off, bytes) in expected { model.replaceSubrange(Int(off)..<Int(off) + bytes.count, with: bytes) }
                let r = try await client.open("/ring.bin")
                let out = IOBuffer(count: model.count)
                let ring2 = IORing(client: client, buffer: out)
                let parts = stride(from: 0, to: model.count, by: 40_000).map { ($0, min(40_000, model.count - $0)) }
                for (i, (off, n)) in parts.enumerated() { try await ring2.prepareRead(r, at: UInt64(off), length: n, bufferOffset: off, userData: UInt64(i)) }
                await ring2.submit()
                let reads = await ring2.wait(atLeast: parts.count)
                log.check(reads.count == parts.count, "\(reads.count) read completions")
                // Overlapping writes of one batch race, as with any storage API, so
                // compare regions that only one write touched.
                let back = out.load(at: 0, length: model.count)
                for (off, bytes) in expected {
                    let unique = Int(off) + 20_000..<Int(off) + 50_000
                    log.check(Array(back[unique]) == Array(bytes[20_000..<50_000]), "region at \(off) differs")
                }
                // Misuse is refused precisely.
                do {
                    try await ring2.prepareWrite(r, at: 0, length: 1, bufferOffset: 0, userData: 99)
                    log.failures.append("a write through a read-only handle was accepted")
                } catch {
                    log.check("\(error)".contains("read-only"), "\(error)")
                }
            } catch {
                log.failures.append("\(error)")
            }
        }
        #expect(log.failures.isEmpty, "\(log.failures)")
    }

    @Test func kvPagesArePutOnceReadBackCountedAndEvictedWhenFull() {
        let log = withSimCluster(seed: 3) { _, client, log in
            do {
                let ns = try await client.kvNamespace("model-a", pageBytes: 16 << 10, capacityPages: 12, files: 2)
                let pages = (0..<8).map { (key: "h\($0)", bytes: pattern(16 << 10, seed: UInt64(100 + $0))) }
                let first = try await ns.put(pages)
                log.check(first == Array(repeating: .stored, count: 8), "first put: \(first)")
                let second = try await ns.put(Array(pages[0..<3]))
                log.check(second == Array(repeating: .existed, count: 3), "second put: \(second)")
                let got = try await ns.get(pages.map(\.key) + ["nope"])
                log.check(got.prefix(8).map(\.bytes) == pages.map { Optional($0.bytes) }, "get returned other bytes")
                log.check(got.last == .missing, "unknown key: \(String(describing: got.last))")
                let e = try await ns.exists(["h0", "h1", "h2", "zz", "h4"])
                log.check(e.consecutiveHits == 3 && e.present == [true, true, true, false, true], "exists: \(e)")
                log.check(try await ns.delete(["h7", "zz"]) == 1, "delete count")
                // Pages are chunks of the namespace's few data files, not files of their own.
                let files = try await client.list("/.kvcache/model-a").map(\.name)
                log.check(files == ["pages.0", "pages.1"], "data files: \(files)")
                // Fill past capacity: the least recently read pages go.
                try await ctxSleep(client, seconds: 2)
                _ = try await ns.get(["h5", "h6"])
                try await ctxSleep(client, seconds: 6)   // let the read leases end
                _ = try await ns.get(["h5", "h6"])
                let more = (0..<8).map { (key: "n\($0)", bytes: pattern(1_000 + $0, seed: UInt64(200 + $0))) }
                let stored = try await ns.put(more)
                log.check(stored.allSatisfy { $0 == .stored }, "put under pressure: \(stored)")
                let after = try await ns.exists(pages.map(\.key))
                log.check(after.present[5] && after.present[6], "recently read pages were evicted: \(after.present)")
                log.check(after.present.filter { $0 }.count == 4, "expected 4 of the old pages left: \(after.present)")
                let u = try await ns.usage()
                log.check(u.confirmed == 12 && u.reserved == 0, "usage: \(u)")
                log.check(try await ns.get(more.map(\.key)).map(\.bytes) == more.map { Optional($0.bytes) }, "short pages differ")
                // Bad input is refused with the rule it breaks.
                do {
                    _ = try await ns.put([(key: "big", bytes: [UInt8](repeating: 1, count: (16 << 10) + 1))])
                    log.failures.append("an oversized page was accepted")
                } catch {
                    log.check("\(error)".contains("page size"), "\(error)")
                }
                do {
                    _ = try await client.kvNamespace("model-a", pageBytes: 8 << 10, capacityPages: 12, files: 2)
                    log.failures.append("a namespace was reopened with another shape")
                } catch {
                    log.check("\(error)".contains("different shape"), "\(error)")
                }
            } catch {
                log.failures.append("\(error)")
            }
        }
        #expect(log.failures.isEmpty, "\(log.failures)")
    }

    @Test func kvReadsAndWritesRideThroughAStorageNodeKill() {
        let log = withSimCluster(seed: 4, storage: 4) { world, client, log in
            do {
                let ns = try await client.kvNamespace("m", pageBytes: 8 << 10, capacityPages: 200)
                let pages = (0..<40).map { (key: "k\($0)", bytes: pattern(8 << 10, seed: UInt64($0))) }
                log.check(try await ns.put(Array(pages[0..<20])).allSatisfy { $0 == .stored }, "first half")
                let victim = try! world.node(named: "s2")
                world.kill(victim, loseUnsyncedWrites: false)
                log.check(try await ns.put(Array(pages[20...])).allSatisfy { $0 == .stored }, "second half during the outage")
                let got = try await ns.get(pages.map(\.key))
                log.check(got.map(\.bytes) == pages.map { Optional($0.bytes) }, "reads during the outage: \(got.filter { $0.bytes == nil }.count) missing")
                world.start(victim)
                try await ctxSleep(client, seconds: 20)
                let again = try await ns.get(pages.map(\.key))
                log.check(again.map(\.bytes) == pages.map { Optional($0.bytes) }, "reads after the return")
            } catch {
                log.failures.append("\(error)")
            }
        }
        #expect(log.failures.isEmpty, "\(log.failures)")
    }
}

func ctxSleep(_ client: CisternClient, seconds: UInt64) async throws {
    try await client.runtime.sleep(nanoseconds: seconds * 1_000_000_000)
}
