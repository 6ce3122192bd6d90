import CisternCore
import CisternMgmtd
import CisternRouting

/// What a storage node reports for its targets and when it serves: 3FS's recovery
/// rules as a value. The storage service and the simulator's storage stand-in both
/// hold one and feed it what they see (routing, finished syncs, failed commits, disk
/// probes); it answers with what to do next.
///
/// The rules:
/// - After a restart the node sends no heartbeat and serves nothing until routing
///   shows every target OFFLINE or LASTSRV, so each target goes through a resync.
/// - If, while running, it finds one of its healthy targets OFFLINE or LASTSRV (it was
///   cut off and declared dead), it starts over the same way.
/// - A target that is not serving and has not finished a sync is never reported up to
///   date, so a node declared failed while cut off rejoins through a sync instead of
///   waiting forever.
/// - A target whose commit failed after its successor committed is out of service
///   (reported OFFLINE); once it is out of its chain and a disk probe succeeds, it
///   rejoins through a resync, and its OFFLINE state meanwhile does not restart the
///   whole node.
public struct TargetRecovery: Sendable, Equatable {
    /// Why a target is out of service, and since when (the last failure or probe).
    public struct Failure: Sendable, Equatable {
        public var reason: String
        public var sinceNanoseconds: UInt64
    }

    /// A disk probe in flight: it counts only if no newer failure or probe replaced it.
    public struct Probe: Sendable, Equatable {
        public let target: TargetID
        public let reason: String
        public let startedNanoseconds: UInt64
    }

    /// What a heartbeat round does after `observe`.
    public enum Step: Sendable, Equatable {
        /// Recovering: no heartbeat until routing shows every target offline or LASTSRV.
        case waitForOffline
        /// A healthy target was found offline while running: the node starts over as
        /// after a restart (no heartbeat this round; syncs in progress are void).
        case startedOver
        /// Heartbeat `local`; `recovered` when this round ended a recovery (the node
        /// serves again).
        case report(recovered: Bool)
    }

    public let targets: [TargetID]
    public private(set) var recovering: Bool
    public private(set) var local: [TargetID: LocalState]
    /// Targets that finished a sync under their current SYNCING membership.
    public private(set) var syncDone: Set<TargetID> = []
    public private(set) var failed: [TargetID: Failure] = [:]
    /// Targets whose disk works again, until the manager takes them back (SYNCING or
    /// SERVING): their OFFLINE state is expected.
    public private(set) var rejoining: Set<TargetID> = []

    /// A restarted node starts recovering with every target ONLINE (data possibly
    /// behind); a fresh one reports UPTODATE.
    public init(targets: [TargetID], restarted: Bool) {
        self.targets = targets.sorted()
        self.recovering = restarted
        self.local = Dictionary(uniqueKeysWithValues: targets.map { ($0, restarted ? LocalState.online : .upToDate) })
    }

    /// Why requests for `target` are refused, if they are.
    public func outOfService(_ target: TargetID) -> String? { failed[target]?.reason }

    /// One heartbeat round: `states` is each target's public state in the current
    /// routing (nil when there is no routing yet; a target missing from it is not in
    /// any chain).
    public mutating func observe(_ states: [TargetID: PublicState]?) -> Step {
        func state(_ t: TargetID) -> PublicState? { states?[t] }
        func outOfChain(_ t: TargetID) -> Bool { state(t).map { $0 == .offline || $0 == .lastsrv } ?? false }
        rejoining = rejoining.filter { t in failed[t] == nil && !(state(t).map { $0 == .syncing || $0 == .serving } ?? false) }
        var recovered = false
        if recovering {
            guard states != nil, targets.allSatisfy({ t in state(t).map { $0 == .offline || $0 == .lastsrv } ?? true }) else { return .waitForOffline }
            recovering = false
            recovered = true
        } else if targets.contains(where: { t in failed[t] == nil && !rejoining.contains(t) && outOfChain(t) }) {
            recovering = true
            syncDone.removeAll()
            // A target out of service stays OFFLINE: its disk is still unproven.
            for t in targets where failed[t] == nil { local[t] = .online }
            return .startedOver
        }
        for t in targets where failed[t] == nil {
            switch state(t) {
            case .serving?: local[t] = .upToDate
            case .syncing?: local[t] = syncDone.contains(t) ? .upToDate : .online
            case .waiting?, .offline?:
                syncDone.remove(t)
                local[t] = .online
            default: break
            }
        }
        return .report(recovered: recovered)
    }

    /// Whether `target` should start its sync copy: SYNCING, not yet done, healthy.
    public func needsSync(_ target: TargetID, state: PublicState?) -> Bool {
        !recovering && state == .syncing && failed[target] == nil && !syncDone.contains(target)
    }

    /// A sync into `target` finished (its predecessor said so, under the membership
    /// the caller checked): it reports UPTODATE. Ignored while recovering or out of
    /// service, or before a rejoining target was taken back (a sync from before its
    /// failure).
    public mutating func syncFinished(_ target: TargetID) {
        guard !recovering, failed[target] == nil, !rejoining.contains(target), local[target] != nil else { return }
        syncDone.insert(target)
        local[target] = .upToDate
    }

    /// A commit on `target` failed after its successor committed: out of service.
    public mutating func commitFailed(_ target: TargetID, reason: String, nowNanoseconds: UInt64) {
        guard local[target] != nil else { return }
        failed[target] = Failure(reason: reason, sinceNanoseconds: nowNanoseconds)
        local[target] = .offline
    }

    /// Out-of-service targets that have left their chain (or routing), in order: the
    /// ones a disk probe may bring back.
    public func probeCandidates(_ states: [TargetID: PublicState]?) -> [TargetID] {
        targets.filter { t in failed[t] != nil && (states?[t].map { $0 == .offline || $0 == .lastsrv } ?? true) }
    }

    /// Starts a probe of `target` if one is due (`intervalNanoseconds` after its last
    /// failure or probe); the probe's start time becomes the target's.
    public mutating func startProbe(_ target: TargetID, nowNanoseconds: UInt64, intervalNanoseconds: UInt64) -> Probe? {
        guard var f = failed[target], nowNanoseconds >= f.sinceNanoseconds &+ intervalNanoseconds else { return nil }
        let probe = Probe(target: target, reason: f.reason, startedNanoseconds: nowNanoseconds)
        f.sinceNanoseconds = nowNanoseconds
        failed[target] = f
        return probe
    }

    /// A probe ended. If the disk worked and no failure or probe came after it, the
    /// target rejoins (ONLINE, through a resync) and this returns true.
    public mutating func finishProbe(_ probe: Probe, diskWorks: Bool) -> Bool {
        guard diskWorks, failed[probe.target] == Failure(reason: probe.reason, sinceNanoseconds: probe.startedNanoseconds) else { return false }
        failed[probe.target] = nil
        rejoining.insert(probe.target)
        syncDone.remove(probe.target)
        local[probe.target] = .online  // also from LASTSRV, which observe leaves alone
        return true
    }
}

extension RoutingInfo {
    /// Each of `targets`' public state in its chain, for `TargetRecovery.observe`.
    public func publicStates(of targets: [TargetID]) -> [TargetID: PublicState] {
        var out: [TargetID: PublicState] = [:]
        for t in targets {
            if let c = target(t)?.chain, let s = chain(c)?.state(of: t) { out[t] = s }
        }
        return out
    }
}
