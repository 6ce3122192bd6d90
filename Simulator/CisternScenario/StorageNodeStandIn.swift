import CisternCore
import CisternMgmtd
import CisternRouting
import CisternStorage

/// A storage node as the cluster manager sees it, until the storage service lands:
/// it heartbeats its targets' local states and follows the same recovery rules as
/// the storage service (`TargetRecovery`, one value for both). A SYNCING target
/// becomes up to date after `syncNanoseconds`, standing in for the data copy the
/// storage service does. (3FS also has a storage node stop serving after half the failure timeout
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
    private var recovery: TargetRecovery
    /// Sync copies in flight; void when the node starts over.
    private var syncing: Set<TargetID> = []

    static let markerPath = "storage-node.state"

    init(runtime: any Runtime, client: MgmtdClient, targets: [TargetID], restarted: Bool, intervalNanoseconds: UInt64, syncNanoseconds: UInt64) {
        self.runtime = runtime
        self.client = client
        self.targets = targets
        self.intervalNanoseconds = intervalNanoseconds
        self.syncNanoseconds = syncNanoseconds
        self.recovery = TargetRecovery(targets: targets, restarted: restarted)
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

    private func tick() async {
        await client.refreshRouting()
        let states = await client.routing?.publicStates(of: targets)
        switch recovery.observe(states) {
        case .waitForOffline: return
        case .startedOver:
            syncing.removeAll()
            return
        case .report: break
        }
        for t in targets where recovery.needsSync(t, state: states?[t]) && !syncing.contains(t) {
            syncing.insert(t)
            let delay = syncNanoseconds
            runtime.spawn("storage.sync") { [self] in
                try? await self.runtime.sleep(nanoseconds: delay)
                await self.synced(t)
            }
        }
        let reports = targets.map { TargetReport(target: $0, localState: recovery.local[$0] ?? .offline, usedBytes: 0, capacityBytes: 1 << 40) }
        try? await client.heartbeat(targets: reports)
    }

    private func synced(_ t: TargetID) {
        guard syncing.remove(t) != nil else { return }
        recovery.syncFinished(t)
    }
}
