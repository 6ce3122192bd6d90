import CisternCore
import CisternRouting
import CisternWire
import Logging

/// KV keys the cluster manager owns.
enum MgmtdKeys {
    static let lease = Array("mgmtd/lease".utf8)
    static let routing = Array("mgmtd/routing".utf8)
}

/// A cluster manager replica. Any number run; the one holding the lease in the
/// transactional KV is the primary. The primary keeps routing in memory, serves
/// heartbeats and routing pulls, detects failed nodes, advances chain states, and
/// commits every routing change together with its version bump in one KV
/// transaction that also checks the lease (fencing). Others answer
/// `notPrimary(primary:)`.
public actor Mgmtd {
    public nonisolated let unownedExecutor: UnownedSerialExecutor
    public let id: NodeID
    let runtime: any Runtime
    let transport: any Transport
    let kv: any TransactionalKV
    let config: MgmtdConfig
    weak var observer: (any MgmtdObserver)?
    let log: Logger

    private var lease: LeaseTracker
    private var epoch: UInt64?
    private var validUntil: UInt64 = 0
    private var knownHolder: NodeID?
    private var routing = RoutingInfo()
    private var lastHeartbeat: [NodeID: UInt64] = [:]
    private var lastSequence: [NodeID: (boot: UInt64, sequence: UInt64)] = [:]
    private var reports: [TargetID: TargetReport] = [:]
    private var adminOffline: Set<TargetID> = []
    private var committing = false
    private var commitWaiters: [UnsafeContinuation<Void, Never>] = []

    init(id: NodeID, runtime: any Runtime, transport: any Transport, kv: any TransactionalKV, config: MgmtdConfig, observer: (any MgmtdObserver)?) {
        self.id = id
        self.runtime = runtime
        self.transport = transport
        self.kv = kv
        self.config = config
        self.observer = observer
        self.log = runtime.logger("mgmtd")
        self.lease = LeaseTracker(
            me: id, durationNanoseconds: config.leaseDurationNanoseconds, marginNanoseconds: config.leaseMarginNanoseconds,
            takeoverAfterNanoseconds: config.plantedEarlyTakeover ? 0 : nil)
        self.unownedExecutor = runtime.makeActorExecutor()
    }

    /// Starts a replica: serves requests and runs the lease and scan loops.
    public static func start(
        id: NodeID, runtime: any Runtime, transport: any Transport, kv: any TransactionalKV,
        config: MgmtdConfig = MgmtdConfig(), observer: (any MgmtdObserver)? = nil
    ) async -> Mgmtd {
        let m = Mgmtd(id: id, runtime: runtime, transport: transport, kv: kv, config: config, observer: observer)
        await transport.serve(mgmtdService) { [m] request in
            let parsed = try MgmtdRequest(request.message)
            let reply = await m.handle(parsed)
            return Message(method: 0, header: reply.wireBytes())
        }
        runtime.spawn("mgmtd.lease") { [m] in await m.leaseLoop() }
        runtime.spawn("mgmtd.scan") { [m] in await m.scanLoop() }
        return m
    }

    /// Whether this replica may accept writes now.
    public var isPrimary: Bool { epoch != nil && runtime.nowNanoseconds() < validUntil }

    /// The routing this replica serves (meaningful on the primary).
    public var currentRouting: RoutingInfo { routing }

    // MARK: Lease

    private func leaseLoop() async {
        while true {
            await leaseTick()
            try? await runtime.sleep(nanoseconds: config.leaseRenewIntervalNanoseconds)
        }
    }

    private enum LeaseOutcome: Sendable {
        case held(LeaseRecord, acquired: Bool, routing: RoutingInfo?)
        case other(NodeID)
    }

    private func leaseTick() async {
        let started = runtime.nowNanoseconds()
        var tracker = lease
        let myEpoch = epoch
        do {
            let outcome = try await kv.transact(runtime: runtime, attemptsMax: 2) { tx -> LeaseOutcome in
                let current = try await tx.get(MgmtdKeys.lease).map { try LeaseRecord(wireBytes: $0) }
                switch tracker.decide(current: current, now: started) {
                case .wait(let holder):
                    return .other(holder)
                case .write(let record, let acquired):
                    try await tx.set(MgmtdKeys.lease, record.wireBytes())
                    // Starting to act in this epoch (a takeover, or a restarted holder
                    // renewing its predecessor's record): the KV has the routing.
                    var stored: RoutingInfo?
                    if acquired || myEpoch != record.epoch {
                        stored = try await tx.get(MgmtdKeys.routing).map { try RoutingInfo(wireBytes: $0) } ?? RoutingInfo()
                    }
                    return .held(record, acquired: acquired, routing: stored)
                }
            }
            lease = tracker
            switch outcome {
            case .other(let holder):
                knownHolder = holder
                if epoch != nil { stepDown("lease held by \(holder)") }
            case .held(let record, _, let stored):
                knownHolder = id
                if let stored, epoch != record.epoch {
                    becomePrimary(record.epoch, routing: stored)
                }
                validUntil = lease.validUntil(renewalStart: started)
                observer?.primaryLease(node: id, epoch: record.epoch, from: runtime.nowNanoseconds(), until: validUntil)
            }
        } catch {
            lease = tracker
            log.info("lease renewal failed: \(error)")
            if epoch != nil && runtime.nowNanoseconds() >= validUntil { stepDown("lease not renewed: \(error)") }
        }
    }

    private func becomePrimary(_ newEpoch: UInt64, routing stored: RoutingInfo) {
        epoch = newEpoch
        routing = stored
        let now = runtime.nowNanoseconds()
        // No heartbeat history yet: give every node a full timeout before judging it.
        lastHeartbeat = Dictionary(uniqueKeysWithValues: stored.nodes.map { ($0.id, now) })
        lastSequence = [:]
        reports = [:]
        log.notice("became primary with lease epoch \(newEpoch) at routing version \(stored.version)")
    }

    private func stepDown(_ reason: String) {
        guard let e = epoch else { return }
        epoch = nil
        validUntil = 0
        observer?.primaryEnded(node: id, epoch: e, at: runtime.nowNanoseconds())
        log.notice("stepped down: \(reason)")
    }

    // MARK: Commits

    private func lockCommits() async {
        if !committing {
            committing = true
            return
        }
        await withUnsafeContinuation { commitWaiters.append($0) }
    }

    private func unlockCommits() {
        if commitWaiters.isEmpty {
            committing = false
        } else {
            commitWaiters.removeFirst().resume()
        }
    }

    enum CommitError: Error, CustomStringConvertible {
        case notPrimary
        case refused(String)
        var description: String {
            switch self {
            case .notPrimary: return "not the primary"
            case .refused(let why): return why
            }
        }
    }

    /// Applies `change` to the routing and commits it, fenced by the lease, with a
    /// version bump. The transaction reads the stored routing too: if it differs from
    /// ours (an earlier commit whose outcome was unknown did apply), the change is made
    /// on top of the stored one, so no version is ever written twice. Commits run one
    /// at a time. Returns the routing version after.
    @discardableResult
    private func mutate(_ change: (inout RoutingInfo) throws(CommitError) -> Void) async throws(CommitError) -> UInt64 {
        await lockCommits()
        defer { unlockCommits() }
        guard isPrimary, let myEpoch = epoch else { throw .notPrimary }
        let me = id
        let known = routing
        let committed: RoutingInfo?
        do {
            committed = try await kv.transact(runtime: runtime, attemptsMax: 3) { tx -> RoutingInfo? in
                let current = try await tx.get(MgmtdKeys.lease).map { try LeaseRecord(wireBytes: $0) }
                guard let current, current.holder == me, current.epoch == myEpoch else { throw CommitError.notPrimary }
                let stored = try await tx.get(MgmtdKeys.routing).map { try RoutingInfo(wireBytes: $0) } ?? RoutingInfo()
                let base = stored.version == known.version ? known : stored
                var next = base
                try change(&next)
                next.version = base.version
                guard next != base else { return base == known ? nil : base }
                next.version = base.version + 1
                try await tx.set(MgmtdKeys.routing, next.wireBytes())
                return next
            }
        } catch let e as CommitError {
            if case .notPrimary = e { stepDown("fenced: another replica holds the lease") }
            throw e
        } catch {
            // The KV may or may not have applied it; the next commit reads the stored
            // routing and builds on whichever it finds.
            log.warning("routing commit failed: \(error)")
            throw .refused("routing commit failed: \(error); retry")
        }
        guard let committed else { return routing.version }
        routing = committed
        observer?.routingCommitted(committed, node: id, at: runtime.nowNanoseconds())
        pushHints(committed)
        return committed.version
    }

    private func pushHints(_ r: RoutingInfo) {
        let hint = Message(method: 0, header: RoutingHint(version: r.version).wireBytes())
        let timeout = config.callTimeoutNanoseconds
        for node in r.nodes where node.status == .active && node.role != .mgmtd {
            runtime.spawn("mgmtd.hint") { [transport] in
                _ = try? await transport.call(node.id, service: routingHintService, hint, timeoutNanoseconds: timeout)
            }
        }
    }

    // MARK: Scanning

    private func scanLoop() async {
        while true {
            try? await runtime.sleep(nanoseconds: config.scanIntervalNanoseconds)
            guard isPrimary else { continue }
            _ = try? await mutate { r throws(CommitError) in self.evaluate(&r) }
        }
    }

    /// Marks silent nodes failed, derives each target's local state, and advances
    /// every chain through the state machine.
    private func evaluate(_ r: inout RoutingInfo) {
        let now = runtime.nowNanoseconds()
        for i in r.nodes.indices where r.nodes[i].status == .active && r.nodes[i].role != .mgmtd {
            let last = lastHeartbeat[r.nodes[i].id] ?? 0
            if now > last &+ config.failureTimeoutNanoseconds {
                r.nodes[i].status = .failed
                log.notice("node \(r.nodes[i].name) failed: no heartbeat for \(Double(now - last) / 1e9) s")
            }
        }
        var status: [NodeID: NodeStatus] = [:]
        for n in r.nodes { status[n.id] = n.status }
        var local: [TargetID: LocalState] = [:]
        for i in r.targets.indices {
            let t = r.targets[i]
            var state = t.localState
            if status[t.node] != .active || adminOffline.contains(t.id) {
                state = .offline
            } else if let report = reports[t.id] {
                state = report.localState
                r.targets[i].usedBytes = report.usedBytes
                r.targets[i].capacityBytes = report.capacityBytes
                if report.spaceError != t.spaceError {
                    if report.spaceError.isEmpty {
                        log.notice("\(t.id) has space for writes again")
                    } else {
                        log.warning("\(t.id) refuses writes: \(report.spaceError)")
                    }
                    r.targets[i].spaceError = report.spaceError
                }
            }
            r.targets[i].localState = state
            local[t.id] = state
        }
        for i in r.chains.indices {
            r.chains[i] = ChainStateMachine.next(r.chains[i], local: local)
        }
    }

    // MARK: Requests

    func handle(_ request: MgmtdRequest) async -> MgmtdReply {
        guard isPrimary else { return .notPrimary(primary: knownHolder == id ? nil : knownHolder) }
        do throws(CommitError) {
            switch request {
            case .heartbeat(let h):
                return try await heartbeat(h)
            case .getRouting(let known):
                return known == routing.version ? .unchanged(routingVersion: known) : .routing(routing)
            case .setNodeEnabled(let node, let enabled):
                return .ok(routingVersion: try await mutate { r throws(CommitError) in
                    guard let i = r.nodes.firstIndex(where: { $0.id == node }) else { throw .refused("unknown node \(node); list nodes to see the registered ones") }
                    if enabled {
                        if r.nodes[i].status == .disabled { r.nodes[i].status = .failed }
                    } else {
                        r.nodes[i].status = .disabled
                    }
                    self.evaluate(&r)
                })
            case .offlineTarget(let target):
                guard routing.target(target) != nil else { return .refused("unknown target \(target)") }
                adminOffline.insert(target)
                return .ok(routingVersion: try await mutate { r throws(CommitError) in self.evaluate(&r) })
            case .removeTarget(let target):
                return .ok(routingVersion: try await mutate { r throws(CommitError) in
                    guard let t = r.target(target) else { throw .refused("unknown target \(target)") }
                    guard t.localState == .offline else { throw .refused("\(target) is \(t.localState); offline it first (offlineTarget), then remove it") }
                    if let c = t.chain, let i = r.chains.firstIndex(where: { $0.id == c }) {
                        guard r.chains[i].targets.count > 1 else { throw .refused("\(target) is the last target of \(c); a chain cannot be empty") }
                        r.chains[i].targets.removeAll { $0.target == target }
                        r.chains[i].version += 1
                    }
                    r.targets.removeAll { $0.id == target }
                    r.removedTargets.append(target)
                })
            case .rotateLastsrv(let chain):
                return .ok(routingVersion: try await mutate { r throws(CommitError) in
                    guard let i = r.chains.firstIndex(where: { $0.id == chain }) else { throw .refused("unknown chain \(chain)") }
                    var c = r.chains[i]
                    guard let last = c.targets.firstIndex(where: { $0.state == .lastsrv }) else {
                        throw .refused("\(chain) has no LASTSRV target; rotation is only for a chain waiting on a LASTSRV that will not return")
                    }
                    guard let successor = c.targets.indices.first(where: { $0 != last && c.targets[$0].state != .lastsrv }) else {
                        throw .refused("\(chain) has no other target to promote")
                    }
                    let old = c.targets.remove(at: last)
                    let promoted = successor > last ? successor - 1 : successor
                    c.targets[promoted].state = .lastsrv
                    c.targets.append(ChainTarget(old.target, .offline))
                    c.version += 1
                    r.chains[i] = c
                })
            case .createChains(let replicas):
                return .ok(routingVersion: try await mutate { r throws(CommitError) in try self.addChains(&r, replicas: replicas) })
            }
        } catch {
            switch error {
            case .notPrimary: return .notPrimary(primary: knownHolder == id ? nil : knownHolder)
            case .refused(let why): return .refused(why)
            }
        }
    }

    private func heartbeat(_ h: Heartbeat) async throws(CommitError) -> MgmtdReply {
        if let last = lastSequence[h.node], last.boot == h.bootID, h.sequence <= last.sequence, routing.node(h.node) != nil {
            return .ok(routingVersion: routing.version)
        }
        lastSequence[h.node] = (h.bootID, h.sequence)
        lastHeartbeat[h.node] = runtime.nowNanoseconds()
        let removed = Set(routing.removedTargets)
        let live = h.targets.filter { !removed.contains($0.target) }
        for report in live { reports[report.target] = report }
        let known = routing.node(h.node)
        let unknownTargets = live.filter { routing.target($0.target) == nil }
        guard known == nil || known?.status == .failed || !unknownTargets.isEmpty || known?.name != h.name || known?.addresses != h.addresses else {
            return .ok(routingVersion: routing.version)
        }
        let version = try await mutate { r throws(CommitError) in
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
        return .ok(routingVersion: version)
    }

    private func addChains(_ r: inout RoutingInfo, replicas: Int) throws(CommitError) {
        var byNode: [NodeID: [TargetID]] = [:]
        let active = Set(r.nodes.filter { $0.status == .active && $0.role == .storage }.map(\.id))
        for t in r.targets where t.chain == nil && active.contains(t.node) { byNode[t.node, default: []].append(t.id) }
        let first = ChainID((r.chains.map(\.id.rawValue).max() ?? 0) + 1)
        let chains: [Chain]
        do {
            chains = try ChainTableBuilder.build(targetsByNode: byNode, replicas: replicas, firstChain: first, seed: r.version)
        } catch {
            throw .refused("cannot build chains: \(error)")
        }
        guard !chains.isEmpty else { throw .refused("no chains could be built: fewer than \(replicas) nodes have targets outside a chain") }
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
