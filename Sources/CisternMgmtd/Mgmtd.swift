import CisternAuth
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
    private var lastSequence: [NodeID: HeartbeatSequence] = [:]
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
        config: MgmtdConfig = MgmtdConfig(), observer: (any MgmtdObserver)? = nil, capabilityKey: CapabilityKey? = nil
    ) async -> Mgmtd {
        let m = Mgmtd(id: id, runtime: runtime, transport: transport, kv: kv, config: config, observer: observer)
        await transport.serve(mgmtdService) { [m] request in
            let (parsed, trailer) = try MgmtdRequest.decode(request.message)
            // With a cluster key, only servers and administrators holding it change
            // routing or speak for a server.
            if let key = capabilityKey, parsed.needsService,
               key.check(needed: .service, inodes: [UInt64](), presented: trailer?.capabilities ?? []) != nil {
                let why = "permission denied: \(parsed.kindName) needs the cluster key (auth.cluster_key_file on servers; the cluster.key of the data dir for cistern admin)"
                return Message(method: 0, header: MgmtdReply.refused(why).wireBytes())
            }
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
        observer?.routingLoaded(stored, node: id, at: now)
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

    /// Applies the manager's evaluation (`ManagerRules.evaluate`) and logs what it
    /// noticed.
    private func evaluate(_ r: inout RoutingInfo) {
        let observed = ManagerObservations(
            nowNanoseconds: runtime.nowNanoseconds(), failureTimeoutNanoseconds: config.failureTimeoutNanoseconds,
            lastHeartbeatNanoseconds: lastHeartbeat, reports: reports, adminOffline: adminOffline)
        for event in ManagerRules.evaluate(&r, observed) {
            switch event {
            case .refusesWrites: log.warning("\(event)")
            case .nodeFailed, .spaceRecovered: log.notice("\(event)")
            }
        }
    }

    /// Runs an admin rule inside a routing change, its refusal as the commit's.
    private func applying(_ rule: () throws(ManagerRefusal) -> Void) throws(CommitError) {
        do throws(ManagerRefusal) {
            try rule()
        } catch {
            throw .refused(error.reason)
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
                    try self.applying { () throws(ManagerRefusal) in try ManagerRules.setNodeEnabled(node, enabled, in: &r) }
                    self.evaluate(&r)
                })
            case .offlineTarget(let target):
                guard routing.target(target) != nil else { return .refused("unknown target \(target)") }
                adminOffline.insert(target)
                return .ok(routingVersion: try await mutate { r throws(CommitError) in self.evaluate(&r) })
            case .removeTarget(let target):
                return .ok(routingVersion: try await mutate { r throws(CommitError) in
                    try self.applying { () throws(ManagerRefusal) in try ManagerRules.removeTarget(target, from: &r) }
                })
            case .rotateLastsrv(let chain):
                return .ok(routingVersion: try await mutate { r throws(CommitError) in
                    try self.applying { () throws(ManagerRefusal) in try ManagerRules.rotateLastsrv(chain, in: &r) }
                })
            case .createChains(let replicas):
                return .ok(routingVersion: try await mutate { r throws(CommitError) in
                    try self.applying { () throws(ManagerRefusal) in try ManagerRules.addChains(replicas: replicas, to: &r) }
                })
            }
        } catch {
            switch error {
            case .notPrimary: return .notPrimary(primary: knownHolder == id ? nil : knownHolder)
            case .refused(let why): return .refused(why)
            }
        }
    }

    /// Admits a heartbeat (`ManagerRules`): a repeat is answered without change; a new
    /// one records its time and reports, and registers what routing lacks.
    private func heartbeat(_ h: Heartbeat) async throws(CommitError) -> MgmtdReply {
        if ManagerRules.isDuplicate(h, last: lastSequence[h.node], routing: routing) {
            return .ok(routingVersion: routing.version)
        }
        lastSequence[h.node] = HeartbeatSequence(boot: h.bootID, sequence: h.sequence)
        lastHeartbeat[h.node] = runtime.nowNanoseconds()
        let live = ManagerRules.liveReports(h, routing: routing)
        for report in live { reports[report.target] = report }
        guard ManagerRules.needsRegistration(h, live: live, routing: routing) else { return .ok(routingVersion: routing.version) }
        let version = try await mutate { r throws(CommitError) in ManagerRules.register(h, live: live, into: &r) }
        return .ok(routingVersion: version)
    }
}
