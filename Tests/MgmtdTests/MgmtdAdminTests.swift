import CisternCore
import CisternMgmtd
import CisternRouting
import CisternSim
import Testing

/// Boots a storage process that heartbeats `targets` as up to date every 500 ms.
func bootStorage(_ node: SimNode, targets: [TargetID], mgmtds: [NodeID]) {
    node.boot = { ctx in
        let client = MgmtdClient(node: ctx.node, role: .storage, name: ctx.name, runtime: ctx.runtime, transport: ctx.transport, replicas: mgmtds)
        await client.serveHints()
        while true {
            try? await client.heartbeat(targets: targets.map { TargetReport(target: $0, localState: .upToDate) })
            try? await ctx.runtime.sleep(nanoseconds: 500_000_000)
        }
    }
}

/// What the admin test saw, step by step.
final class Steps: @unchecked Sendable {
    var log: [String] = []
    var routing: [RoutingInfo] = []
}

@Suite struct MgmtdAdminTests {
    @Test func adminOperationsThroughTheClusterManager() {
        let steps = SimWorld.simulate(seed: 3) { world -> Steps in
            let steps = Steps()
            let m = (1...3).map { world.addNode(name: "m\($0)", host: "10.0.0.\($0)") }
            let ids = m.map(\.id)
            for node in m {
                node.boot = { ctx in ctx.retain(await Mgmtd.start(id: ctx.node, runtime: ctx.runtime, transport: ctx.transport, kv: ctx.kv)) }
                world.start(node)
            }
            var storage: [SimNode] = []
            for i in 1...4 {
                let s = world.addNode(name: "s\(i)", host: "10.0.1.\(i)")
                bootStorage(s, targets: [TargetID(UInt64(i * 100 + 1)), TargetID(UInt64(i * 100 + 2))], mgmtds: ids)
                world.start(s)
                storage.append(s)
            }
            let admin = world.addNode(name: "admin", host: "10.0.2.1")
            let process = world.start(admin)
            world.spawn {
                let rt = process.runtime!
                let client = MgmtdClient(node: admin.id, role: .client, name: "admin", runtime: rt, transport: process.transport, replicas: ids)
                func routing() async -> RoutingInfo {
                    await client.refreshRouting()
                    return await client.routing ?? RoutingInfo()
                }
                func run(_ label: String, _ request: MgmtdRequest) async {
                    do {
                        let reply = try await client.call(request)
                        steps.log.append("\(label): \(reply)")
                    } catch {
                        steps.log.append("\(label): \(error)")
                    }
                    try? await rt.sleep(nanoseconds: 1_000_000_000)
                    steps.routing.append(await routing())
                }
                try? await rt.sleep(nanoseconds: 2_000_000_000)
                await run("create", .createChains(replicas: 3))
                let r = steps.routing.last!
                // A follower names the primary.
                let primary = r.nodes.isEmpty ? nil : try? await client.call(.getRouting(knownVersion: r.version))
                steps.log.append("unchanged: \(String(describing: primary))")
                for follower in ids {
                    let raw = try? await process.transport.call(follower, service: mgmtdService, MgmtdRequest.getRouting(knownVersion: 0).message(), timeoutNanoseconds: 500_000_000)
                    if let raw, let reply = try? MgmtdReply(wireBytes: raw.header), case .notPrimary(let p) = reply {
                        steps.log.append("follower \(follower) says primary is \(p.map(\.description) ?? "unknown")")
                    }
                }
                await run("disable s1", .setNodeEnabled(storage[0].id, enabled: false))
                await run("remove serving", .removeTarget(TargetID(201)))
                await run("offline 201", .offlineTarget(TargetID(201)))
                await run("remove 201", .removeTarget(TargetID(201)))
                await run("rotate", .rotateLastsrv(ChainID(1)))
                let s5 = world.addNode(name: "s5", host: "10.0.1.5")
                bootStorage(s5, targets: [TargetID(501), TargetID(502)], mgmtds: ids)
                world.start(s5)
                try? await rt.sleep(nanoseconds: 2_000_000_000)
                await run("create again", .createChains(replicas: 3))
                await run("bad replicas", .createChains(replicas: 9))
            }
            world.run(untilNanoseconds: 60_000_000_000)
            return steps
        }
        let log = steps.log
        #expect(log.count >= 10, "\(log)")
        guard log.count >= 10, steps.routing.count >= 8 else { return }
        #expect(log[0].hasPrefix("create: ok"))
        let created = steps.routing[0]
        #expect(created.chains.count == 2)
        #expect(created.tables == [ChainTable(id: 1, version: 1, chains: created.chains.map(\.id))])
        for c in created.chains {
            #expect(c.targets.count == 3)
            #expect(Set(c.targets.compactMap { created.target($0.target)?.node }).count == 3, "a chain's targets must be on different nodes")
        }
        #expect(log[1].contains("unchanged"))
        #expect(log.filter { $0.hasPrefix("follower") }.count == 2)
        let disabled = steps.routing[1]
        #expect(disabled.node(NodeID(4))?.status == .disabled)
        for t in disabled.targets where t.node == NodeID(4) {
            #expect(t.localState == .offline)
            if let c = t.chain, let chain = disabled.chain(c) {
                #expect(chain.targets.last(where: { $0.target == t.id })?.state != .serving)
            }
        }
        #expect(log.contains { $0.hasPrefix("remove serving: ") && $0.contains("offline it first") })
        #expect(log.contains { $0.hasPrefix("remove 201: ok") })
        #expect(steps.routing[4].target(TargetID(201)) == nil)
        #expect(log.contains { $0.hasPrefix("rotate: ") && $0.contains("no LASTSRV") })
        let grown = steps.routing[6]
        #expect(log.contains { $0.hasPrefix("create again: ok") })
        #expect(grown.tables.first?.version == 2)
        #expect(grown.chains.count > created.chains.count)
        #expect(log.contains { $0.hasPrefix("bad replicas: ") && $0.contains("refused") })
    }
}
