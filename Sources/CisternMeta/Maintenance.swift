import CisternCore
import CoreMetrics

/// Who runs the metadata servers' background work. Every server can; one at a time
/// does, the holder of a lease in the shared KV that it renews each round. A server
/// that dies stops renewing, and another takes over once the lease runs out. The
/// work itself is idempotent, so two owners for a moment (a paused holder whose
/// lease ran out) repeat some work but never break anything.
public struct MaintenanceLease: Sendable, Equatable {
    /// The metadata server (node id) holding it.
    public var owner: UInt32
    /// Until when, on the owner's clock.
    public var expiresAtNanoseconds: UInt64

    public init(owner: UInt32, expiresAtNanoseconds: UInt64) {
        self.owner = owner
        self.expiresAtNanoseconds = expiresAtNanoseconds
    }

    public enum Decision: Sendable, Equatable {
        /// Write a lease for `me` and do the work.
        case take
        /// `me` holds it: extend it and do the work.
        case renew
        /// Another server holds a live lease: do nothing this round.
        case standBy(owner: UInt32)
    }

    /// The rule: a missing or expired lease is taken; one's own is renewed; another
    /// server's live lease is respected.
    public static func decide(current: MaintenanceLease?, me: UInt32, nowNanoseconds: UInt64) -> Decision {
        guard let current, nowNanoseconds < current.expiresAtNanoseconds else { return .take }
        return current.owner == me ? .renew : .standBy(owner: current.owner)
    }

    func bytes() -> [UInt8] {
        KeyCoding.bigEndian(UInt64(owner)) + KeyCoding.bigEndian(expiresAtNanoseconds)
    }

    init?(bytes: [UInt8]) {
        guard bytes.count == 16, let owner = KeyCoding.bigEndianValue(bytes[0..<8]), let expires = KeyCoding.bigEndianValue(bytes[8..<16]),
              let o = UInt32(exactly: owner) else { return nil }
        self.init(owner: o, expiresAtNanoseconds: expires)
    }
}

/// The settings of the background work (`meta:` in a metadata server's config).
public struct MaintenanceSettings: Sendable, Equatable {
    /// How often the owner runs a round (and every server tries for the lease).
    public var intervalNanoseconds: UInt64 = 5_000_000_000
    /// How long a removed file's chunks are kept before they are deleted (readers
    /// that opened it before the removal finish meanwhile).
    public var garbageDelayNanoseconds: UInt64 = 30_000_000_000
    /// How long a write session lives after its client was last heard from; then the
    /// file's length is reconciled from storage and the session closed.
    public var sessionTimeoutNanoseconds: UInt64 = 60_000_000_000
    /// How long the record that makes a retried request apply once is kept (well
    /// beyond any client's retry budget).
    public var idempotencyRetentionNanoseconds: UInt64 = 3_600_000_000_000
    /// Most items one round looks at per kind of work.
    public var batchMax = 256

    public init() {}

    /// The lease outlives three missed rounds.
    public var leaseNanoseconds: UInt64 { intervalNanoseconds &* 3 }
}

/// What one round of background work did.
public struct MaintenanceRound: Sendable, Equatable {
    public var owner = false
    public var filesCollected = 0
    public var filesFailed = 0
    public var sessionsReconciled = 0
    public var sessionsFailed = 0
    public var recordsExpired = 0
    public init() {}
}

/// Where each kind of work stopped, so a round resumes there and every item is
/// reached however many come before it (live sessions, files not yet due).
struct MaintenanceCursors: Sendable {
    var garbage: [UInt8]?
    var sessions: [UInt8]?
}

extension MetaService {
    /// Records that `client` is alive: its write sessions stay open.
    public func keepAlive(client: UInt64) async throws {
        _ = try await mutate { ns in
            try await ns.tx.set(MetaKeys.clientAlive(client), KeyCoding.bigEndian(ns.now))
            return nil
        }
    }

    /// Takes or renews the maintenance lease for `me`; true when `me` holds it.
    public func acquireMaintenanceLease(me: UInt32, leaseNanoseconds: UInt64) async throws -> Bool {
        let now = runtime.nowNanoseconds()
        return try await kv.transact(runtime: runtime, idempotent: true) { tx in
            let current = try await tx.get(MetaKeys.maintenanceLease).flatMap(MaintenanceLease.init(bytes:))
            switch MaintenanceLease.decide(current: current, me: me, nowNanoseconds: now) {
            case .take, .renew:
                try await tx.set(MetaKeys.maintenanceLease, MaintenanceLease(owner: me, expiresAtNanoseconds: now &+ leaseNanoseconds).bytes())
                return true
            case .standBy:
                return false
            }
        }
    }

    /// The next `limit` keys under `prefix` after `cursor`, wrapping to the start
    /// when the end is reached; with the cursor to resume from.
    func page(_ prefix: [UInt8], after cursor: [UInt8]?, limit: Int) async throws -> (pairs: [KVPair], next: [UInt8]?) {
        let all = KVRange.prefix(prefix)
        var range = all
        if let cursor, all.contains(cursor) { range.begin = cursor + [0] }
        let scan = range
        let pairs = try await read { ns in try await ns.tx.getRange(scan, limit: min(limit, KVLimits.rangeLimitMax), reverse: false) }
        // A short page reached the end: the next round starts from the beginning.
        return (pairs, pairs.count < limit ? nil : pairs.last?.key)
    }

    /// Deletes the chunks of up to `limit` removed files whose delay has passed,
    /// resuming after `cursor`. Returns (collected, failed, next cursor).
    func collectGarbagePage(using remover: any ChunkRemover, delayNanoseconds: UInt64, after cursor: [UInt8]?, limit: Int) async throws -> (Int, Int, [UInt8]?) {
        let now = runtime.nowNanoseconds()
        let (pairs, next) = try await page(MetaKeys.garbagePrefix, after: cursor, limit: limit)
        var collected = 0
        var failed = 0
        for pair in pairs {
            guard let file = try? Inode(wireBytes: pair.value) else { continue }
            // The entry records the removal time in `mtimeNanoseconds`.
            guard now >= file.mtimeNanoseconds &+ delayNanoseconds else { continue }
            if let layout = file.layout {
                let chunkBytes = UInt64(max(layout.chunkBytes, 1))
                let count = (file.length + chunkBytes - 1) / chunkBytes
                do {
                    try await remover.removeChunks(of: file.id, layout: layout, count: count)
                } catch {
                    failed += 1
                    continue
                }
            }
            _ = try await mutate { ns in
                try await ns.tx.clear(MetaKeys.garbage(file.id))
                return nil
            }
            collected += 1
        }
        return (collected, failed, next)
    }

    /// Closes the write sessions of clients not heard from for `timeoutNanoseconds`
    /// (up to `limit` sessions looked at, resuming after `cursor`): each file's length
    /// is first set from what storage holds. Returns (reconciled, failed, next cursor).
    func reconcileExpiredSessions(using probe: any ChunkLengthProbe, timeoutNanoseconds: UInt64, after cursor: [UInt8]?, limit: Int) async throws -> (Int, Int, [UInt8]?) {
        let now = runtime.nowNanoseconds()
        let (pairs, next) = try await page(MetaKeys.sessionsPrefix, after: cursor, limit: limit)
        var heard: [UInt64: UInt64] = [:]
        var reconciled = 0
        var failed = 0
        for pair in pairs {
            // s/ + inode (8) + session (8); the session's high half is its client.
            let key = pair.key
            let base = MetaKeys.sessionsPrefix.count
            guard key.count == base + 16, let inode = KeyCoding.bigEndianValue(key[base..<base + 8]),
                  let session = KeyCoding.bigEndianValue(key[(base + 8)...]) else { continue }
            let client = session >> 32
            let opened = KeyCoding.bigEndianValue(pair.value) ?? 0
            if heard[client] == nil {
                heard[client] = try await read { ns in try await ns.tx.get(MetaKeys.clientAlive(client)).flatMap { KeyCoding.bigEndianValue($0) } } ?? 0
            }
            let lastHeard = max(opened, heard[client] ?? 0)
            guard now >= lastHeard &+ timeoutNanoseconds else { continue }
            do {
                _ = try await reconcileLength(InodeID(inode), using: probe)
            } catch {
                failed += 1
                continue
            }
            _ = try await mutate { ns in
                try await ns.tx.clear(key)
                return nil
            }
            reconciled += 1
        }
        return (reconciled, failed, next)
    }

    /// Drops up to `limit` idempotency records older than `retentionNanoseconds`,
    /// oldest first. Returns how many.
    func expireIdempotencyRecords(retentionNanoseconds: UInt64, limit: Int) async throws -> Int {
        let now = runtime.nowNanoseconds()
        guard now > retentionNanoseconds else { return 0 }
        let cutoff = now - retentionNanoseconds
        let prefix = MetaKeys.idempotencyByTimePrefix
        let range = KVRange(begin: prefix, end: prefix + KeyCoding.bigEndian(cutoff))
        return try await kv.transact(runtime: runtime, idempotent: true) { tx in
            let old = try await tx.getRange(range, limit: min(limit, KVLimits.rangeLimitMax), reverse: false)
            for pair in old {
                let base = prefix.count
                guard pair.key.count == base + 24, let client = KeyCoding.bigEndianValue(pair.key[(base + 8)..<(base + 16)]),
                      let request = KeyCoding.bigEndianValue(pair.key[(base + 16)...]) else { continue }
                try await tx.clear(MetaKeys.idempotency(client, request))
                try await tx.clear(pair.key)
            }
            return old.count
        }
    }
}

/// Runs the metadata servers' background work: deleting removed files' chunks,
/// reconciling the length of files whose writer went away, and expiring idempotency
/// records. Every metadata server runs one; the holder of the maintenance lease does
/// the work each round, the others stand by.
public actor MetaMaintenance {
    public nonisolated let unownedExecutor: UnownedSerialExecutor
    let meta: MetaService
    let me: UInt32
    let remover: any ChunkRemover
    let probe: any ChunkLengthProbe
    public let settings: MaintenanceSettings
    private var cursors = MaintenanceCursors()
    private var stopped = false
    /// Rounds this server ran as the lease holder.
    public private(set) var roundsOwned = 0

    private let ownerGauge: Gauge
    private let filesCollected = Counter(label: "cistern_meta_gc_files_total")
    private let filesFailed = Counter(label: "cistern_meta_gc_failures_total")
    private let sessionsReconciled = Counter(label: "cistern_meta_sessions_reconciled_total")
    private let sessionsFailed = Counter(label: "cistern_meta_session_failures_total")
    private let recordsExpired = Counter(label: "cistern_meta_idempotency_expired_total")
    private let roundsFailed = Counter(label: "cistern_meta_maintenance_round_failures_total")

    public init(meta: MetaService, me: UInt32, remover: any ChunkRemover, probe: any ChunkLengthProbe, settings: MaintenanceSettings = MaintenanceSettings(), runtime: any Runtime) {
        self.meta = meta
        self.me = me
        self.remover = remover
        self.probe = probe
        self.settings = settings
        self.ownerGauge = Gauge(label: "cistern_meta_maintenance_owner")
        self.unownedExecutor = runtime.makeActorExecutor()
    }

    /// One round: take or renew the lease; if held, do up to a batch of each work.
    @discardableResult
    public func round() async throws -> MaintenanceRound {
        var out = MaintenanceRound()
        out.owner = try await meta.acquireMaintenanceLease(me: me, leaseNanoseconds: settings.leaseNanoseconds)
        ownerGauge.record(out.owner ? 1 : 0)
        guard out.owner else { return out }
        roundsOwned += 1
        let (collected, gcFailed, garbageNext) = try await meta.collectGarbagePage(
            using: remover, delayNanoseconds: settings.garbageDelayNanoseconds, after: cursors.garbage, limit: settings.batchMax)
        cursors.garbage = garbageNext
        out.filesCollected = collected
        out.filesFailed = gcFailed
        let (reconciled, sessionFailed, sessionsNext) = try await meta.reconcileExpiredSessions(
            using: probe, timeoutNanoseconds: settings.sessionTimeoutNanoseconds, after: cursors.sessions, limit: settings.batchMax)
        cursors.sessions = sessionsNext
        out.sessionsReconciled = reconciled
        out.sessionsFailed = sessionFailed
        out.recordsExpired = try await meta.expireIdempotencyRecords(retentionNanoseconds: settings.idempotencyRetentionNanoseconds, limit: settings.batchMax)
        filesCollected.increment(by: collected)
        filesFailed.increment(by: gcFailed)
        sessionsReconciled.increment(by: reconciled)
        sessionsFailed.increment(by: sessionFailed)
        recordsExpired.increment(by: out.recordsExpired)
        return out
    }

    /// Runs rounds every `settings.intervalNanoseconds` until `stop()`.
    public func run(runtime: any Runtime) async {
        while !stopped {
            do { try await runtime.sleep(nanoseconds: settings.intervalNanoseconds) } catch { return }
            if stopped { return }
            do {
                try await round()
            } catch {
                // The KV is unavailable or conflicted past its retries: try next round.
                roundsFailed.increment()
            }
        }
    }

    public func stop() { stopped = true }
}
