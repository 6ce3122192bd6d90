import CisternCore
import CisternOperator
import CisternRouting
import CisternSim

/// The Kubernetes operator inside the simulation (`rolling_upgrade:`): the same
/// `OperatorPlanner` the real `cistern operator` runs decides, every `interval`,
/// from the simulated cluster manager's routing and the storage "pods" (a pod is
/// ready while its node's process runs); a pod it deletes is killed and started
/// again `restart_delay` later with the new image, as a StatefulSet would. Checked:
/// the operator never takes a storage node down while another replica of one of its
/// chains is down, and by the end every storage node runs the new image. The
/// workload's own checkers (linearizable, no_lost_writes, replicas_identical) run as
/// always, so a rolling upgrade that loses or corrupts data fails the run too.
final class SimulatedOperator: @unchecked Sendable {
    static let oldImage = "cistern:old"
    static let newImage = "cistern:new"
    unowned let run: StorageRun
    let upgrade: Scenario.RollingUpgrade
    /// Storage node name -> the image its pod runs.
    var images: [String: String] = [:]
    /// Storage nodes in topology order: pod ordinal = index.
    let storageNodes: [String]
    var deletions = 0
    var violations: [String] = []
    /// Nodes that died (deleted, or killed by a fault), with their chains' versions
    /// then: not up to date until the manager rebuilt those chains past them with the
    /// node SERVING, or the node ran `settle` without any change (it missed nothing).
    var stale: [String: (versions: [ChainID: UInt64], since: UInt64)] = [:]
    var settleNanoseconds: UInt64 { max(10_000_000_000, 3 * run.config.failureTimeoutNanoseconds) }

    init(run: StorageRun, upgrade: Scenario.RollingUpgrade) {
        self.run = run
        self.upgrade = upgrade
        self.storageNodes = run.scenario.topology.nodes.filter { $0.role == .storage }.map(\.name)
        for n in storageNodes { images[n] = Self.oldImage }
    }

    var world: SimWorld { run.world }

    func isDown(_ name: String) -> Bool {
        guard let node = try? world.node(named: name), let p = node.process else { return true }
        return p.isDead || p.status == .paused
    }

    /// The chains of node `name` in the last committed routing, with their versions.
    func chainsOf(_ name: String) -> [ChainID: UInt64] {
        guard let r = run.recorder.lastCommitted, let id = try? world.node(named: name).id else { return [:] }
        let mine = Set(r.targets.filter { $0.node == id }.compactMap(\.chain))
        return Dictionary(r.chains.filter { mine.contains($0.id) }.map { ($0.id, $0.version) }, uniquingKeysWith: { a, _ in a })
    }

    func noteDown(_ name: String) {
        stale[name] = (chainsOf(name), world.nowNanoseconds)
    }

    /// Whether node `name` cannot serve as a full replica now: its process is down, or
    /// it came back and the manager has not yet rebuilt its chains around it.
    func notUpToDate(_ name: String) -> Bool {
        if isDown(name) { return true }
        guard let s = stale[name] else { return false }
        guard let r = run.recorder.lastCommitted, let id = try? world.node(named: name).id else { return true }
        let rebuilt = s.versions.allSatisfy { c, v in
            guard let chain = r.chain(c) else { return true }
            return chain.version > v && chain.targets.allSatisfy { t in r.target(t.target)?.node != id || t.state == .serving }
        }
        let unchanged = s.versions.allSatisfy { c, v in r.chain(c)?.version == v }
        if rebuilt || (unchanged && world.nowNanoseconds >= s.since + settleNanoseconds) {
            stale[name] = nil
            return false
        }
        return true
    }

    func loop(_ ctx: SimProcessContext) async {
        let client = run.mgmtdClient(ctx, role: .client)
        var spec = ClusterSpec(image: Self.newImage, storageNodes: storageNodes.count)
        spec.chains = .init(replicas: run.replicas)
        spec.master = .init(replicas: 0)
        spec.storage?.targetsPerNode = run.scenario.topology.nodes.first { $0.role == .storage }?.targets ?? 1
        let planner = OperatorPlanner(name: "sim", namespace: "sim", spec: spec, settleSeconds: Double(settleNanoseconds) / 1e9)
        var previous: ClusterStatus?
        let interval = upgrade.interval?.nanoseconds ?? 500_000_000
        while world.nowNanoseconds < upgrade.at.nanoseconds { try? await ctx.runtime.sleep(nanoseconds: 100_000_000) }
        world.trace.note(.custom, at: world.nowNanoseconds, "operator: image set to \(Self.newImage)")
        while world.nowNanoseconds < run.scenario.duration.nanoseconds + run.scenario.liveness.nanoseconds {
            if run.scenario.workload.plantedBug == "hasty_upgrade" {
                // The planted bug: a naive rolling restart, one node per interval, that
                // looks at nothing (the checker must catch it).
                if let next = storageNodes.first(where: { images[$0] != Self.newImage }) { delete(next, reason: "hasty upgrade") }
                try? await ctx.runtime.sleep(nanoseconds: interval)
                continue
            }
            await client.refreshRouting()
            var o = Observation(statefulSetReplicas: ["sim-storage": storageNodes.count], previous: previous)
            o.cluster = await client.routing.map(ClusterObservation.from)
            // A pod is named as its node (so the routing's members name pods too).
            o.pods = storageNodes.enumerated().map { i, name in
                Observation.Pod(name: name, role: .storage, ordinal: i, image: images[name] ?? Self.oldImage, ready: !isDown(name))
            }
            for d in planner.plan(o, now: "", nowSeconds: Double(world.nowNanoseconds) / 1e9) {
                switch d {
                case .deletePod(let pod, let reason, _): delete(pod, reason: reason)
                case .status(let s): previous = s
                default: break
                }
            }
            if storageNodes.allSatisfy({ images[$0] == Self.newImage }) {
                world.trace.note(.custom, at: world.nowNanoseconds, "operator: every storage node runs \(Self.newImage)")
                return
            }
            try? await ctx.runtime.sleep(nanoseconds: interval)
        }
    }

    /// Deletes a pod: checks it takes no second replica of a chain down, kills the
    /// node, and starts it again later with the new image.
    func delete(_ name: String, reason: String) {
        guard let node = try? world.node(named: name), storageNodes.contains(name) else { return }
        if let r = run.recorder.lastCommitted {
            let mine = Set(chainsOf(name).keys)
            for c in r.chains where mine.contains(c.id) {
                for t in c.targets {
                    guard let other = r.target(t.target)?.node, other != node.id, let otherNode = world.node(other), notUpToDate(otherNode.name) else { continue }
                    violations.append("operator: deleted \(name)'s pod at \(formatSeconds(world.nowNanoseconds)) while \(otherNode.name), another replica of \(c.id), was \(isDown(otherNode.name) ? "down" : "not yet rebuilt after a restart"): two replicas of one chain down at once")
                }
            }
        }
        noteDown(name)
        deletions += 1
        world.trace.note(.custom, at: world.nowNanoseconds, "operator: delete pod of \(name) (\(reason))")
        if node.process?.isDead == false { world.kill(node, loseUnsyncedWrites: false, wipeDisk: false) }
        images[name] = Self.newImage
        world.executor.schedule(at: world.nowNanoseconds + (upgrade.restartDelay?.nanoseconds ?? 1_000_000_000)) { [self] in
            if node.process?.isDead != false { world.start(node) }
        }
    }

    /// The upgrade's own violations, and whether it finished.
    func check() -> [String] {
        let left = storageNodes.filter { images[$0] != Self.newImage }
        var out = violations
        if !left.isEmpty {
            out.append("rolling_upgrade: \(storageNodes.count - left.count) of \(storageNodes.count) storage nodes run the new image at the end; still old: \(left.joined(separator: ", "))")
        }
        return out
    }
}
