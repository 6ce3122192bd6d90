import CisternConnect
import CisternOperator
import Foundation
import Testing
import Yams

let newImage = "ghcr.io/cistern/cistern:0.9.1"
let oldImage = "ghcr.io/cistern/cistern:0.9.0"

func spec(nodes: Int = 3, image: String = newImage) -> ClusterSpec {
    var s = ClusterSpec(image: image, storageNodes: nodes)
    s.master = .init(replicas: 1, port: nil, adminTokenSecretRef: .init(name: "admin", key: "token"), resources: nil)
    return s
}

func storagePods(_ n: Int, image: (Int) -> String, ready: (Int) -> Bool = { _ in true }) -> [Observation.Pod] {
    (0..<n).map { Observation.Pod(name: "c-storage-\($0)", role: .storage, ordinal: $0, image: image($0), ready: ready($0)) }
}

func chains(_ n: Int, replicas: Int = 3, serving: (Int) -> Int = { _ in 3 }) -> [Observation.Chain] {
    (0..<n).map { Observation.Chain(id: UInt64($0 + 1), replicas: replicas, serving: serving($0)) }
}

/// The observation of a settled cluster: objects applied as rendered, every pod ready.
func settled(_ s: ClusterSpec, pods: [Observation.Pod], chains: [Observation.Chain], unassigned: Int = 0) -> Observation {
    let planner = OperatorPlanner(name: "c", namespace: "ns", spec: s)
    var o = Observation(pods: pods, statefulSetReplicas: ["c-storage": s.storageNodes, "c-mgmtd": 1, "c-meta": 1, "c-master": 1],
                        cluster: .init(chains: chains, storageNodesActive: pods.filter { $0.role == .storage && $0.ready }.count, unassignedTargets: unassigned))
    for d in planner.plan(o, now: "t0") {
        if case .apply(let object) = d { o.appliedHashes[OperatorPlanner.key(object)] = object.at("metadata.annotations")?[OperatorPlanner.hashAnnotation]?.string }
    }
    return o
}

func deletions(_ ds: [Directive]) -> [String] {
    ds.compactMap { if case .deletePod(let n, _, _) = $0 { return n } else { return nil } }
}

func status(_ ds: [Directive]) -> ClusterStatus? {
    ds.compactMap { if case .status(let s) = $0 { return s } else { return nil } }.first
}

@Suite struct PlannerTests {
    @Test func aNewClusterIsRenderedAndAppliedOnce() {
        let s = spec()
        let planner = OperatorPlanner(name: "c", namespace: "ns", spec: s)
        let first = planner.plan(Observation(), now: "t0")
        let applied = first.compactMap { if case .apply(let o) = $0 { return OperatorPlanner.key(o) } else { return nil } }
        #expect(applied == ["ConfigMap/c-config", "ConfigMap/c-client", "Service/c-mgmtd", "StatefulSet/c-mgmtd", "Service/c-meta", "StatefulSet/c-meta",
                            "Service/c-storage", "StatefulSet/c-storage", "Service/c-master", "StatefulSet/c-master", "Service/c-api"])
        #expect(status(first)?.phase == "Provisioning")
        #expect(status(first)?.condition("Progressing")?.status == "True")
        // Once applied, nothing is applied again.
        let o = settled(s, pods: storagePods(3, image: { _ in newImage }), chains: chains(2))
        let again = planner.plan(o, now: "t1")
        #expect(!again.contains { if case .apply = $0 { return true } else { return false } })
        #expect(status(again)?.phase == "Running")
        #expect(status(again)?.image == newImage)
        #expect(status(again)?.condition("Available")?.status == "True")
        #expect(status(again)?.condition("Degraded")?.status == "False")
    }

    @Test func anUpgradeTakesOneStorageNodeAtATimeAndOnlyWhenEveryChainIsWhole() {
        let s = spec()
        let planner = OperatorPlanner(name: "c", namespace: "ns", spec: s)
        var o = settled(s, pods: storagePods(3, image: { _ in oldImage }), chains: chains(2))
        var d = planner.plan(o, now: "t")
        #expect(deletions(d) == ["c-storage-0"])
        #expect(status(d)?.phase == "Upgrading")
        #expect(status(d)?.upgrade == ClusterStatus.Upgrade(image: newImage, node: "c-storage-0", deletedAtSeconds: 0, chainVersions: [:]))
        // While that pod is down, nothing else goes.
        o.pods[0].terminating = true
        #expect(deletions(planner.plan(o, now: "t")).isEmpty)
        o.pods[0] = .init(name: "c-storage-0", role: .storage, ordinal: 0, image: newImage, ready: false)
        #expect(deletions(planner.plan(o, now: "t")).isEmpty)
        // Back and ready, but its chains still syncing: wait.
        o.pods[0].ready = true
        o.cluster?.chains = chains(2, serving: { $0 == 0 ? 2 : 3 })
        d = planner.plan(o, now: "t")
        #expect(deletions(d).isEmpty)
        #expect(status(d)?.message.contains("not every replica is SERVING: chain 1 (2/3 serving)") == true)
        // Whole again: the next one.
        o.cluster?.chains = chains(2)
        #expect(deletions(planner.plan(o, now: "t")) == ["c-storage-1"])
        // The manager unreachable: wait rather than guess.
        o.cluster = nil
        #expect(deletions(planner.plan(o, now: "t")).isEmpty)
    }

    /// A pod comes back ready long before the cluster manager notices it restarted
    /// (a heartbeat timeout): until its chains move past the versions seen when it was
    /// deleted, or `settleSeconds` pass with no change, the next pod waits. Found by
    /// the simulator (operator-rolling-upgrade): without it, the second node went down
    /// while the first was back but not yet rebuilt.
    @Test func theNextPodWaitsUntilTheManagerSawTheLastRestart() {
        let s = spec()
        let planner = OperatorPlanner(name: "c", namespace: "ns", spec: s, settleSeconds: 30)
        let members = ["c-storage-0", "c-storage-1", "c-storage-2"]
        var o = settled(s, pods: storagePods(3, image: { _ in oldImage }), chains: chains(2))
        o.cluster?.chains = [.init(id: 1, replicas: 3, serving: 3, version: 7, members: members), .init(id: 2, replicas: 3, serving: 3, version: 9, members: members)]
        let first = planner.plan(o, now: "t", nowSeconds: 100)
        #expect(deletions(first) == ["c-storage-0"])
        #expect(status(first)?.upgrade == ClusterStatus.Upgrade(image: newImage, node: "c-storage-0", deletedAtSeconds: 100, chainVersions: ["1": 7, "2": 9]))
        o.previous = status(first)
        o.pods[0] = .init(name: "c-storage-0", role: .storage, ordinal: 0, image: newImage, ready: true)
        let waiting = planner.plan(o, now: "t", nowSeconds: 101)
        #expect(deletions(waiting).isEmpty)
        #expect(status(waiting)?.message.contains("has not yet seen c-storage-0 restart") == true)
        #expect(status(waiting)?.upgrade?.deletedAtSeconds == 100, "the memory of the deletion is kept")
        // The manager rebuilt both chains (versions moved, all serving): go on.
        o.previous = status(waiting)
        o.cluster?.chains = [.init(id: 1, replicas: 3, serving: 3, version: 10, members: members), .init(id: 2, replicas: 3, serving: 3, version: 12, members: members)]
        #expect(deletions(planner.plan(o, now: "t", nowSeconds: 110)) == ["c-storage-1"])
        // Or nothing changed for settleSeconds: the restart missed nothing.
        o.cluster?.chains = [.init(id: 1, replicas: 3, serving: 3, version: 7, members: members), .init(id: 2, replicas: 3, serving: 3, version: 9, members: members)]
        #expect(deletions(planner.plan(o, now: "t", nowSeconds: 129)).isEmpty)
        #expect(deletions(planner.plan(o, now: "t", nowSeconds: 131)) == ["c-storage-1"])
    }

    /// Every combination of pod readiness, termination, images and chain health for a
    /// 4-node cluster: the planner deletes at most one storage pod, never while another
    /// storage pod is down or a chain is missing a replica, and never one already upgraded.
    @Test func neverTwoReplicasDownExhaustively() {
        let s = spec(nodes: 4)
        let planner = OperatorPlanner(name: "c", namespace: "ns", spec: s)
        let base = settled(s, pods: storagePods(4, image: { _ in newImage }), chains: chains(4))
        var cases = 0
        for images in 0..<16 {
            for ready in 0..<16 {
                for terminating in [-1, 0, 1, 2, 3] {
                    for brokenChain in [-1, 0, 3] {
                        var o = base
                        o.pods = storagePods(4, image: { images & (1 << $0) != 0 ? oldImage : newImage }, ready: { ready & (1 << $0) != 0 })
                        if terminating >= 0 { o.pods[terminating].terminating = true }
                        o.cluster?.chains = chains(4, serving: { $0 == brokenChain ? 2 : 3 })
                        let deleted = deletions(planner.plan(o, now: "t"))
                        cases += 1
                        #expect(deleted.count <= 1)
                        guard let victim = deleted.first else { continue }
                        let allUp = o.pods.allSatisfy { $0.ready && !$0.terminating }
                        #expect(allUp, "deleted \(victim) while another storage pod was down")
                        #expect(brokenChain < 0, "deleted \(victim) while chain \(brokenChain + 1) missed a replica")
                        #expect(o.pods.first { $0.name == victim }?.image == oldImage)
                    }
                }
            }
        }
        #expect(cases == 16 * 16 * 5 * 3)
    }

    @Test func failedAndLostPodsAreReplaced() {
        let s = spec()
        var o = settled(s, pods: storagePods(3, image: { _ in newImage }), chains: chains(2))
        o.pods[1].phase = "Failed"
        o.pods[2].nodeLost = true
        let d = OperatorPlanner(name: "c", namespace: "ns", spec: s).plan(o, now: "t")
        #expect(d.contains(.deletePod(name: "c-storage-1", reason: "it failed", force: false)))
        #expect(d.contains(.deletePod(name: "c-storage-2", reason: "its node is lost", force: true)))
        #expect(status(d)?.phase == "Degraded")
        #expect(status(d)?.condition("Degraded")?.status == "True")
    }

    @Test func scalingOutMakesChainsOnceEveryNewNodeIsActive() {
        let s = spec(nodes: 5)
        let planner = OperatorPlanner(name: "c", namespace: "ns", spec: s)
        var o = settled(spec(nodes: 3), pods: storagePods(3, image: { _ in newImage }), chains: chains(2))
        let grow = planner.plan(o, now: "t")
        #expect(grow.contains { if case .apply(let x) = $0 { return OperatorPlanner.key(x) == "StatefulSet/c-storage" && x.at("spec.replicas")?.int == 5 } else { return false } })
        #expect(status(grow)?.phase == "Scaling")
        o.statefulSetReplicas["c-storage"] = 5
        o.pods = storagePods(5, image: { _ in newImage })
        o.cluster = .init(chains: chains(2), storageNodesActive: 4, unassignedTargets: 2)
        #expect(!planner.plan(o, now: "t").contains(.createChains(replicas: 3)), "not before every wanted node is active")
        o.cluster = .init(chains: chains(2), storageNodesActive: 5, unassignedTargets: 4)
        #expect(planner.plan(o, now: "t").contains(.createChains(replicas: 3)))
    }

    @Test func storageIsNeverScaledIn() {
        let s = spec(nodes: 3)
        var o = settled(s, pods: storagePods(4, image: { _ in newImage }), chains: chains(2))
        o.statefulSetReplicas["c-storage"] = 4
        o.appliedHashes["StatefulSet/c-storage"] = nil
        let d = OperatorPlanner(name: "c", namespace: "ns", spec: s).plan(o, now: "t")
        let applied = d.compactMap { if case .apply(let x) = $0, OperatorPlanner.key(x) == "StatefulSet/c-storage" { return x } else { return nil } }
        #expect(applied.first?.at("spec.replicas")?.int == 4)
        #expect(status(d)?.message.contains("storage is not scaled in") == true)
    }

    @Test func tenantsMissingFromTheMasterAreMade() {
        var s = spec()
        s.auth = .init(clusterKeySecretRef: .init(name: "key", key: "key"))
        s.tenants = [.init(name: "alice", quotaBytes: 1 << 30, quotaPages: 100, tokenSecretRef: .init(name: "alice-token", key: "token")),
                     .init(name: "bob", quotaBytes: 1 << 30, quotaPages: 100, tokenSecretRef: .init(name: "bob-token", key: "token"))]
        var o = settled(s, pods: storagePods(3, image: { _ in newImage }), chains: chains(2))
        o.tenants = ["alice"]
        let d = OperatorPlanner(name: "c", namespace: "ns", spec: s).plan(o, now: "t")
        #expect(d.contains(.createTenant(s.tenants![1])))
        #expect(!d.contains(.createTenant(s.tenants![0])))
        o.tenants = nil  // master unreachable: nothing decided
        #expect(!OperatorPlanner(name: "c", namespace: "ns", spec: s).plan(o, now: "t").contains { if case .createTenant = $0 { return true } else { return false } })
    }

    @Test func anInvalidOrPausedResourceChangesNothing() {
        var s = spec(nodes: 2)
        s.chains = .init(replicas: 3)
        let o = settled(spec(nodes: 2), pods: storagePods(2, image: { _ in oldImage }), chains: chains(1, replicas: 2, serving: { _ in 2 }))
        let d = OperatorPlanner(name: "c", namespace: "ns", spec: s).plan(o, now: "t")
        #expect(d.count == 1)
        #expect(status(d)?.condition("Degraded")?.reason == "InvalidSpec")
        #expect(status(d)?.message.contains("spec.chains.replicas is 3 but spec.storage.nodes is 2") == true)
        var p = spec(nodes: 2)
        p.chains = .init(replicas: 2)
        p.paused = true
        let paused = OperatorPlanner(name: "c", namespace: "ns", spec: p).plan(o, now: "t")
        #expect(paused.count == 1 && status(paused)?.phase == "Paused")
    }

    @Test func conditionsKeepTheirTransitionTime() {
        let s = spec()
        let planner = OperatorPlanner(name: "c", namespace: "ns", spec: s)
        var o = settled(s, pods: storagePods(3, image: { _ in newImage }), chains: chains(2))
        let first = status(planner.plan(o, now: "t1"))!
        o.previous = first
        let second = status(planner.plan(o, now: "t2"))!
        #expect(second.condition("Available")?.lastTransitionTime == "t1")
        o.previous = second
        o.cluster?.chains = chains(2, serving: { _ in 2 })
        let third = status(planner.plan(o, now: "t3"))!
        #expect(third.condition("Degraded")?.lastTransitionTime == "t3")
        #expect(third.condition("Available")?.lastTransitionTime == "t1")
    }

    @Test func specProblemsNameTheFieldAndTheFix() {
        var s = ClusterSpec(image: "", storageNodes: 0)
        s.meta = .init(replicas: 2, kv: nil, resources: nil, volume: nil)
        s.mgmtd = .init(replicas: 1, kv: .init(kind: "postgres", conninfoSecretRef: nil), resources: nil, volume: nil)
        s.tenants = [.init(name: "admin", quotaBytes: -1, quotaPages: 0, tokenSecretRef: .init(name: "t", key: "token"))]
        let p = s.problems.joined(separator: "\n")
        for expected in ["spec.image is empty", "spec.storage.nodes is 0", "spec.meta.replicas is 2 with kv.kind sqlite", "use kv.kind postgres for more than one replica",
                         "spec.mgmtd.kv.conninfoSecretRef is missing", "spec.master.adminTokenSecretRef is missing", "spec.tenants needs spec.auth.clusterKeySecretRef",
                         "'admin' is not a tenant name", "negative quota"] {
            #expect(p.contains(expected), "missing: \(expected)")
        }
        #expect(spec().problems.isEmpty)
    }
}

@Suite struct RendererTests {
    @Test func everyServerConfigParsesWithTheServersOwnRules() throws {
        var s = spec(nodes: 4)
        s.auth = .init(clusterKeySecretRef: .init(name: "key", key: "cluster.key"))
        s.meta = .init(replicas: 2, kv: .init(kind: "postgres", conninfoSecretRef: .init(name: "pg", key: "conninfo")), resources: nil, volume: nil)
        let r = ClusterRenderer(name: "c", namespace: "ns", spec: s)
        let objects = r.objects()
        let configs = try #require(objects.first { OperatorPlanner.key($0) == "ConfigMap/c-config" }?["data"]?.object)
        #expect(configs.count == 1 + 2 + 4 + 1)
        for (file, text) in configs {
            let c = try YAMLDecoder().decode(ServerConfig.self, from: try #require(text.string))
            #expect(c.problems().isEmpty, "\(file): \(c.problems())")
            #expect(file == "\(c.node.name).yaml")
        }
        let storage = try YAMLDecoder().decode(ServerConfig.self, from: configs["c-storage-3.yaml"]!.string!)
        #expect(storage.storage?.targets == [100_301, 100_302])
        #expect(storage.node.advertise == ["c-storage-3.c-storage.ns.svc:9000"])
        #expect(storage.auth?.clusterKeyFile == "/etc/cistern/auth/cluster.key")
        let meta = try YAMLDecoder().decode(ServerConfig.self, from: configs["c-meta-1.yaml"]!.string!)
        #expect(meta.kv?.conninfoFile == "/etc/cistern/kv/conninfo")
        #expect(meta.cluster.meta?.count == 2)
        let set = try #require(objects.first { OperatorPlanner.key($0) == "StatefulSet/c-storage" })
        #expect(set.at("spec.updateStrategy.type")?.string == "OnDelete")
        #expect(set.at("spec.replicas")?.int == 4)
        #expect(set.at("spec.template.spec.containers")?.array?.first?["image"]?.string == newImage)
    }
}
