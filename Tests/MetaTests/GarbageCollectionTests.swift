import Cistern
import CisternCore
import CisternMeta
import CisternMgmtd
import CisternRouting
import CisternSim
import CisternStorage
import Testing

final class GCLog: @unchecked Sendable {
    var failures: [String] = []
    var notes: [String] = []
    var services: [NodeID: StorageService] = [:]
}

@Suite struct GarbageCollectionTests {
    @Test func removedFilesChunksAreDeletedFromEveryReplicaEvenAfterAMetaServerCrash() {
        let log = SimWorld.simulate(seed: 4) { world -> GCLog in
            let log = GCLog()
            let m = world.addNode(name: "m1", host: "10.0.0.1")
            let mgmtdID = m.id
            m.boot = { ctx in ctx.retain(await Mgmtd.start(id: ctx.node, runtime: ctx.runtime, transport: ctx.transport, kv: ctx.kv)) }
            world.start(m)
            for i in 1...3 {
                let s = world.addNode(name: "s\(i)", host: "10.0.1.\(i)")
                s.boot = { ctx in
                    let c = MgmtdClient(node: ctx.node, role: .storage, name: ctx.name, runtime: ctx.runtime, transport: ctx.transport, replicas: [mgmtdID])
                    if let svc = try? await StorageService.start(node: ctx.node, runtime: ctx.runtime, transport: ctx.transport, disk: ctx.disk, mgmtd: c, targets: [TargetID(UInt64(i * 100 + 1))]) {
                        ctx.retain(svc)
                        log.services[ctx.node] = svc
                    }
                }
                world.start(s)
            }
            let metaNode = world.addNode(name: "meta", host: "10.0.2.1")
            let client = world.addNode(name: "client", host: "10.0.3.1")
            let p = world.start(client)
            world.spawn {
                let rt = p.runtime!
                let mgmtd = MgmtdClient(node: client.id, role: .client, name: "client", runtime: rt, transport: p.transport, replicas: [mgmtdID])
                try? await rt.sleep(nanoseconds: 2_000_000_000)
                guard case .ok? = try? await mgmtd.call(.createChains(replicas: 3)) else { log.failures.append("no chains"); return }
                await mgmtd.refreshRouting()
                let chains = (await mgmtd.routing)?.tables.first?.chains ?? []
                let policy = LayoutPolicy(table: 1, tableVersion: 1, chains: chains, chunkBytes: 64 << 10, stripe: 1)
                // A meta server process writes, then dies before collecting.
                let mp = world.start(metaNode)
                let meta = MetaService(kv: mp.kv, runtime: mp.runtime, policy: policy)
                do {
                    let file = try await meta.create("/f")
                    let storage = StorageClient(runtime: rt, transport: p.transport, mgmtd: mgmtd, clientID: 9)
                    for k in 0..<3 {
                        let chain = file.layout!.chain(ofChunk: UInt64(k))!
                        let size = k < 2 ? 64 << 10 : 40_000
                        _ = try await storage.write(ChunkID(inode: file.id.rawValue, index: UInt64(k)), chain: chain, [UInt8](repeating: UInt8(k + 1), count: size))
                    }
                    // Before any client reports a length, the server finds it from storage.
                    let reconciled = try await meta.reconcileLength(file.id, using: storage)
                    if reconciled?.length != 2 * (64 << 10) + 40_000 {
                        log.failures.append("length from storage is \(String(describing: reconciled?.length)), expected \(2 * (64 << 10) + 40_000)")
                    }
                    _ = try await meta.mutate { try await $0.close(file.id, session: 1, length: 2 * (64 << 10) + 40_000) }
                    try await meta.remove("/f")
                    log.notes.append("removed \(file.id)")
                } catch {
                    log.failures.append("setup failed: \(error)")
                    return
                }
                world.kill(metaNode, loseUnsyncedWrites: true)
                // A new meta server process collects (the entry survived in the KV).
                let mp2 = world.start(metaNode)
                let meta2 = MetaService(kv: mp2.kv, runtime: mp2.runtime, policy: policy)
                let remover = StorageChunkRemover(transport: mp2.transport, mgmtd: MgmtdClient(node: metaNode.id, role: .meta, name: "meta", runtime: mp2.runtime, transport: mp2.transport, replicas: [mgmtdID]))
                let early = (try? await meta2.collectGarbage(using: remover, delayNanoseconds: 3_000_000_000)) ?? -1
                try? await rt.sleep(nanoseconds: 4_000_000_000)
                let later = (try? await meta2.collectGarbage(using: remover, delayNanoseconds: 3_000_000_000)) ?? -1
                log.notes.append("collected \(early) then \(later)")
                if early != 0 { log.failures.append("collected before the delay: \(early)") }
                if later != 1 { log.failures.append("expected to collect 1 file, collected \(later)") }
                let (_, garbage) = (try? await meta2.read { try await $0.statfs() }) ?? (0, -1)
                if garbage != 0 { log.failures.append("garbage entries left: \(garbage)") }
                for (_, svc) in log.services.sorted(by: { $0.key < $1.key }) {
                    for t in svc.targetIDs {
                        let left = await svc.engine(t)?.allMeta().count ?? -1
                        if left != 0 { log.failures.append("\(t) still has \(left) chunk(s)") }
                    }
                }
                log.notes.append("done")
            }
            world.run(untilNanoseconds: 120_000_000_000)
            return log
        }
        #expect(log.failures.isEmpty, "\(log.failures) \(log.notes)")
        #expect(log.notes.last == "done", "\(log.notes)")
    }
}
