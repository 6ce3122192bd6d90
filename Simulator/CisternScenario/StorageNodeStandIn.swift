import CisternCore
import CisternMgmtd
import CisternRouting

/// A storage node as the cluster manager sees it, until the storage service lands:
/// it heartbeats its targets' local states and follows 3FS's recovery rules. After
/// a restart it sends no heartbeat until routing shows all its targets offline, so
/// every target goes through recovery; if it finds one of its targets offline or
/// LASTSRV while it runs (it was cut off and declared dead), it starts over the same
/// way. A target that is not serving and has not finished a sync is never reported
/// up to date, so a node the manager declared failed while it was cut off rejoins
/// through a sync instead of waiting forever. A SYNCING target becomes up to date
/// after `syncNanoseconds`, standing in for the data copy the storage service will
/// do. (3FS also has a storage node stop serving after half the failure timeout
/// without reaching the manager; that guards the data path and belongs to the
/// storage service, not to target states: applied here it would make every node
/// resync after each manager failover, which outlasts half the timeout.)
actor StorageNodeStandIn {
    nonisolated let unownedExecutor: UnownedSerialExecutor
    let runtime: any Runtime
    let client: MgmtdClient
    let targets: [TargetID]
    let intervalNanoseconds: UInt64
    let syncNanoseconds: UInt64
    private var local: [TargetID: LocalState] = [:]
    private var recovering: Bool
    private var syncing: Set<TargetID> = []

    static let markerPath = "storage-node.state"

    init(runtime: any Runtime, client: MgmtdClient, targets: [TargetID], restarted: Bool, intervalNanoseconds: UInt64, syncNanoseconds: UInt64) {
        self.runtime = runtime
        self.client = client
        self.targets = targets
        self.intervalNanoseconds = intervalNanoseconds
        self.syncNanoseconds = syncNanoseconds
        self.recovering = restarted
        for t in targets { local[t] = restarted ? .online : .upToDate }
        self.unownedExecutor = runtime.makeActorExecutor()
    }

    /// Boots from `disk`: a node that finds its marker was running before, and recovers.
    static func boot(runtime: any Runtime, disk: any Disk, client: MgmtdClient, targets: [TargetID], intervalNanoseconds: UInt64, syncNanoseconds: UInt64) async -> StorageNodeStandIn {
        var restarted = false
        while true {
            do {
                if (try? await disk.open(markerPath, create: false)) != nil {
                    restarted = true
                } else {
                    let f = try await disk.open(markerPath, create: true)
                    try await disk.write(f, offset: 0, Array("started".utf8))
                    try await disk.fsync(f)
                }
                break
            } catch {
                try? await runtime.sleep(nanoseconds: 100_000_000)
            }
        }
        let node = StorageNodeStandIn(runtime: runtime, client: client, targets: targets, restarted: restarted, intervalNanoseconds: intervalNanoseconds, syncNanoseconds: syncNanoseconds)
        await client.serveHints()
        runtime.spawn("storage.heartbeat") { [node] in await node.loop() }
        return node
    }

    private func loop() async {
        while true {
            await tick()
            try? await runtime.sleep(nanoseconds: intervalNanoseconds)
        }
    }

    private func state(of t: TargetID, in r: RoutingInfo) -> PublicState? {
        for c in r.chains { if let m = c.targets.first(where: { $0.target == t }) { return m.state } }
        return nil
    }

    private func startOver() {
        recovering = true
        syncing.removeAll()
        for t in targets { local[t] = .online }
    }

    private func tick() async {
        await client.refreshRouting()
        let r = await client.routing
        if recovering {
            guard let r, targets.allSatisfy({ t in state(of: t, in: r).map { $0 == .offline || $0 == .lastsrv } ?? true }) else { return }
            recovering = false
        } else if let r, targets.contains(where: { t in state(of: t, in: r).map { $0 == .offline || $0 == .lastsrv } ?? false }) {
            startOver()
            return
        }
        if let r {
            for t in targets {
                switch state(of: t, in: r) {
                case .syncing where local[t] == .online && !syncing.contains(t):
                    syncing.insert(t)
                    let delay = syncNanoseconds
                    runtime.spawn("storage.sync") { [self] in
                        try? await self.runtime.sleep(nanoseconds: delay)
                        await self.synced(t)
                    }
                case .serving:
                    local[t] = .upToDate
                case .waiting, .offline:
                    // Not serving and no sync finished: its data may be behind.
                    if !syncing.contains(t) { local[t] = .online }
                default:
                    break
                }
            }
        }
        let reports = targets.map { TargetReport(target: $0, localState: local[$0] ?? .offline, usedBytes: 0, capacityBytes: 1 << 40) }
        try? await client.heartbeat(targets: reports)
    }

    private func synced(_ t: TargetID) {
        guard syncing.remove(t) != nil, !recovering else { return }
        local[t] = .upToDate
    }
}
