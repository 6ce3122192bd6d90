import CisternCore
import CisternSim

/// Applies planned faults to a world, and undoes them all at the heal. Workload runs
/// share it; they resolve names (which may be `@mgmtd-primary` tokens) and hear about
/// kills and restarts through the hooks.
final class FaultDriver: @unchecked Sendable {
    let world: SimWorld
    let topology: [String]
    /// Chooses the node an `@` selector (`@mgmtd-primary`, `@chain-head`, ...) names
    /// when the first fault using it fires; nil when it names nothing now.
    var select: (String) -> SimNode? = { _ in nil }
    /// Selector tokens already resolved: a fault's undo reaches the node it hit.
    private var selected: [String: String] = [:]
    var onFault: (PlannedFault) -> Void = { _ in }
    var onKill: (SimNode) -> Void = { _ in }
    var onStart: (SimNode) -> Void = { _ in }
    /// Flips a bit on a node's disk (a run can aim it at live data; default: a
    /// random bit of the files whose path contains the filter).
    var flipBit: (SimNode, String?) -> Void = { node, filter in node.diskStore.flipBit(matching: filter) }
    private let baseLoss: Double
    private let baseDiskErrors: Double
    private var movedHosts = 0
    private var droppedAddresses: [(SimNode, String)] = []
    /// Nodes the scenario starts later (`start_at`): no restart before they join.
    var joinsLater: Set<String> = []

    init(world: SimWorld, topology: [String]) {
        self.world = world
        self.topology = topology
        self.baseLoss = world.network.config.lossProbability
        self.baseDiskErrors = world.defaultDisk.errorProbability
    }

    /// The node a fault names; nil for an unknown or unresolvable name.
    func resolve(_ name: String) -> SimNode? {
        guard name.hasPrefix("@") else { return try? world.node(named: name) }
        if let known = selected[name] { return try? world.node(named: known) }
        guard let found = select(name) else { return nil }
        selected[name] = found.name
        world.trace.note(.fault, at: world.nowNanoseconds, "\(name) is \(found.name)")
        return found
    }

    /// Schedules every fault of `plan` at its time. The timers keep the driver alive.
    func schedule(_ plan: [PlannedFault]) {
        for fault in plan {
            world.executor.schedule(at: fault.atNanoseconds) { [self] in self.apply(fault) }
        }
    }

    func ids(_ names: [String]) -> [NodeID] { names.compactMap { $0 == "kv" ? SimWorld.kvNodeID : resolve($0)?.id } }

    func apply(_ fault: PlannedFault) {
        world.trace.note(.fault, at: world.nowNanoseconds, "\(fault.action)")
        onFault(fault)
        switch fault.action {
        case .kill(let n, let lose, let wipe):
            if let x = resolve(n), x.process?.isDead == false {
                world.kill(x, loseUnsyncedWrites: lose, wipeDisk: wipe)
                onKill(x)
            }
        case .restart(let n):
            if let x = resolve(n), x.process?.isDead == true || (x.process == nil && !joinsLater.contains(x.name)) { start(x) }
        case .pause(let n): if let x = resolve(n) { world.pause(x) }
        case .resume(let n): if let x = resolve(n) { world.resume(x) }
        case .partition(let a, let b, let oneWay): world.network.partition(ids(a), ids(b), oneWay: oneWay)
        case .unpartition(let a, let b, let oneWay): world.network.unpartition(ids(a), ids(b), oneWay: oneWay)
        case .clog(let n, let ns): if let x = resolve(n) { world.network.clog(x.id, untilNanoseconds: world.nowNanoseconds + ns) }
        case .ipChange(let n, let host):
            if let x = resolve(n) {
                movedHosts += 1
                world.changeAddress(x, to: host ?? "10.128.\(movedHosts / 250).\(movedHosts % 250 + 1)")
            }
        case .addressDown(let n, let up):
            if let x = resolve(n) {
                if up {
                    world.restoreAddress(x, host: x.host)
                    droppedAddresses.removeAll { $0.0 === x }
                } else {
                    world.dropAddress(x, host: x.host)
                    droppedAddresses.append((x, x.host))
                }
            }
        case .slowDisk(let n, let factor): resolve(n)?.diskStore.config.slowFactor = factor
        case .diskErrors(let n, let p): resolve(n)?.diskStore.config.errorProbability = p
        case .bitFlip(let n, let filter): if let x = resolve(n) { flipBit(x, filter) }
        case .loss(let p): world.network.config.lossProbability = p ?? baseLoss
        case .kvOutage(let ns): world.kvStore.unavailableUntilNanoseconds = world.nowNanoseconds + ns
        case .clockSkew(let n, let jump, let drift): if let x = resolve(n) { world.skewClock(x, jumpNanoseconds: jump, driftPPM: drift) }
        case .heal: heal()
        }
    }

    private func start(_ x: SimNode) {
        world.start(x)
        onStart(x)
    }

    /// Undoes every fault: partitions, clogs, loss, KV outage, slow and failing disks,
    /// clock drift (a clock that ran ahead stays ahead: it never goes back), dropped
    /// addresses, paused and killed nodes. Nodes that join later are left to join.
    func heal() {
        // Fault points are faults too: the liveness phase after the heal is quiet.
        world.faultPoints.isOn = false
        world.network.healPartitions()
        world.network.unclogAll()
        world.network.config.lossProbability = baseLoss
        world.kvStore.unavailableUntilNanoseconds = 0
        for (x, host) in droppedAddresses { world.restoreAddress(x, host: host) }
        droppedAddresses.removeAll()
        for name in topology {
            guard let x = try? world.node(named: name) else { continue }
            x.diskStore.config.slowFactor = 1
            x.diskStore.config.errorProbability = baseDiskErrors
            if x.clock.driftPPM != 0 { world.skewClock(x, jumpNanoseconds: 0, driftPPM: 0) }
            if x.process?.status == .paused { world.resume(x) }
            if x.process?.isDead == true || (x.process == nil && !joinsLater.contains(name)) { start(x) }
        }
    }
}
