import CisternCore
import CisternMgmtd
import CisternRouting
import CisternSim
import CisternStorage
import Testing

/// A simulated cluster: one manager, `storage` storage nodes with one target each,
/// chains of three created by an admin client.
struct StorageCluster {
    let world: SimWorld
    let mgmtd: SimNode
    let storage: [SimNode]
    let services: ServiceBox

    final class ServiceBox: @unchecked Sendable {
        var byNode: [NodeID: StorageService] = [:]
    }

    init(world: SimWorld, storage count: Int, config: StorageConfig = StorageConfig()) {
        self.world = world
        let services = ServiceBox()
        self.services = services
        mgmtd = world.addNode(name: "m1", host: "10.0.0.1")
        let mgmtdID = mgmtd.id
        mgmtd.boot = { ctx in ctx.retain(await Mgmtd.start(id: ctx.node, runtime: ctx.runtime, transport: ctx.transport, kv: ctx.kv)) }
        world.start(mgmtd)
        var nodes: [SimNode] = []
        for i in 1...count {
            let n = world.addNode(name: "s\(i)", host: "10.0.1.\(i)")
            n.boot = { ctx in
                let client = MgmtdClient(node: ctx.node, role: .storage, name: ctx.name, runtime: ctx.runtime, transport: ctx.transport, replicas: [mgmtdID])
                if let s = try? await StorageService.start(node: ctx.node, runtime: ctx.runtime, transport: ctx.transport, disk: ctx.disk, mgmtd: client, targets: [TargetID(UInt64(i) * 100 + 1)], config: config) {
                    ctx.retain(s)
                    services.byNode[ctx.node] = s
                }
            }
            world.start(n)
            nodes.append(n)
        }
        storage = nodes
    }
}

final class Log: @unchecked Sendable {
    var failures: [String] = []
    var notes: [String] = []
}

@Suite struct StorageServiceTests {
    @Test func writesSurviveTheTailsDeathAndTheReturningReplicaResyncsByteForByte() {
        for seed in UInt64(1)...4 {
            let log = SimWorld.simulate(seed: seed) { world -> Log in
                let log = Log()
                // Dumps of two chunks a page: the returning replica's five chunks take
                // several pages, as a large target's do with the default page.
                var config = StorageConfig()
                config.resyncDumpPageEntries = 2
                let cluster = StorageCluster(world: world, storage: 3, config: config)
                let admin = world.addNode(name: "client", host: "10.0.2.1")
                let p = world.start(admin)
                world.spawn {
                    let rt = p.runtime!
                    let mgmtd = MgmtdClient(node: admin.id, role: .client, name: "client", runtime: rt, transport: p.transport, replicas: [cluster.mgmtd.id])
                    try? await rt.sleep(nanoseconds: 2_000_000_000)
                    guard case .ok? = try? await mgmtd.call(.createChains(replicas: 3)) else {
                        log.failures.append("chains not created")
                        return
                    }
                    let client = StorageClient(runtime: rt, transport: p.transport, mgmtd: mgmtd, clientID: 1)
                    let chain = ChainID(1)
                    var expected: [ChunkID: [UInt8]] = [:]
                    var killed = false
                    for i in 0..<60 {
                        let chunk = ChunkID(inode: 1, index: UInt64(i % 5))
                        let data = (0..<(1_000 + i * 97)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i) }
                        do {
                            _ = try await client.write(chunk, chain: chain, data)
                            expected[chunk] = data
                        } catch {
                            log.failures.append("write \(i) failed: \(error)")
                        }
                        if i == 15 {
                            // Kill the tail while writes go on.
                            if let r = await mgmtd.routing, let tail = r.chain(chain)?.writeTargets.last, let node = r.target(tail.target)?.node, let sim = world.node(node) {
                                world.kill(sim)
                                killed = true
                                log.notes.append("killed \(sim.name)")
                            }
                        }
                        if i == 40, killed {
                            for n in cluster.storage where n.process?.isDead ?? true { world.start(n) }
                        }
                        if let got = try? await client.read(chunk, chain: chain), got.data != expected[chunk] {
                            log.failures.append("read after write \(i) returned other bytes")
                        }
                    }
                    // Wait for the returning replica to resync and serve again.
                    var all = false
                    for _ in 0..<120 {
                        await mgmtd.refreshRouting()
                        if let c = await mgmtd.routing?.chain(chain), c.targets.allSatisfy({ $0.state == .serving }) {
                            all = true
                            break
                        }
                        try? await rt.sleep(nanoseconds: 250_000_000)
                    }
                    guard all else {
                        log.failures.append("chain never fully serving again: \(String(describing: await mgmtd.routing?.chain(chain)))")
                        return
                    }
                    // Every replica holds every acknowledged chunk, byte for byte.
                    for (nodeID, service) in cluster.services.byNode.sorted(by: { $0.key < $1.key }) {
                        guard world.node(nodeID)?.process?.isRunning == true else { continue }
                        for t in service.targetIDs {
                            guard let engine = await service.engine(t) else { continue }
                            for (chunk, data) in expected.sorted(by: { $0.key < $1.key }) {
                                let got = try? await engine.read(chunk).data
                                if got != data { log.failures.append("\(t) on \(nodeID) differs for \(chunk)") }
                            }
                        }
                    }
                    // A batched read returns what single reads do.
                    let ids = expected.keys.sorted() + [ChunkID(inode: 1, index: 999)]
                    if let batch = try? await client.readBatch(ids, chain: chain) {
                        for (chunk, data) in expected where batch[chunk]??.data != data { log.failures.append("batched read of \(chunk) differs") }
                        let missing = batch[ChunkID(inode: 1, index: 999)]
                        if missing == nil || missing! != nil { log.failures.append("batched read of a missing chunk is not nil") }
                        if batch.count != ids.count { log.failures.append("batched read returned \(batch.count) of \(ids.count) entries") }
                    } else {
                        log.failures.append("batched read failed")
                    }
                    log.notes.append("verified \(expected.count) chunks")
                }
                world.run(untilNanoseconds: 300_000_000_000)
                return log
            }
            let shown = Array(log.failures.prefix(5))
            #expect(log.failures.isEmpty, "seed \(seed): \(shown) notes: \(log.notes)")
            #expect(log.notes.last?.hasPrefix("verified") == true, "seed \(seed): \(log.notes)")
            #expect(log.notes.contains { $0.hasPrefix("killed") }, "seed \(seed): the tail was never killed")
        }
    }
}

@Suite struct UnsettledWriteTests {
    /// The head stages X, the rest of the chain commits it, and every answer back to
    /// the head is lost, so X fails there with its version still pending (readers of
    /// the other replicas already see X). The next write must go above that version:
    /// reusing it with other bytes made the successors answer "already committed" and
    /// keep X while the head committed the new bytes (found by a resync sweep, seed 66
    /// of resync-source-dies-then-crash, as a stale read).
    @Test func aWriteAfterAnUnsettledOneGoesAboveItsVersionAndEveryReplicaHoldsIt() {
        let w = [UInt8](repeating: 1, count: 4_096), x = [UInt8](repeating: 2, count: 4_096), y = [UInt8](repeating: 3, count: 4_096)
        for seed in UInt64(1)...3 {
            let log = Self.run(seed: seed, first: w, x: (0, x), y: (0, y), expected: y, seenAtTail: nil)
            #expect(log.failures.isEmpty, "seed \(seed): \(log.failures) notes: \(log.notes)")
            #expect(log.notes.last == "verified", "seed \(seed): \(log.notes)")
        }
    }

    /// As above, but the writes are partial: X rewrites the first 4 KiB, is committed
    /// downstream (a reader of the tail sees it) and stays pending at the head; Y then
    /// rewrites the second 4 KiB. The head used to merge Y into its committed bytes,
    /// which do not hold X, so X vanished after readers had seen it. Y must be merged
    /// into the newest bytes the head staged.
    @Test func aPartialWriteAfterAnUnsettledOneKeepsItsBytes() {
        let w = [UInt8](repeating: 1, count: 8_192), x = [UInt8](repeating: 2, count: 4_096), y = [UInt8](repeating: 3, count: 4_096)
        for seed in UInt64(1)...3 {
            let log = Self.run(seed: seed, first: w, x: (0, x), y: (4_096, y), expected: x + y, seenAtTail: x + [UInt8](repeating: 1, count: 4_096))
            #expect(log.failures.isEmpty, "seed \(seed): \(log.failures) notes: \(log.notes)")
            #expect(log.notes.last == "verified", "seed \(seed): \(log.notes)")
        }
    }

    /// A chain of three: writes `first`, then X while the middle's answers to the head
    /// are lost (X must fail; with `seenAtTail`, the tail must then hold those bytes),
    /// then Y once the network heals; every replica must end up holding `expected`.
    static func run(seed: UInt64, first: [UInt8], x: (offset: Int, bytes: [UInt8]), y: (offset: Int, bytes: [UInt8]),
                    expected: [UInt8], seenAtTail: [UInt8]?) -> Log {
        SimWorld.simulate(seed: seed) { world -> Log in
            let log = Log()
            var config = StorageConfig()
            config.forwardAttemptsMax = 3
            let cluster = StorageCluster(world: world, storage: 3, config: config)
            let admin = world.addNode(name: "client", host: "10.0.2.1")
            let p = world.start(admin)
            world.spawn {
                let rt = p.runtime!
                let mgmtd = MgmtdClient(node: admin.id, role: .client, name: "client", runtime: rt, transport: p.transport, replicas: [cluster.mgmtd.id])
                try? await rt.sleep(nanoseconds: 2_000_000_000)
                guard case .ok? = try? await mgmtd.call(.createChains(replicas: 3)) else {
                    log.failures.append("chains not created")
                    return
                }
                let client = StorageClient(runtime: rt, transport: p.transport, mgmtd: mgmtd, clientID: 1)
                let chain = ChainID(1)
                let chunk = ChunkID(inode: 1, index: 0)
                guard (try? await client.write(chunk, chain: chain, first)) != nil,
                      let r = await mgmtd.routing, let c = r.chain(chain), c.targets.count == 3,
                      let head = r.target(c.targets[0].target)?.node, let middle = r.target(c.targets[1].target)?.node,
                      let tail = r.target(c.targets[2].target)?.node
                else {
                    log.failures.append("first write or routing failed")
                    return
                }
                // Answers from the middle to the head are lost: X commits downstream only.
                world.network.partition([middle], [head], oneWay: true)
                await client.setAttempts(1)
                if (try? await client.write(chunk, chain: chain, offset: x.offset, x.bytes)) != nil { log.failures.append("X was acknowledged though its answers were lost") }
                if let seenAtTail {
                    // A reader of the tail sees X.
                    var seen: [UInt8]?
                    if let engine = await cluster.services.byNode[tail]?.engine(c.targets[2].target) {
                        seen = try? await engine.read(chunk).data
                    }
                    guard seen == seenAtTail else {
                        log.failures.append("the tail does not hold X: \(seen.map { "\($0.count) bytes starting \($0.first ?? 0)" } ?? "nothing")")
                        return
                    }
                }
                try? await rt.sleep(nanoseconds: 10_000_000_000)
                world.network.unpartition([middle], [head], oneWay: true)
                await client.setAttempts(80)
                guard let v = try? await client.write(chunk, chain: chain, offset: y.offset, y.bytes) else {
                    log.failures.append("Y failed")
                    return
                }
                log.notes.append("Y committed as version \(v)")
                for (nodeID, service) in cluster.services.byNode.sorted(by: { $0.key < $1.key }) {
                    for t in service.targetIDs {
                        guard let engine = await service.engine(t) else { continue }
                        let got = try? await engine.read(chunk)
                        if got?.data != expected { log.failures.append("\(t) on \(nodeID) holds \(got.map { "version \($0.1.version): \($0.0.first ?? 0)s then \($0.0.last ?? 0)s" } ?? "nothing") after Y (version \(v)) was acknowledged") }
                    }
                }
                log.notes.append("verified")
            }
            world.run(untilNanoseconds: 120_000_000_000)
            return log
        }
    }
}

@Suite struct StorageSpaceTests {
    @Test func aFullDiskFailsWritesClearlyWithoutPartialCommitsAndSpaceIsReported() {
        var disk = DiskConfig()
        disk.capacityBytes = 3 << 20
        let log = SimWorld.simulate(seed: 9, disk: disk) { world -> Log in
            let log = Log()
            let cluster = StorageCluster(world: world, storage: 3)
            let admin = world.addNode(name: "client", host: "10.0.2.1")
            let p = world.start(admin)
            world.spawn {
                let rt = p.runtime!
                let mgmtd = MgmtdClient(node: admin.id, role: .client, name: "client", runtime: rt, transport: p.transport, replicas: [cluster.mgmtd.id])
                try? await rt.sleep(nanoseconds: 2_000_000_000)
                guard case .ok? = try? await mgmtd.call(.createChains(replicas: 3)) else {
                    log.failures.append("chains not created")
                    return
                }
                // The default attempts: a full disk must be said at once, not retried.
                let client = StorageClient(runtime: rt, transport: p.transport, mgmtd: mgmtd, clientID: 1)
                let chain = ChainID(1)
                var written: [ChunkID: [UInt8]] = [:]
                var noSpace: String?
                for i in 0..<40 {
                    let id = ChunkID(inode: 2, index: UInt64(i))
                    let data = [UInt8](repeating: UInt8(i), count: 200_000)
                    let started = rt.nowNanoseconds()
                    do throws(StorageClientError) {
                        _ = try await client.write(id, chain: chain, data)
                        written[id] = data
                    } catch {
                        noSpace = "\(error)"
                        if case .noSpace = error {} else { log.failures.append("a full disk gave \(error), not noSpace") }
                        let waited = rt.nowNanoseconds() - started
                        if waited > 1_000_000_000 { log.failures.append("the full disk was said after \(Double(waited) / 1e9) s of retries") }
                        break
                    }
                }
                guard let noSpace else {
                    log.failures.append("the disk never filled")
                    return
                }
                if written.count < 3 { log.failures.append("only \(written.count) chunk(s) fit before the disk was declared full") }
                log.notes.append(noSpace)
                if !noSpace.contains("no space left") { log.failures.append("the error does not say the disk is full: \(noSpace)") }
                // Everything acknowledged before reads back; the failed write left no trace.
                for (id, data) in written.sorted(by: { $0.key < $1.key }) {
                    var got: [UInt8]?
                    do { got = try await client.read(id, chain: chain)?.data } catch { got = nil }
                    if got != data { log.failures.append("\(id) changed after the disk filled") }
                }
                for (_, service) in cluster.services.byNode.sorted(by: { $0.key < $1.key }) {
                    for t in service.targetIDs {
                        guard let engine = await service.engine(t) else { continue }
                        for meta in await engine.allMeta() where written[meta.id] == nil && meta.committed != nil {
                            log.failures.append("\(meta.id) was committed on \(t) though its write failed")
                        }
                    }
                }
                // Heartbeats report used space.
                try? await rt.sleep(nanoseconds: 2_000_000_000)
                await mgmtd.refreshRouting()
                let targets = (await mgmtd.routing)?.targets ?? []
                if !targets.contains(where: { $0.usedBytes > 0 && $0.capacityBytes >= $0.usedBytes && $0.capacityBytes < 4 << 20 }) {
                    let figures = targets.map { "\($0.usedBytes)/\($0.capacityBytes)" }.joined(separator: " ")
                    log.failures.append("no target reports its used space and capacity: \(figures)")
                }
                // ... and which target is out of space, with the message.
                let full = targets.filter { !$0.spaceError.isEmpty }
                if full.isEmpty || !full.allSatisfy({ $0.spaceError.contains("no space left on \($0.id)") }) {
                    log.failures.append("routing does not show the full target: \(targets.map { "\($0.id): '\($0.spaceError)'" })")
                }
                // Space returns (chunks removed): writes work again without a restart,
                // and the report clears.
                for (_, service) in cluster.services.byNode.sorted(by: { $0.key < $1.key }) {
                    for t in service.targetIDs {
                        guard let engine = await service.engine(t) else { continue }
                        for id in written.keys.sorted().prefix(4) { try? await engine.remove(id) }
                    }
                }
                do {
                    _ = try await client.write(ChunkID(inode: 3, index: 0), chain: chain, [UInt8](repeating: 7, count: 200_000))
                } catch {
                    log.failures.append("a write after space was freed failed: \(error)")
                }
                try? await rt.sleep(nanoseconds: 2_000_000_000)
                await mgmtd.refreshRouting()
                let still = ((await mgmtd.routing)?.targets ?? []).filter { !$0.spaceError.isEmpty }
                if !still.isEmpty { log.failures.append("targets still reported full after space returned: \(still.map(\.id))") }
                log.notes.append("done")
            }
            world.run(untilNanoseconds: 120_000_000_000)
            return log
        }
        #expect(log.failures.isEmpty, "\(log.failures) \(log.notes)")
        #expect(log.notes.last == "done")
    }
}
