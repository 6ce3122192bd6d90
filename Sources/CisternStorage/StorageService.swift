import CisternAuth
import CisternCore
import CisternMgmtd
import CisternRouting
import CisternWire
import Logging

/// Timing and limits of a storage node.
public struct StorageConfig: Sendable, Equatable {
    public var heartbeatIntervalNanoseconds: UInt64 = 500_000_000
    /// Without a successful heartbeat for this long, the node stops serving: the
    /// manager may already have declared it failed (half its failure timeout).
    public var isolationNanoseconds: UInt64 = 1_500_000_000
    public var callTimeoutNanoseconds: UInt64 = 1_000_000_000
    /// Attempts to forward a write down the chain before failing it (routing is
    /// refreshed between attempts, so a new successor is found after a failure).
    public var forwardAttemptsMax = 40
    public var forwardBackoffNanoseconds: UInt64 = 100_000_000
    /// The forwarding retries as a policy (a fixed wait between attempts).
    public var forwardRetry: RetryPolicy { .fixed(attemptsMax: forwardAttemptsMax, delayNanoseconds: forwardBackoffNanoseconds) }
    /// The scrubber re-verifies this many committed chunks' checksums per interval,
    /// so a corrupt replica is found and repaired even if nobody reads it.
    public var scrubChunksPerInterval = 64
    public var scrubIntervalNanoseconds: UInt64 = 1_000_000_000
    /// A deliberate bug for checker self-tests: the head acknowledges a write as soon
    /// as it has staged it, before the tail commits (the forward goes on behind).
    public var plantedEarlyAck = false
    /// A deliberate bug for checker self-tests: the node checks no capability (as if
    /// it had no cluster key), so any client reaches any tenant's chunks.
    public var plantedOpenStorage = false
    /// A target taken out of service for a failed commit probes its disk this often;
    /// once a probe (write, sync, read back) succeeds it rejoins through a resync.
    public var failedTargetProbeNanoseconds: UInt64 = 5_000_000_000
    /// Chunks a resync asks for per page of the successor's metadata dump (at most
    /// `StorageLimits.dumpPageEntriesMax`).
    public var resyncDumpPageEntries = StorageLimits.dumpPageEntriesMax
    /// The node's memory tier (`HotPages`): bytes of recently written and read chunks
    /// kept in memory, half of it at most for `cache` writes behind. 0: none (every
    /// read from the disk, every write through).
    public var memoryCacheBytes = 1 << 30
    public init() {}
}

/// A storage node: its targets (one chunk engine each, in a folder of the node's
/// disk) and the CRAQ protocol over them. Writes enter at the chain's head, which
/// assigns the version under the chunk's lock, stages it, forwards it, and commits
/// when the successor acknowledges; the tail commits first. Reads are served by any
/// SERVING replica from committed data. Every request carries the chain version and
/// a mismatch is refused. A SYNCING successor is brought up to date by its
/// predecessor. Heartbeats report each target's local state and space.
public actor StorageService {
    public nonisolated let unownedExecutor: UnownedSerialExecutor
    public let node: NodeID
    let runtime: any Runtime
    let transport: any Transport
    let mgmtd: MgmtdClient
    let config: StorageConfig
    let log: Logger
    let disk: any Disk
    public nonisolated let targetIDs: [TargetID]
    private var engines: [TargetID: ChunkEngine] = [:]
    /// The targets' local states, recovery after restarts and out-of-service targets
    /// (3FS's rules, as a value shared with the simulator's stand-in).
    private var recovery: TargetRecovery
    private var syncingSuccessors: Set<TargetID> = []
    private var locks = ChunkLocks()
    private var dedup = DedupTable<StorageReply>()
    private var lastContact: UInt64
    private var repairing: Set<ChunkLocks.Key> = []
    /// Each target's `writeBehindFailures` already acted on.
    private var writeBehindFailuresSeen: [TargetID: Int] = [:]
    /// The node's memory tier, shared by its targets' engines.
    public nonisolated let hotPages: HotPages?
    private let memoryTierMetrics = MemoryTierMetrics()
    private let nodeMetrics = NodeStorageMetrics()
    private var memoryTierPublished: HotPages.Stats?
    /// Targets whose disk refused a write for lack of space, with the message said:
    /// logged once, reported in heartbeats, cleared by the next write that fits.
    /// Also cleared when the device's free space grows by a largest chunk.
    private var outOfSpace: [TargetID: (why: String, freeBytes: UInt64, neededBytes: UInt64)] = [:]
    /// Checksum failures seen on reads (each triggers a repair).
    public private(set) var corruptionsDetected = 0
    public private(set) var repairs = 0

    static let markerPath = "storage-node.state"
    /// The cluster key: with one, every request must carry a capability for the
    /// chunks it names (see `CapabilityKey.check`); without one, the node serves
    /// anyone (a cluster without authentication).
    nonisolated let capabilityKey: CapabilityKey?
    /// What this node's own requests to other storage nodes carry (the service capability).
    nonisolated let serviceTrailer: AuthTrailer?

    init(node: NodeID, runtime: any Runtime, transport: any Transport, mgmtd: MgmtdClient, config: StorageConfig, targets: [TargetID], restarted: Bool, disk: any Disk,
         capabilityKey: CapabilityKey?) {
        self.hotPages = config.memoryCacheBytes > 0 ? HotPages(capacityBytes: config.memoryCacheBytes) : nil
        self.capabilityKey = capabilityKey
        self.serviceTrailer = capabilityKey.map { AuthTrailer(capabilities: [$0.service]) }
        self.node = node
        self.disk = disk
        self.runtime = runtime
        self.transport = transport
        self.mgmtd = mgmtd
        self.config = config
        self.targetIDs = targets
        self.recovery = TargetRecovery(targets: targets, restarted: restarted)
        self.lastContact = runtime.nowNanoseconds()
        self.log = runtime.logger("storage")
        self.unownedExecutor = runtime.makeActorExecutor()
    }

    /// Opens every target's chunk engine (in `targets/<id>` of `disk`), serves the
    /// storage service and starts heartbeating. A node that finds its marker on the
    /// disk was running before: it sends no heartbeat until routing shows all its
    /// targets offline, so each goes through a resync.
    public static func start(
        node: NodeID, runtime: any Runtime, transport: any Transport, disk: any Disk, mgmtd: MgmtdClient,
        targets: [TargetID], config: StorageConfig = StorageConfig(), capabilityKey: CapabilityKey? = nil
    ) async throws -> StorageService {
        var restarted = false
        if (try? await disk.open(markerPath, create: false)) != nil {
            restarted = true
        } else {
            let f = try await disk.open(markerPath, create: true)
            try await disk.write(f, offset: 0, Array("started".utf8))
            try await disk.fsync(f)
        }
        let service = StorageService(node: node, runtime: runtime, transport: transport, mgmtd: mgmtd, config: config, targets: targets, restarted: restarted, disk: disk, capabilityKey: capabilityKey)
        for t in targets {
            let engine = try await ChunkEngine.open(disk: SubdirectoryDisk(disk, folder: "targets/t\(t.rawValue)"), runtime: runtime,
                                                    hotPages: service.hotPages, hotOwner: t.rawValue)
            await service.attach(t, engine)
        }
        let metrics = StorageMetrics()
        await transport.serve(storageService) { [service] request in
            let (parsed, trailer) = try StorageRequest.decode(request.message)
            let start = runtime.nowNanoseconds()
            metrics.started()
            if let key = service.capabilityKey, !service.config.plantedOpenStorage,
               let why = key.check(needed: parsed.neededRights, inodes: parsed.inodes, presented: trailer?.capabilities ?? []) {
                let reply = StorageReply.forbidden(why)
                metrics.record(parsed, requestBulk: request.message.bulk.count, reply: reply, replyBulk: 0, nanoseconds: runtime.nowNanoseconds() &- start)
                return Message(method: 0, header: reply.wireBytes())
            }
            // Fault point: a request waits before it is handled (a busy node).
            if runtime.faultPoint("storage.request.delay") { try? await runtime.sleep(nanoseconds: 30_000_000) }
            let (reply, bulk) = await service.handle(parsed, bulk: request.message.bulk)
            metrics.record(parsed, requestBulk: request.message.bulk.count, reply: reply, replyBulk: bulk.count, nanoseconds: runtime.nowNanoseconds() &- start)
            return Message(method: 0, header: reply.wireBytes(), bulk: bulk)
        }
        await mgmtd.serveHints()
        runtime.spawn("storage.heartbeat") { [service] in await service.heartbeatLoop() }
        runtime.spawn("storage.scrub") { [service] in await service.scrubLoop() }
        return service
    }

    private func attach(_ t: TargetID, _ e: ChunkEngine) { engines[t] = e }

    /// The engine of `target` (for checkers and tests).
    public func engine(_ target: TargetID) -> ChunkEngine? { engines[target] }

    // MARK: Locks

    private func lock(_ key: ChunkLocks.Key) async {
        if locks.tryAcquire(key) { return }
        await withUnsafeContinuation { locks.enqueue(key, $0) }
    }

    private func unlock(_ key: ChunkLocks.Key) {
        locks.release(key)?.resume()
    }

    // MARK: Requests

    func handle(_ request: StorageRequest, bulk: [UInt8]) async -> (StorageReply, [UInt8]) {
        if recovery.recovering { return (.notServing("\(node) is recovering after a restart"), []) }
        if runtime.nowNanoseconds() > lastContact &+ config.isolationNanoseconds {
            return (.notServing("\(node) lost contact with the cluster manager"), [])
        }
        let named: TargetID? = {
            switch request {
            case .write(let a): return a.target
            case .writeBatch(let b): return b.target
            case .read(let t, _, _, _), .dumpMeta(let t, _), .removeChunk(let t, _, _), .syncDone(let t, _), .readBatch(let t, _, _, _),
                 .statChunk(let t, _, _, _), .dumpMetaPage(let t, _, _, _), .readRange(let t, _, _, _, _, _): return t
            }
        }()
        if let t = named, let why = recovery.outOfService(t) { return (.notServing("\(t) failed and is out of service: \(why)"), []) }
        switch request {
        case .write(let a): return (await write(a, bulk), [])
        case .writeBatch(let b): return (await writeBatch(b, bulk), [])
        case .read(let t, let c, let v, let chunk): return await read(t, chain: c, chainVersion: v, chunk: chunk)
        case .readRange(let t, let c, let v, let chunk, let offset, let length):
            let (reply, data) = await read(t, chain: c, chainVersion: v, chunk: chunk)
            guard case .data(let version, _) = reply else { return (reply, data) }
            let start = min(Int(offset), data.count)
            let part = Array(data[start..<min(data.count, start + Int(length))])
            return (.data(version: version, checksum: CRC32C.checksum(part)), part)
        case .statChunk(let t, let c, let v, let chunk):
            guard let engine = engines[t] else { return (.notServing("no \(t) on \(node)"), []) }
            guard let chain = await mgmtd.routing?.chain(c) else { return (.notServing("\(c) is not in this node's routing yet"), []) }
            guard chain.version == v else { return (.chainVersionMismatch(current: chain.version), []) }
            guard chain.state(of: t) == .serving else { return (.notServing("\(t) is not serving"), []) }
            switch ReplicaWriteRule.read(await engine.meta(chunk)) {
            case .notFound: return (.notFound, [])
            case .notCommitted: return (.notCommitted, [])
            case .serve(let committed): return (.chunkStat(version: committed.version, length: committed.length), [])
            }
        case .readBatch(let t, let c, let v, let chunks):
            guard chunks.count <= StorageLimits.batchChunksMax else {
                return (.failed("a batch of \(chunks.count) chunks exceeds the \(StorageLimits.batchChunksMax)-chunk limit; split it"), [])
            }
            return await readBatch(t, chain: c, chainVersion: v, chunks: chunks)
        case .dumpMeta(let t, _):
            guard let e = engines[t] else { return (.notServing("no \(t) here"), []) }
            return (.meta(await e.allMeta()), [])
        case .dumpMetaPage(let t, _, let after, let limit):
            guard let e = engines[t] else { return (.notServing("no \(t) here"), []) }
            let page = await e.metaPage(after: after, limit: min(Int(limit), StorageLimits.dumpPageEntriesMax))
            return (.metaPage(page.metas, more: page.more), [])
        case .removeChunk(let t, _, let chunk):
            guard let e = engines[t] else { return (.notServing("no \(t) here"), []) }
            let key = ChunkLocks.Key(target: t.rawValue, chunk: chunk)
            await lock(key)
            defer { unlock(key) }
            do {
                try await e.remove(chunk)
                return (.done, [])
            } catch {
                return (.failed("\(error)"), [])
            }
        case .syncDone(let t, let v):
            guard let chain = await chain(of: t), chain.version == v, chain.state(of: t) == .syncing else {
                return (.failed("\(t) is not syncing under chain version \(v)"), [])
            }
            recovery.syncFinished(t)
            return (.done, [])
        }
    }

    private func chain(of target: TargetID) async -> Chain? {
        guard let r = await mgmtd.routing, let c = r.target(target)?.chain else { return nil }
        return r.chain(c)
    }

    /// Why a request's target cannot take it now: the reply to send.
    private struct Refusal: Error {
        let reply: StorageReply
    }

    /// The engine, chain and state of `t` when it serves chain `c` at `chainVersion`
    /// now: for reads it must be SERVING, for writes receive writes.
    private func admit(_ t: TargetID, chain c: ChainID, chainVersion: UInt64, write: Bool) async throws(Refusal) -> (ChunkEngine, Chain, PublicState) {
        guard let engine = engines[t] else { throw Refusal(reply: .notServing("no \(t) on \(node)")) }
        guard let chain = await mgmtd.routing?.chain(c) else { throw Refusal(reply: .notServing("\(c) is not in this node's routing yet")) }
        guard chain.version == chainVersion else { throw Refusal(reply: .chainVersionMismatch(current: chain.version)) }
        guard let mine = chain.state(of: t), write ? mine.receivesWrites : mine == .serving else {
            throw Refusal(reply: .notServing("\(t) is \(chain.state(of: t)?.description ?? "not in \(c)")"))
        }
        return (engine, chain, mine)
    }

    private func write(_ a: WriteArgs, _ data: [UInt8]) async -> StorageReply {
        let (engine, chain, mine): (ChunkEngine, Chain, PublicState)
        do { (engine, chain, mine) = try await admit(a.target, chain: a.chain, chainVersion: a.chainVersion, write: true) } catch { return error.reply }
        let key = ChunkLocks.Key(target: a.target.rawValue, chunk: a.chunk)
        if a.version == 0 {
            // A client write: only the head takes it.
            guard chain.writeTargets.first?.target == a.target, mine == .serving else {
                return .notServing("\(a.target) is not the head of \(a.chain)")
            }
            let channel = DedupTable<StorageReply>.Channel(client: a.tag.client, channel: a.tag.channel)
            var doubt: DedupTable<StorageReply>.InDoubt?
            switch dedup.begin(channel, sequence: a.tag.sequence) {
            case .repeated(let reply): return reply
            case .inProgress: return .notCommitted
            case .stale(let last): return .failed("request \(a.tag.sequence) is older than \(last) on its channel")
            case .inDoubt(let d): doubt = d[a.chunk]
            case .new: break
            }
            await lock(key)
            let (reply, staged) = await headWrite(a, data, engine: engine, inDoubt: doubt)
            unlock(key)
            if case .written = reply {
                dedup.finish(channel, sequence: a.tag.sequence, result: reply)
            } else if let left = staged ?? doubt {
                // Staged and unsettled: a retry settles this version, never a new one.
                dedup.doubt(channel, sequence: a.tag.sequence, versions: [a.chunk: left])
            } else {
                dedup.abandon(channel, sequence: a.tag.sequence)
            }
            return reply
        }
        await lock(key)
        defer { unlock(key) }
        let reply = await replicaWrite(a, data, engine: engine)
        if case .written = reply, a.tag.client != 0 {
            // Every replica remembers the client requests it applied, so the next
            // head answers a retry instead of applying it again.
            dedup.remember(DedupTable<StorageReply>.Channel(client: a.tag.client, channel: a.tag.channel), sequence: a.tag.sequence, result: reply)
        }
        return reply
    }

    /// The head's part of a client write. `inDoubt`: the version an earlier attempt of
    /// this request staged and could not settle. If it is still pending it is sent on
    /// again as that version (it may be committed downstream already); if the chunk
    /// moved past it, the request took effect before the later write and is answered.
    /// Returns the reply and the version this attempt staged when it failed after
    /// staging (in doubt).
    private func headWrite(_ a: WriteArgs, _ bytes: [UInt8], engine: ChunkEngine, inDoubt: DedupTable<StorageReply>.InDoubt?) async -> (StorageReply, DedupTable<StorageReply>.InDoubt?) {
        let meta = await engine.meta(a.chunk)
        if let d = inDoubt {
            switch ReplicaWriteRule.retry(meta, inDoubt: d.version, checksum: d.checksum) {
            case .answered: return (.written(version: d.version), nil)
            case .settleLater(let pending): return await settle(a, pending: pending, inDoubt: d, engine: engine)
            case .resend, .writeAnew: break  // decided below, against this attempt's bytes
            }
        }
        var content: [UInt8] = []
        // A partial write merges into the newest bytes here: a pending version this
        // head could not settle may be committed downstream and already read, so it
        // must not be dropped. A write from the start that covers them replaces them
        // all: no read-modify-write (every KV page put is one).
        let newest = meta?.newest
        let replacesAll = a.offset == 0 && bytes.count >= (newest?.length ?? 0)
        if newest != nil, !replacesAll {
            do {
                content = try await engine.readNewest(a.chunk).data
            } catch {
                if meta?.pending == nil { scheduleRepair(a.target, a.chunk) }
                return (.failed("\(error)"), nil)
            }
        }
        guard a.offset >= 0, a.offset + bytes.count <= SizeClass.largestBytes else {
            return (.failed("write of \(bytes.count) bytes at \(a.offset) exceeds the \(SizeClass.largestBytes)-byte chunk size"), nil)
        }
        if replacesAll {
            content = bytes
        } else {
            if content.count < a.offset + bytes.count { content += [UInt8](repeating: 0, count: a.offset + bytes.count - content.count) }
            content.replaceSubrange(a.offset..<(a.offset + bytes.count), with: bytes)
        }
        let checksum = CRC32C.checksum(content)
        let u: UInt64
        if let d = inDoubt, let pending = meta?.pending, pending.version == d.version, pending.checksum == checksum {
            u = d.version  // already staged here: send it on again
        } else {
            u = ReplicaWriteRule.nextVersion(meta)
            do {
                try await engine.stage(a.chunk, data: content, version: u, chainVersion: a.chainVersion, durable: a.durable)
                wrote(a.target)
            } catch {
                return (refusal(a.target, error), inDoubt)
            }
        }
        var forwarded = a
        forwarded.version = u
        forwarded.offset = 0
        forwarded.checksum = checksum
        if config.plantedEarlyAck {
            let f = forwarded
            runtime.spawn("storage.planted-early-ack") { [self] in _ = await self.forwardAndCommit(f, content, engine: engine) }
            return (.written(version: u), nil)
        }
        let reply = await forwardAndCommit(forwarded, content, engine: engine)
        if case .written = reply { return (reply, nil) }
        return (reply, DedupTable<StorageReply>.InDoubt(version: u, checksum: checksum))
    }

    /// A retry of a write whose version `d` a later write staged over (that later write
    /// pending here, unsettled): sends the pending version on with its own bytes, and
    /// once it is committed answers the retry as written at `d`, which took effect
    /// before it. Until then `d` stays in doubt.
    private func settle(_ a: WriteArgs, pending: ChunkVersion, inDoubt d: DedupTable<StorageReply>.InDoubt, engine: ChunkEngine) async -> (StorageReply, DedupTable<StorageReply>.InDoubt?) {
        let data: [UInt8]
        do {
            let newest = try await engine.readNewest(a.chunk)
            guard newest.version == pending else { return (.notCommitted, d) }
            data = newest.data
        } catch {
            return (.failed("\(error)"), d)
        }
        var forwarded = a
        forwarded.version = pending.version
        forwarded.offset = 0
        forwarded.checksum = pending.checksum
        let reply = await forwardAndCommit(forwarded, data, engine: engine)
        if case .written = reply { return (.written(version: d.version), nil) }
        return (reply, d)
    }

    private func replicaWrite(_ a: WriteArgs, _ content: [UInt8], engine: ChunkEngine) async -> StorageReply {
        let meta = await engine.meta(a.chunk)
        switch ReplicaWriteRule.decide(meta, version: a.version, checksum: a.checksum, fullReplace: a.fullReplace) {
        case .alreadyCommitted:
            return .written(version: a.version)
        case .superseded(let pending, let got):
            return .failed("\(a.target) has version \(pending) of \(a.chunk) pending, newer than \(got): a late copy of an older attempt")
        case .replace:
            do {
                try await engine.replace(a.chunk, data: content, version: a.version, chainVersion: a.chainVersion, durable: a.durable, checksum: a.checksum)
                wrote(a.target)
            } catch {
                return refusal(a.target, error)
            }
            // A replaced replica (SYNCING) is the tail of the writes: nothing to forward.
            return .written(version: a.version)
        case .stage:
            do {
                try await engine.stage(a.chunk, data: content, version: a.version, chainVersion: a.chainVersion, durable: a.durable, checksum: a.checksum)
                wrote(a.target)
            } catch {
                return refusal(a.target, error)
            }
            return await forwardAndCommit(a, content, engine: engine)
        case .alreadyStaged:
            return await forwardAndCommit(a, content, engine: engine)
        }
    }

    /// Forwards version `a.version` to the current successor (refreshing routing after
    /// failures, so a failed successor is skipped once the manager moves it), then
    /// commits locally. The tail commits at once.
    private func forwardAndCommit(_ a: WriteArgs, _ content: [UInt8], engine: ChunkEngine) async -> StorageReply {
        var lastError = "no attempt"
        let retry = config.forwardRetry
        for attempt in retry.attempts {
            if attempt > 0 {
                await retry.wait(beforeAttempt: attempt, on: runtime)
                await mgmtd.refreshRouting()
            }
            guard let chain = await mgmtd.routing?.chain(a.chain), let mine = chain.state(of: a.target), mine.receivesWrites else {
                return .failed("\(a.target) no longer receives writes in \(a.chain)")
            }
            guard let next = chain.successor(of: a.target) else { break }
            guard let nextNode = await mgmtd.routing?.target(next.target)?.node else { break }
            var f = a
            f.target = next.target
            f.chainVersion = chain.version
            f.fullReplace = next.state == .syncing
            let request = StorageRequest.write(f).message(bulk: content, trailer: serviceTrailer)
            do {
                let response = try await transport.call(nextNode, service: storageService, request, timeoutNanoseconds: config.callTimeoutNanoseconds)
                let reply = try StorageReply(wireBytes: response.header)
                if case .written = reply { return await commit(a, engine: engine) }
                // A successor without space refuses every retry alike: say so now.
                if case .noSpace = reply { return reply }
                lastError = "\(next.target): \(reply)"
            } catch {
                lastError = "\(next.target): \(error)"
            }
        }
        if lastError == "no attempt" { return await commit(a, engine: engine) }
        return .failed("could not forward \(a.chunk) version \(a.version): \(lastError)")
    }

    private func commit(_ a: WriteArgs, engine: ChunkEngine) async -> StorageReply {
        do {
            try await engine.commit(a.chunk, version: a.version, durable: a.durable)
            return .written(version: a.version)
        } catch {
            return await commitFailed(a.target, a.chunk, version: a.version, error, engine: engine)
        }
    }

    /// What a failed commit means: a resend of a committed version is acknowledged;
    /// otherwise the successor committed this version and we cannot, so the target is
    /// taken out of service.
    private func commitFailed(_ target: TargetID, _ chunk: ChunkID, version: UInt64, _ error: ChunkError, engine: ChunkEngine) async -> StorageReply {
        if (await engine.meta(chunk))?.committed?.version ?? 0 >= version { return .written(version: version) }
        recovery.commitFailed(target, reason: "commit of \(chunk) version \(version) failed: \(error)", nowNanoseconds: runtime.nowNanoseconds())
        log.error("\(target) is out of service: commit of \(chunk) version \(version) failed after its successor committed: \(error)")
        return .failed("\(error)")
    }

    /// The answer to a write that `target`'s engine refused with `error`: a full
    /// disk is said as such (logged once until a write fits again), anything else is
    /// a failure with its text.
    private func refusal(_ target: TargetID, _ error: ChunkError) -> StorageReply {
        guard case .disk(.noSpace(let path, let needed, let free)) = error else { return .failed("\(error)") }
        let file = engines[target]?.disk.locate(path) ?? path
        let why = "no space left on \(target) (\(node), \(file), \(free) bytes free): free space or add storage"
        if outOfSpace[target] == nil { log.error("\(why)") }
        outOfSpace[target] = (why, free, needed)
        return .noSpace(why)
    }

    /// A write to `target` fitted: if it had run out of space, it has space again.
    private func wrote(_ target: TargetID) {
        guard outOfSpace[target] != nil else { return }
        outOfSpace[target] = nil
        log.notice("\(target) has space for writes again")
    }

    // MARK: Batched writes

    /// A batched write: the same protocol as `write` for each chunk (versions, locks,
    /// staging, forwarding, commit order), done for the whole batch at once: one chain
    /// check, the chunks' locks taken in order, one staging submission, one forward
    /// of the batch, one commit group.
    private func writeBatch(_ b: WriteBatchArgs, _ bulk: [UInt8]) async -> StorageReply {
        let (engine, chain, mine): (ChunkEngine, Chain, PublicState)
        do { (engine, chain, mine) = try await admit(b.target, chain: b.chain, chainVersion: b.chainVersion, write: true) } catch { return error.reply }
        guard b.items.count <= StorageLimits.writeBatchItemsMax, bulk.count <= StorageLimits.writeBatchBytesMax else {
            return .failed("a write batch of \(b.items.count) chunks and \(bulk.count) bytes exceeds \(StorageLimits.writeBatchItemsMax) chunks or \(StorageLimits.writeBatchBytesMax) bytes; split it")
        }
        guard b.items.allSatisfy({ $0.length >= 0 && $0.length <= SizeClass.largestBytes }), b.items.reduce(0, { $0 + $1.length }) == bulk.count else {
            return .failed("a write batch's item lengths (each at most \(SizeClass.largestBytes) bytes) must add up to its \(bulk.count) bulk bytes")
        }
        guard Set(b.items.map(\.chunk)).count == b.items.count else { return .failed("a write batch names a chunk twice; send each chunk once") }
        let fromClient = b.items.allSatisfy { $0.version == 0 }
        guard fromClient || b.items.allSatisfy({ $0.version > 0 }) else { return .failed("a write batch mixes client items (version 0) and chain items") }
        var datas: [[UInt8]] = []
        datas.reserveCapacity(b.items.count)
        if b.items.count == 1 {
            datas.append(bulk)  // a whole-bulk item shares the received bytes: no copy
        } else {
            var offset = 0
            for item in b.items {
                datas.append(Array(bulk[offset..<offset + item.length]))
                offset += item.length
            }
        }
        let keys = b.items.map(\.chunk).sorted().map { ChunkLocks.Key(target: b.target.rawValue, chunk: $0) }
        let channel = DedupTable<StorageReply>.Channel(client: b.tag.client, channel: b.tag.channel)
        if fromClient {
            guard chain.writeTargets.first?.target == b.target, mine == .serving else {
                return .notServing("\(b.target) is not the head of \(b.chain)")
            }
            var doubt: [ChunkID: DedupTable<StorageReply>.InDoubt] = [:]
            switch dedup.begin(channel, sequence: b.tag.sequence) {
            case .repeated(let reply): return reply
            case .inProgress: return .notCommitted
            case .stale(let last): return .failed("request \(b.tag.sequence) is older than \(last) on its channel")
            case .inDoubt(let d): doubt = d
            case .new: break
            }
            for k in keys { await lock(k) }
            let (reply, unsettled) = await headWriteBatch(b, datas, bulk: bulk, engine: engine, inDoubt: doubt)
            for k in keys { unlock(k) }
            if reply.isFullyWritten {
                dedup.finish(channel, sequence: b.tag.sequence, result: reply)
            } else if !unsettled.isEmpty {
                dedup.doubt(channel, sequence: b.tag.sequence, versions: unsettled)
            } else {
                dedup.abandon(channel, sequence: b.tag.sequence)
            }
            return reply
        }
        for k in keys { await lock(k) }
        let reply = await replicaWriteBatch(b, datas, bulk: bulk, engine: engine)
        for k in keys { unlock(k) }
        if reply.isFullyWritten, b.tag.client != 0 {
            dedup.remember(channel, sequence: b.tag.sequence, result: reply)
        }
        return reply
    }

    /// The head's part of a batched client write; `inDoubt` and the versions returned
    /// as unsettled work as for one write (`headWrite`), chunk by chunk.
    private func headWriteBatch(_ b: WriteBatchArgs, _ datas: [[UInt8]], bulk: [UInt8], engine: ChunkEngine,
                                inDoubt: [ChunkID: DedupTable<StorageReply>.InDoubt]) async -> (StorageReply, [ChunkID: DedupTable<StorageReply>.InDoubt]) {
        var replies = [StorageReply](repeating: .failed("not written"), count: b.items.count)
        var writes: [ChunkEngine.BlockWrite] = []
        var toStage: [Int] = []
        var resend: [Int: ChunkVersion] = [:]
        // Items answered at their in-doubt version once the later version sent for them commits.
        var settled: [Int: UInt64] = [:]
        var datas = datas
        for (i, (item, data)) in zip(b.items, datas).enumerated() {
            let meta = await engine.meta(item.chunk)
            if let d = inDoubt[item.chunk] {
                switch ReplicaWriteRule.retry(meta, inDoubt: d.version, checksum: CRC32C.checksum(data)) {
                case .resend(let pending):
                    resend[i] = pending  // already staged here: send it on again
                    continue
                case .answered:
                    replies[i] = .written(version: d.version)  // took effect before a later write
                    continue
                case .settleLater(let pending):
                    // A later write was staged over it: send that on with its own
                    // bytes; the answer is written at `d` once it is committed.
                    guard let newest = try? await engine.readNewest(item.chunk), newest.version == pending else {
                        replies[i] = .notCommitted
                        continue
                    }
                    datas[i] = newest.data
                    resend[i] = pending
                    settled[i] = d.version
                    continue
                case .writeAnew: break
                }
            }
            toStage.append(i)
            writes.append(ChunkEngine.BlockWrite(id: item.chunk, data: data, version: ReplicaWriteRule.nextVersion(meta)))
        }
        var versions: [Int: ChunkVersion] = resend
        for (i, r) in zip(toStage, await engine.stageMany(writes, chainVersion: b.chainVersion, durable: b.durable)) {
            switch r {
            case .success(let v):
                versions[i] = v
                wrote(b.target)
            case .failure(let e):
                replies[i] = refusal(b.target, e)
            }
        }
        let forward = versions.keys.sorted()
        let items = forward.map { i in WriteBatchItem(chunk: b.items[i].chunk, length: datas[i].count, version: versions[i]!.version, checksum: versions[i]!.checksum) }
        let asSent = forward.count == datas.count && settled.isEmpty
        let acked = await forwardBatchAndCommit(b, items, asSent ? bulk : Self.concatenated(forward.map { datas[$0] }), engine: engine)
        var unsettled: [ChunkID: DedupTable<StorageReply>.InDoubt] = [:]
        for (k, i) in forward.enumerated() {
            replies[i] = acked[k]
            if case .written = acked[k] {
                if let d = settled[i] { replies[i] = .written(version: d) }
                continue
            }
            if settled[i] != nil, let d = inDoubt[items[k].chunk] {
                unsettled[items[k].chunk] = d  // its own version stays in doubt
                continue
            }
            unsettled[items[k].chunk] = DedupTable<StorageReply>.InDoubt(version: items[k].version, checksum: items[k].checksum)
        }
        // Earlier doubts this attempt did not reach (a stage that failed) still stand.
        for (i, item) in b.items.enumerated() where unsettled[item.chunk] == nil {
            if let d = inDoubt[item.chunk], versions[i] == nil, !(replies[i].isWritten) { unsettled[item.chunk] = d }
        }
        return (.batchWritten(replies), unsettled)
    }

    private func replicaWriteBatch(_ b: WriteBatchArgs, _ datas: [[UInt8]], bulk: [UInt8], engine: ChunkEngine) async -> StorageReply {
        var replies = [StorageReply?](repeating: nil, count: b.items.count)
        var stage: [Int] = []
        var replace: [Int] = []
        var forward: [Int] = []
        for (i, item) in b.items.enumerated() {
            switch ReplicaWriteRule.decide(await engine.meta(item.chunk), version: item.version, checksum: item.checksum, fullReplace: item.fullReplace) {
            case .alreadyCommitted: replies[i] = .written(version: item.version)
            case .superseded(let pending, let got): replies[i] = .failed("\(b.target) has version \(pending) of \(item.chunk) pending, newer than \(got): a late copy of an older attempt")
            case .replace: replace.append(i)
            case .stage: stage.append(i)
            case .alreadyStaged: forward.append(i)
            }
        }
        func writes(_ indices: [Int]) -> [ChunkEngine.BlockWrite] {
            indices.map { ChunkEngine.BlockWrite(id: b.items[$0].chunk, data: datas[$0], version: b.items[$0].version, checksum: b.items[$0].checksum) }
        }
        if !replace.isEmpty {
            // A replaced replica (SYNCING) is the tail of the writes: nothing to forward.
            for (i, r) in zip(replace, await engine.replaceMany(writes(replace), chainVersion: b.chainVersion, durable: b.durable)) {
                switch r {
                case .success:
                    replies[i] = .written(version: b.items[i].version)
                    wrote(b.target)
                case .failure(let e): replies[i] = refusal(b.target, e)
                }
            }
        }
        if !stage.isEmpty {
            for (i, r) in zip(stage, await engine.stageMany(writes(stage), chainVersion: b.chainVersion, durable: b.durable)) {
                switch r {
                case .success:
                    forward.append(i)
                    wrote(b.target)
                case .failure(let e): replies[i] = refusal(b.target, e)
                }
            }
        }
        forward.sort()
        // Forwarding everything received, in order (the usual case): pass the bulk on as it came.
        let forwardBulk = forward.count == datas.count ? bulk : Self.concatenated(forward.map { datas[$0] })
        let acked = await forwardBatchAndCommit(b, forward.map { b.items[$0] }, forwardBulk, engine: engine)
        for (k, i) in forward.enumerated() { replies[i] = acked[k] }
        return .batchWritten(replies.map { $0 ?? .failed("not written") })
    }

    /// Forwards the staged `items` as one batch to the current successor (refreshing
    /// routing after failures, as `forwardAndCommit`), then commits those the
    /// successor acknowledged, in one group. The tail commits at once. One answer per
    /// item.
    private func forwardBatchAndCommit(_ b: WriteBatchArgs, _ items: [WriteBatchItem], _ bulk: [UInt8], engine: ChunkEngine) async -> [StorageReply] {
        if items.isEmpty { return [] }
        var lastError = "no attempt"
        let retry = config.forwardRetry
        for attempt in retry.attempts {
            if attempt > 0 {
                await retry.wait(beforeAttempt: attempt, on: runtime)
                await mgmtd.refreshRouting()
            }
            guard let chain = await mgmtd.routing?.chain(b.chain), let mine = chain.state(of: b.target), mine.receivesWrites else {
                return Array(repeating: .failed("\(b.target) no longer receives writes in \(b.chain)"), count: items.count)
            }
            guard let next = chain.successor(of: b.target) else { break }
            guard let nextNode = await mgmtd.routing?.target(next.target)?.node else { break }
            var f = b
            f.target = next.target
            f.chainVersion = chain.version
            f.items = items.map { item in
                var x = item
                x.fullReplace = next.state == .syncing
                return x
            }
            do {
                let response = try await transport.call(nextNode, service: storageService, StorageRequest.writeBatch(f).message(bulk: bulk, trailer: serviceTrailer), timeoutNanoseconds: config.callTimeoutNanoseconds)
                let reply = try StorageReply(wireBytes: response.header)
                if case .batchWritten(let answers) = reply, answers.count == items.count {
                    return await commitBatch(b, items, successor: answers, engine: engine)
                }
                lastError = "\(next.target): \(reply)"
            } catch {
                lastError = "\(next.target): \(error)"
            }
        }
        if lastError == "no attempt" { return await commitBatch(b, items, successor: nil, engine: engine) }
        return Array(repeating: .failed("could not forward a batch of \(items.count) chunks: \(lastError)"), count: items.count)
    }

    /// `parts` end to end, copied with one memcpy each (a joined sequence of arrays is
    /// copied byte by byte).
    static func concatenated(_ parts: [[UInt8]]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(parts.reduce(0) { $0 + $1.count })
        for p in parts { out.append(contentsOf: p) }
        return out
    }

    /// Commits the items the successor wrote (all of them at the tail, `successor`
    /// nil); the others get the successor's answer.
    private func commitBatch(_ b: WriteBatchArgs, _ items: [WriteBatchItem], successor: [StorageReply]?, engine: ChunkEngine) async -> [StorageReply] {
        var replies = successor ?? Array(repeating: .written(version: 0), count: items.count)
        var commits: [Int] = []
        for i in items.indices {
            if case .written = replies[i] { commits.append(i) }
        }
        let results = await engine.commitMany(commits.map { (items[$0].chunk, items[$0].version) }, durable: b.durable)
        for (i, error) in zip(commits, results) {
            if let error {
                replies[i] = await commitFailed(b.target, items[i].chunk, version: items[i].version, error, engine: engine)
            } else {
                replies[i] = .written(version: items[i].version)
            }
        }
        return replies
    }

    private func read(_ t: TargetID, chain c: ChainID, chainVersion: UInt64, chunk: ChunkID) async -> (StorageReply, [UInt8]) {
        let engine: ChunkEngine
        do { (engine, _, _) = try await admit(t, chain: c, chainVersion: chainVersion, write: false) } catch { return (error.reply, []) }
        switch ReplicaWriteRule.read(await engine.meta(chunk)) {
        case .notFound: return (.notFound, [])
        case .notCommitted: return (.notCommitted, [])
        case .serve:
            do {
                let (data, v) = try await engine.read(chunk)
                return (.data(version: v.version, checksum: v.checksum), data)
            } catch ChunkError.corrupt {
                corruptionsDetected += 1
                log.warning("\(chunk) on \(t) failed its checksum; repairing from a peer")
                scheduleRepair(t, chunk)
                return (.corrupt, [])
            } catch {
                return (.failed("\(error)"), [])
            }
        }
    }

    /// Reads a batch of chunks with one chain check and one disk submission for the
    /// committed ones. The reply's bulk stays within `StorageLimits.writeBatchBytesMax`:
    /// chunks beyond it are answered `failed` (the client reads them again).
    private func readBatch(_ t: TargetID, chain c: ChainID, chainVersion: UInt64, chunks: [ChunkID]) async -> (StorageReply, [UInt8]) {
        let engine: ChunkEngine
        do { (engine, _, _) = try await admit(t, chain: c, chainVersion: chainVersion, write: false) } catch { return (error.reply, []) }
        var items = [BatchReadItem?](repeating: nil, count: chunks.count)
        var serve: [Int] = []
        var bytes = 0
        for (i, chunk) in chunks.enumerated() {
            switch ReplicaWriteRule.read(await engine.meta(chunk)) {
            case .notFound: items[i] = BatchReadItem(chunk: chunk, status: .notFound)
            case .notCommitted: items[i] = BatchReadItem(chunk: chunk, status: .notCommitted)
            case .serve(let committed):
                if serve.isEmpty || bytes + committed.length <= StorageLimits.writeBatchBytesMax {
                    serve.append(i)
                    bytes += committed.length
                } else {
                    items[i] = BatchReadItem(chunk: chunk, status: .failed)
                }
            }
        }
        var bulk: [UInt8] = []
        let read = await engine.readMany(serve.map { chunks[$0] })
        if read.count > 1 { bulk.reserveCapacity(bytes) }
        for (i, r) in zip(serve, read) {
            switch r {
            case .success(let (data, v)):
                items[i] = BatchReadItem(chunk: chunks[i], status: .data, version: v.version, checksum: v.checksum, length: data.count)
                if read.count == 1 { bulk = data } else { bulk += data }  // one chunk: its bytes as they are
            case .failure(.corrupt):
                corruptionsDetected += 1
                log.warning("\(chunks[i]) on \(t) failed its checksum; repairing from a peer")
                scheduleRepair(t, chunks[i])
                items[i] = BatchReadItem(chunk: chunks[i], status: .corrupt)
            case .failure(.notFound):
                // Removed while the batch was read.
                items[i] = BatchReadItem(chunk: chunks[i], status: .notFound)
            case .failure:
                items[i] = BatchReadItem(chunk: chunks[i], status: .failed)
            }
        }
        return (.batch(items.map { $0! }), bulk)
    }

    // MARK: Repair

    /// Replaces a corrupt local chunk with a healthy replica's committed copy.
    private func scheduleRepair(_ t: TargetID, _ chunk: ChunkID) {
        let key = ChunkLocks.Key(target: t.rawValue, chunk: chunk)
        guard repairing.insert(key).inserted else { return }
        runtime.spawn("storage.repair") { [self] in await self.repair(t, chunk, key) }
    }

    private func repair(_ t: TargetID, _ chunk: ChunkID, _ key: ChunkLocks.Key) async {
        defer { repairing.remove(key) }
        for _ in 0..<20 {
            guard let engine = engines[t], let chain = await chain(of: t), let r = await mgmtd.routing else { return }
            for peer in chain.targets where peer.state == .serving && peer.target != t {
                guard let peerNode = r.target(peer.target)?.node else { continue }
                let request = StorageRequest.read(target: peer.target, chain: chain.id, chainVersion: chain.version, chunk: chunk).message(trailer: serviceTrailer)
                guard let response = try? await transport.call(peerNode, service: storageService, request, timeoutNanoseconds: config.callTimeoutNanoseconds),
                      let reply = try? StorageReply(wireBytes: response.header),
                      case .data(let version, let checksum) = reply, CRC32C.checksum(response.bulk) == checksum
                else { continue }
                await lock(key)
                defer { unlock(key) }
                if let mine = await engine.meta(chunk)?.committed, mine.version > version { return }
                if (try? await engine.replace(chunk, data: response.bulk, version: version, chainVersion: chain.version)) != nil {
                    repairs += 1
                    log.notice("repaired \(chunk) on \(t) from \(peer.target)")
                    return
                }
            }
            try? await runtime.sleep(nanoseconds: 200_000_000)
        }
    }

    // MARK: Scrubbing

    private var scrubCursor: [TargetID: ChunkID] = [:]

    private func scrubLoop() async {
        while true {
            try? await runtime.sleep(nanoseconds: config.scrubIntervalNanoseconds)
            guard !recovery.recovering else { continue }
            for t in targetIDs { await scrub(t) }
        }
    }

    /// Verifies the next batch of `t`'s committed chunks, round robin.
    private func scrub(_ t: TargetID) async {
        guard let engine = engines[t] else { return }
        let metas = await engine.allMeta().filter { $0.committed != nil }
        guard !metas.isEmpty else { return }
        let after = scrubCursor[t]
        let start = after.flatMap { a in metas.firstIndex { $0.id > a } } ?? 0
        for k in 0..<min(config.scrubChunksPerInterval, metas.count) {
            let id = metas[(start + k) % metas.count].id
            scrubCursor[t] = id
            do {
                _ = try await engine.read(id, fromDisk: true)
            } catch ChunkError.corrupt {
                corruptionsDetected += 1
                log.warning("scrub: \(id) on \(t) failed its checksum; repairing from a peer")
                scheduleRepair(t, id)
            } catch {}
        }
    }

    // MARK: Heartbeats and resync

    private func heartbeatLoop() async {
        while true {
            await tick()
            try? await runtime.sleep(nanoseconds: config.heartbeatIntervalNanoseconds)
        }
    }

    private func tick() async {
        await mgmtd.refreshRouting()
        if let stats = hotPages?.stats {
            memoryTierMetrics.publish(stats, since: memoryTierPublished)
            memoryTierPublished = stats
        }
        // A block written behind that never reached the disk: the replica no longer
        // has every version it acknowledged; out of service, then a resync.
        for (t, engine) in engines {
            let failures = await engine.writeBehindFailures
            if failures > writeBehindFailuresSeen[t, default: 0] {
                writeBehindFailuresSeen[t] = failures
                recovery.commitFailed(t, reason: "a block write behind failed", nowNanoseconds: runtime.nowNanoseconds())
                log.error("\(t) is out of service: a block write behind failed (see the chunk log); it rejoins through a resync")
            }
        }
        let routing = await mgmtd.routing
        for t in recovery.probeCandidates(routing?.publicStates(of: targetIDs)) {
            // Out of service and out of its chain: once its disk works again, rejoin
            // (as after a restart, through a resync from a serving replica). A commit
            // that fails while the probe runs records a new failure; that one waits
            // for the next probe rather than being cleared by this one.
            guard let probe = recovery.startProbe(t, nowNanoseconds: runtime.nowNanoseconds(), intervalNanoseconds: config.failedTargetProbeNanoseconds) else { continue }
            if recovery.finishProbe(probe, diskWorks: await diskWorks(t)) {
                log.notice("\(t)'s disk works again (\(probe.reason)); it rejoins through a resync")
            }
        }
        switch recovery.observe(routing?.publicStates(of: targetIDs)) {
        case .waitForOffline: return
        case .startedOver:
            // Declared failed while running (cut off): start over, like a restart.
            log.notice("\(node) found a target offline while running; it recovers as after a restart")
            return
        case .report(let recovered):
            if recovered { lastContact = runtime.nowNanoseconds() }
        }
        // Targets share the node's disk: each reports its own use, and as capacity
        // its use plus the device's free space.
        let space = try? await disk.space()
        let free = space?.freeBytes ?? 0
        if let space {
            nodeMetrics.diskTotal.record(space.totalBytes)
            nodeMetrics.diskFree.record(space.freeBytes)
        }
        let out = targetIDs.filter { recovery.outOfService($0) != nil }.count
        nodeMetrics.targetsOut.record(out)
        nodeMetrics.targetsInService.record(targetIDs.count - out)
        nodeMetrics.resyncsRunning.record(syncingSuccessors.count)
        var reports: [TargetReport] = []
        for t in targetIDs {
            let used = await engines[t]?.usedBytes ?? 0
            // Enough space came back for the write that was refused: clear the report
            // (a write that still does not fit says so again).
            if let full = outOfSpace[t], free >= full.freeBytes &+ max(full.neededBytes, 1) { wrote(t) }
            reports.append(TargetReport(target: t, localState: recovery.local[t] ?? .offline, usedBytes: used, capacityBytes: used + free, spaceError: outOfSpace[t]?.why ?? ""))
        }
        if (try? await mgmtd.heartbeat(targets: reports)) != nil { lastContact = runtime.nowNanoseconds() }
        if let routing { startResyncs(routing) }
    }

    /// Writes, syncs, reads back and removes a small file: whether the disk serves I/O.
    private func diskWorks(_ t: TargetID) async -> Bool {
        let path = "probe-\(t.rawValue)"
        let pattern = (0..<4_096).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(t.rawValue)) }
        guard let file = try? await disk.open(path, create: true) else { return false }
        var works = false
        do throws(DiskError) {
            try await disk.write(file, offset: 0, pattern)
            try await disk.fsync(file)
            works = try await disk.read(file, offset: 0, length: pattern.count) == pattern
        } catch {
            works = false
        }
        await disk.close(file)
        try? await disk.remove(path)
        return works
    }

    /// For each of our targets that is the last SERVING one before a SYNCING target,
    /// brings that successor up to date.
    private func startResyncs(_ r: RoutingInfo) {
        for t in targetIDs {
            guard let c = r.target(t)?.chain, let chain = r.chain(c), chain.state(of: t) == .serving,
                  let next = chain.successor(of: t), next.state == .syncing,
                  let nextNode = r.target(next.target)?.node, !syncingSuccessors.contains(next.target)
            else { continue }
            syncingSuccessors.insert(next.target)
            nodeMetrics.resyncsRunning.record(syncingSuccessors.count)
            runtime.spawn("storage.resync") { [self] in
                let finished = await self.resync(from: t, to: next.target, on: nextNode, chain: chain)
                await self.resyncEnded(next.target, finished: finished)
            }
        }
    }

    private func resyncEnded(_ t: TargetID, finished: Bool) {
        syncingSuccessors.remove(t)
        nodeMetrics.resyncsRunning.record(syncingSuccessors.count)
        (finished ? nodeMetrics.resyncsCompleted : nodeMetrics.resyncFailures).increment()
    }

    /// Brings `successor` up to date; whether the pass ended with sync-done accepted
    /// (a pass that stops is started over by a later heartbeat).
    private func resync(from t: TargetID, to successor: TargetID, on successorNode: NodeID, chain: Chain) async -> Bool {
        guard let engine = engines[t] else { return false }
        func call(_ request: StorageRequest, bulk: [UInt8] = []) async -> (StorageReply, [UInt8])? {
            guard let response = try? await transport.call(successorNode, service: storageService, request.message(bulk: bulk, trailer: serviceTrailer), timeoutNanoseconds: config.callTimeoutNanoseconds),
                  let reply = try? StorageReply(wireBytes: response.header) else { return nil }
            return (reply, response.bulk)
        }
        // The successor's metadata, a page at a time (a target may hold more chunks
        // than one message carries); the predecessor holds its own in memory anyway.
        var remote: [ChunkMeta] = []
        var after: ChunkID? = nil
        var pages = 0
        while true {
            guard let (reply, _) = await call(.dumpMetaPage(target: successor, chainVersion: chain.version, after: after,
                                                            limit: UInt32(config.resyncDumpPageEntries))) else {
                // A successor from before paged dumps refuses the request it cannot
                // parse: ask it for the whole dump in one message, as it understands.
                guard pages == 0, let (dump, _) = await call(.dumpMeta(target: successor, chainVersion: chain.version)),
                      case .meta(let all) = dump else { return false }
                remote = all
                pages = 1
                break
            }
            guard case .metaPage(let metas, let more) = reply else {
                log.warning("resync of \(successor) from \(t) stopped: its metadata dump answered \(reply); it starts over")
                return false
            }
            pages += 1
            remote += metas
            guard more, let last = metas.last else { break }
            // Ids strictly increase page to page; a successor that does not move on
            // would loop forever.
            if let after, last.id <= after { return false }
            after = last.id
        }
        let plan = ResyncPlanner.plan(local: await engine.allMeta(), remote: remote)
        log.info("resyncing \(successor) from \(t): \(plan.count) action(s) after \(remote.count) chunk(s) in \(pages) page(s)")
        for action in plan {
            switch action {
            case .send(let chunk):
                // A chunk we cannot read now (a disk error, a bad checksum awaiting
                // repair) ends this pass without sync-done: skipping it would let the
                // successor serve an old version. The next heartbeat starts over.
                let data: [UInt8], v: ChunkVersion
                do {
                    (data, v) = try await engine.read(chunk)
                } catch {
                    log.warning("resync of \(successor) from \(t) stopped: cannot read \(chunk): \(error); it starts over")
                    return false
                }
                let args = WriteArgs(target: successor, chain: chain.id, chainVersion: chain.version, chunk: chunk, version: v.version, checksum: v.checksum, fullReplace: true, tag: ClientTag(client: 0, channel: 0, sequence: 0))
                guard let (reply, _) = await call(.write(args), bulk: data), case .written = reply else { return false }
                nodeMetrics.resyncChunks.increment()
                nodeMetrics.resyncBytes.increment(by: data.count)
            case .remove(let chunk):
                guard let (reply, _) = await call(.removeChunk(target: successor, chainVersion: chain.version, chunk: chunk)), case .done = reply else { return false }
            }
        }
        guard let (reply, _) = await call(.syncDone(target: successor, chainVersion: chain.version)), case .done = reply else { return false }
        return true
    }
}

extension StorageReply {
    var isWritten: Bool {
        if case .written = self { return true } else { return false }
    }

    /// A batch answer in which every item was written.
    var isFullyWritten: Bool {
        guard case .batchWritten(let replies) = self else { return false }
        return replies.allSatisfy { if case .written = $0 { return true } else { return false } }
    }
}
