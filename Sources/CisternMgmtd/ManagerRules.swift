import CisternCore
import CisternRouting

/// The last heartbeat a node's process sent: its boot and its sequence number.
public struct HeartbeatSequence: Hashable, Sendable {
    public var boot: UInt64
    public var sequence: UInt64
    public init(boot: UInt64, sequence: UInt64) {
        self.boot = boot
        self.sequence = sequence
    }
}

/// What the cluster manager observed since its last scan, as `ManagerRules.evaluate`
/// needs it.
public struct ManagerObservations: Sendable {
    public var nowNanoseconds: UInt64
    public var failureTimeoutNanoseconds: UInt64
    /// When each node's last new heartbeat arrived (absent: never, since this replica
    /// became primary).
    public var lastHeartbeatNanoseconds: [NodeID: UInt64]
    /// The latest report for each target.
    public var reports: [TargetID: TargetReport]
    /// Targets an operator took offline.
    public var adminOffline: Set<TargetID>
    public init(nowNanoseconds: UInt64, failureTimeoutNanoseconds: UInt64, lastHeartbeatNanoseconds: [NodeID: UInt64] = [:],
                reports: [TargetID: TargetReport] = [:], adminOffline: Set<TargetID> = []) {
        self.nowNanoseconds = nowNanoseconds
        self.failureTimeoutNanoseconds = failureTimeoutNanoseconds
        self.lastHeartbeatNanoseconds = lastHeartbeatNanoseconds
        self.reports = reports
        self.adminOffline = adminOffline
    }
}

/// What an evaluation changed that an operator should read in the log.
public enum ManagerEvent: Hashable, Sendable, CustomStringConvertible {
    case nodeFailed(name: String, silentNanoseconds: UInt64)
    case refusesWrites(TargetID, reason: String)
    case spaceRecovered(TargetID)
    public var description: String {
        switch self {
        case .nodeFailed(let name, let silent):
            return "node \(name) failed: no heartbeat for \(Double(silent) / 1e9) s"
        case .refusesWrites(let t, let reason): return "\(t) refuses writes: \(reason)"
        case .spaceRecovered(let t): return "\(t) has space for writes again"
        }
    }
}

/// A request the rules refuse, with the reason and what to do instead.
public struct ManagerRefusal: Error, Hashable, Sendable, CustomStringConvertible {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// The cluster manager's decisions as pure functions of the routing and what it
/// observed: failure detection and chain evaluation, heartbeat admission, and the
/// admin operations. The `Mgmtd` actor holds the state, commits the results and logs
/// the events; everything it decides is here, tested without a cluster.
public enum ManagerRules {
    // MARK: Evaluation

    /// Marks silent nodes failed (any role but managers), derives each target's local
    /// state (offline when its node is not active or an operator took it offline, else
    /// what it last reported, with its space), and advances every chain through the
    /// chain state machine. Returns what an operator should hear about.
    public static func evaluate(_ r: inout RoutingInfo, _ o: ManagerObservations) -> [ManagerEvent] {
        var events: [ManagerEvent] = []
        for i in r.nodes.indices where r.nodes[i].status == .active && r.nodes[i].role != .mgmtd {
            let last = o.lastHeartbeatNanoseconds[r.nodes[i].id] ?? 0
            if o.nowNanoseconds > last &+ o.failureTimeoutNanoseconds {
                r.nodes[i].status = .failed
                events.append(.nodeFailed(name: r.nodes[i].name, silentNanoseconds: o.nowNanoseconds &- last))
            }
        }
        var status: [NodeID: NodeStatus] = [:]
        for n in r.nodes { status[n.id] = n.status }
        var local: [TargetID: LocalState] = [:]
        for i in r.targets.indices {
            let t = r.targets[i]
            var state = t.localState
            if status[t.node] != .active || o.adminOffline.contains(t.id) {
                state = .offline
            } else if let report = o.reports[t.id] {
                state = report.localState
                r.targets[i].usedBytes = report.usedBytes
                r.targets[i].capacityBytes = report.capacityBytes
                if report.spaceError != t.spaceError {
                    events.append(report.spaceError.isEmpty ? .spaceRecovered(t.id) : .refusesWrites(t.id, reason: report.spaceError))
                    r.targets[i].spaceError = report.spaceError
                }
            }
            r.targets[i].localState = state
            local[t.id] = state
        }
        for i in r.chains.indices {
            r.chains[i] = ChainStateMachine.next(r.chains[i], local: local)
        }
        return events
    }

    // MARK: Heartbeats

    /// Whether `h` repeats (or is older than) the last heartbeat of the same boot of a
    /// node routing knows: answered without any change.
    public static func isDuplicate(_ h: Heartbeat, last: HeartbeatSequence?, routing: RoutingInfo) -> Bool {
        guard let last, last.boot == h.bootID, h.sequence <= last.sequence else { return false }
        return routing.node(h.node) != nil
    }

    /// The heartbeat's reports for targets that were not removed (a removed target's
    /// node may not know yet).
    public static func liveReports(_ h: Heartbeat, routing: RoutingInfo) -> [TargetReport] {
        let removed = Set(routing.removedTargets)
        return h.targets.filter { !removed.contains($0.target) }
    }

    /// Whether admitting `h` changes routing: a new node, a failed one back, a new
    /// target, or a new name or addresses.
    public static func needsRegistration(_ h: Heartbeat, live: [TargetReport], routing: RoutingInfo) -> Bool {
        guard let known = routing.node(h.node) else { return true }
        if known.status == .failed || known.name != h.name || known.addresses != h.addresses { return true }
        return live.contains { routing.target($0.target) == nil }
    }

    /// Registers the node (or brings a failed one back as active, with its current
    /// name and addresses) and its new targets, keeping nodes and targets sorted.
    /// A disabled node stays disabled.
    public static func register(_ h: Heartbeat, live: [TargetReport], into r: inout RoutingInfo) {
        if let i = r.nodes.firstIndex(where: { $0.id == h.node }) {
            if r.nodes[i].status == .failed { r.nodes[i].status = .active }
            r.nodes[i].name = h.name
            r.nodes[i].addresses = h.addresses
        } else {
            r.nodes.append(NodeInfo(id: h.node, role: h.role, name: h.name, status: .active, addresses: h.addresses))
            r.nodes.sort { $0.id < $1.id }
        }
        for report in live where r.target(report.target) == nil {
            r.targets.append(TargetInfo(id: report.target, node: h.node, chain: nil, localState: report.localState, usedBytes: report.usedBytes, capacityBytes: report.capacityBytes))
        }
        r.targets.sort { $0.id < $1.id }
    }

    // MARK: Admin operations

    /// Disables a node (its targets go offline at the next evaluation), or enables a
    /// disabled one as failed (it comes back with its next heartbeat).
    public static func setNodeEnabled(_ node: NodeID, _ enabled: Bool, in r: inout RoutingInfo) throws(ManagerRefusal) {
        guard let i = r.nodes.firstIndex(where: { $0.id == node }) else {
            throw ManagerRefusal("unknown node \(node); list nodes to see the registered ones")
        }
        if enabled {
            if r.nodes[i].status == .disabled { r.nodes[i].status = .failed }
        } else {
            r.nodes[i].status = .disabled
        }
    }

    /// Removes an offline target from its chain (never the chain's last) and from
    /// routing, for good.
    public static func removeTarget(_ target: TargetID, from r: inout RoutingInfo) throws(ManagerRefusal) {
        guard let t = r.target(target) else { throw ManagerRefusal("unknown target \(target)") }
        guard t.localState == .offline else {
            throw ManagerRefusal("\(target) is \(t.localState); offline it first (offlineTarget), then remove it")
        }
        if let c = t.chain, let i = r.chains.firstIndex(where: { $0.id == c }) {
            guard r.chains[i].targets.count > 1 else { throw ManagerRefusal("\(target) is the last target of \(c); a chain cannot be empty") }
            r.chains[i].targets.removeAll { $0.target == target }
            r.chains[i].version += 1
        }
        r.targets.removeAll { $0.id == target }
        r.removedTargets.append(target)
    }

    /// For a chain waiting on a LASTSRV target that will not return: the first other
    /// target that is not LASTSRV becomes LASTSRV, and the old one goes to the end as
    /// OFFLINE.
    public static func rotateLastsrv(_ chain: ChainID, in r: inout RoutingInfo) throws(ManagerRefusal) {
        guard let i = r.chains.firstIndex(where: { $0.id == chain }) else { throw ManagerRefusal("unknown chain \(chain)") }
        var c = r.chains[i]
        guard let last = c.targets.firstIndex(where: { $0.state == .lastsrv }) else {
            throw ManagerRefusal("\(chain) has no LASTSRV target; rotation is only for a chain waiting on a LASTSRV that will not return")
        }
        guard let successor = c.targets.indices.first(where: { $0 != last && c.targets[$0].state != .lastsrv }) else {
            throw ManagerRefusal("\(chain) has no other target to promote")
        }
        let old = c.targets.remove(at: last)
        let promoted = successor > last ? successor - 1 : successor
        c.targets[promoted].state = .lastsrv
        c.targets.append(ChainTarget(old.target, .offline))
        c.version += 1
        r.chains[i] = c
    }

    /// Builds chains of `replicas` from the active storage nodes' targets that are in
    /// no chain, and adds them to chain table 1 (created at its first use).
    public static func addChains(replicas: Int, to r: inout RoutingInfo) throws(ManagerRefusal) {
        var byNode: [NodeID: [TargetID]] = [:]
        let active = Set(r.nodes.filter { $0.status == .active && $0.role == .storage }.map(\.id))
        for t in r.targets where t.chain == nil && active.contains(t.node) { byNode[t.node, default: []].append(t.id) }
        let first = ChainID((r.chains.map(\.id.rawValue).max() ?? 0) + 1)
        let chains: [Chain]
        do {
            chains = try ChainTableBuilder.build(targetsByNode: byNode, replicas: replicas, firstChain: first, seed: r.version)
        } catch {
            throw ManagerRefusal("cannot build chains: \(error)")
        }
        guard !chains.isEmpty else { throw ManagerRefusal("no chains could be built: fewer than \(replicas) nodes have targets outside a chain") }
        for c in chains {
            for m in c.targets {
                if let i = r.targets.firstIndex(where: { $0.id == m.target }) { r.targets[i].chain = c.id }
            }
        }
        r.chains += chains
        if let i = r.tables.firstIndex(where: { $0.id == 1 }) {
            r.tables[i].version += 1
            r.tables[i].chains += chains.map(\.id)
        } else {
            r.tables.append(ChainTable(id: 1, version: 1, chains: chains.map(\.id)))
        }
    }
}
