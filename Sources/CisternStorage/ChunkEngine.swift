import CisternCore
import CisternWire
import HeapModule
import CisternRouting

/// Stores the chunks of one target on one `Disk`: chunk data in blocks of a few large
/// preallocated files per size class (`SlabAllocator`), metadata in an append-only
/// log. Updates are copy-on-write: new data goes to a new block, which is durable
/// before the metadata record naming it is; the old block is freed only once the
/// record that stops naming it is durable. Concurrent updates share their fsyncs:
/// block writes and metadata records are each group-committed.
///
/// Every update has a durability (`durable` or `cache`):
/// - `durable` returns once the block and the record are fsynced, so after any crash
///   the target recovers at least to the acknowledged state.
/// - `cache` returns once the block is written (page cache) and the record queued:
///   the new state serves reads at once and reaches the disk with the next group
///   commit (fsyncing the blocks it names first). A crash may lose it; the target
///   then recovers to an older consistent state, never to a record naming bytes
///   that were not written (replicas and resync restore what one node lost).
///
/// Every read verifies the checksum; a corrupt replica is reported, never returned.
///
/// With a node's `HotPages` (its memory tier), written and read chunks are also held
/// in memory and reads of them skip the disk, and `cache` updates are written behind:
/// the new state (and the bytes, pinned in memory) serve reads at once and the call
/// returns without waiting for the block write, which goes on in the background. The
/// metadata group commit and checkpoints wait for every block write started before
/// their records, so no record on the disk ever names a block that was not written.
/// A write behind that fails is retried; if it keeps failing the target reports it
/// (`writeBehindFailures`) and is taken out of service and resynced.
///
/// Callers serialize operations on one chunk (the storage service holds a per-chunk
/// lock); different chunks proceed concurrently.
public actor ChunkEngine {
    public nonisolated let unownedExecutor: UnownedSerialExecutor
    let disk: any Disk
    let runtime: any Runtime
    private var chunks: [ChunkID: ChunkMeta] = [:]
    private var allocator: SlabAllocator
    private var files: [String: DiskFile] = [:]
    private var log: DiskFile
    private var logEnd: UInt64
    /// Checksum failures seen since start (reported in heartbeats and metrics).
    public private(set) var corruptionsDetected = 0
    /// The node's memory tier (nil: every read goes to the disk, every write through).
    let hot: HotPages?
    /// This engine's owner id in `hot`.
    let hotOwner: UInt64
    /// Block writes behind that failed every attempt since start (the service takes
    /// the target out of service when this grows).
    public private(set) var writeBehindFailures = 0
    /// Write-behind groups in flight, by ticket; the next ticket; and who waits for all
    /// groups before a ticket to finish.
    private var writesBehind: Set<UInt64> = []
    private var writeBehindNext: UInt64 = 0
    private var writeBehindWaiters: [(before: UInt64, done: UnsafeContinuation<Void, Never>)] = []
    /// Attempts of one write behind before it counts as failed.
    static let writeBehindAttemptsMax = 5
    static let writeBehindRetryNanoseconds: UInt64 = 50_000_000

    /// Which slot of `ChunkMetaLog.paths` the log is appended to, and the newest
    /// checkpoint generation on the disk.
    private var logSlot: Int
    private var generation: UInt64
    private let compactionSlackBytes: UInt64
    /// The log is compacted once it reaches this size.
    private var compactAtBytes: UInt64
    /// Compactions done since open (for tests and metrics).
    public private(set) var compactions = 0

    public static let defaultCompactionSlackBytes: UInt64 = 16 << 20
    /// A metadata record's size, to estimate the live metadata before a checkpoint.
    static let estimatedRecordBytes: UInt64 = 96

    init(disk: any Disk, runtime: any Runtime, chunks: [ChunkID: ChunkMeta], allocator: SlabAllocator, log: DiskFile, logEnd: UInt64,
         logSlot: Int, generation: UInt64, compactionSlackBytes: UInt64, hot: HotPages?, hotOwner: UInt64) {
        self.hot = hot
        self.hotOwner = hotOwner
        self.disk = disk
        self.runtime = runtime
        self.chunks = chunks
        self.allocator = allocator
        self.log = log
        self.logEnd = logEnd
        self.logSlot = logSlot
        self.generation = generation
        self.compactionSlackBytes = max(compactionSlackBytes, 1)
        self.compactAtBytes = Self.compactionThreshold(liveBytes: UInt64(chunks.count) * Self.estimatedRecordBytes, slack: max(compactionSlackBytes, 1))
        self.unownedExecutor = runtime.makeActorExecutor()
    }

    /// The log size at which to compact a log whose live metadata takes `liveBytes`:
    /// the log stays within twice the live size plus the slack.
    static func compactionThreshold(liveBytes: UInt64, slack: UInt64) -> UInt64 {
        liveBytes + max(slack, liveBytes)
    }

    /// Opens a target: replays the metadata log (the slot with the newest complete
    /// checkpoint, read in bounded pieces, cutting off a torn tail) and rebuilds the
    /// allocator from the block files and the blocks recovered metadata references.
    /// `compactionSlackBytes`: how far the log may grow beyond its live metadata
    /// before it is compacted (at least this much, and at least the live size).
    public static func open(
        disk: any Disk, runtime: any Runtime, growBlocks: UInt32 = 16, blocksPerFile: UInt32 = 256,
        compactionSlackBytes: UInt64 = ChunkEngine.defaultCompactionSlackBytes, hotPages: HotPages? = nil, hotOwner: UInt64 = 0
    ) async throws(ChunkError) -> ChunkEngine {
        do throws(DiskError) {
            var replays: [ChunkMetaLog.Replay?] = []
            var handles: [DiskFile?] = []
            for (slot, path) in ChunkMetaLog.paths.enumerated() {
                let file: DiskFile
                do throws(DiskError) {
                    file = try await disk.open(path, create: slot == 0)
                } catch {
                    guard case .notFound = error else { throw error }
                    replays.append(nil)
                    handles.append(nil)
                    continue
                }
                let size = try await disk.size(file)
                var replay = ChunkMetaLog.Replay()
                var offset: UInt64 = 0
                while offset < size, !replay.stopped {
                    let n = Int(min(UInt64(ChunkMetaLog.replayPieceBytes), size - offset))
                    replay.feed(try await disk.read(file, offset: offset, length: n))
                    offset += UInt64(n)
                }
                replays.append(replay)
                handles.append(file)
            }
            // Slot 0 always exists (created above) and a log without a checkpoint is
            // complete, so a choice is only missing if slot 0 holds a torn checkpoint
            // and slot 1 nothing usable, which no sequence of compactions leaves.
            guard let slot = ChunkMetaLog.choose(replays), let replay = replays[slot], let log = handles[slot] else {
                throw DiskError.ioError(path: ChunkMetaLog.paths[0], detail: "no complete metadata log in either slot (\(ChunkMetaLog.paths.joined(separator: ", "))): the target's metadata is damaged; remove the target and let it resync")
            }
            for (i, h) in handles.enumerated() where i != slot {
                if let h { await disk.close(h) }
            }
            let size = try await disk.size(log)
            if UInt64(replay.validBytes) < size {
                try await disk.truncate(log, length: UInt64(replay.validBytes))
                try await disk.fsync(log)
            }
            let chunks = replay.chunks
            var inUse: Set<BlockAddress> = []
            var highest: [SizeClass: [UInt32: UInt32]] = [:]
            for meta in chunks.values {
                for b in meta.blocks {
                    inUse.insert(b)
                    highest[b.sizeClass, default: [:]][b.file] = max(highest[b.sizeClass]?[b.file] ?? 0, b.block + 1)
                }
            }
            var provisioned: [SizeClass: [UInt32]] = [:]
            for name in try await disk.list() where name.hasPrefix("chunks/") {
                guard let (c, file) = parse(name) else { continue }
                let f = try await disk.open(name, create: false)
                let bytes = try await disk.size(f)
                await disk.close(f)
                let blocks = UInt32((bytes + UInt64(c.blockBytes) - 1) / UInt64(c.blockBytes))
                var list = provisioned[c] ?? []
                while list.count <= Int(file) { list.append(0) }
                list[Int(file)] = max(blocks, highest[c]?[file] ?? 0)
                provisioned[c] = list
            }
            let allocator = SlabAllocator.recover(files: provisioned, inUse: inUse, growBlocks: growBlocks, blocksPerFile: blocksPerFile)
            let generation = replays.compactMap { $0?.generation }.max() ?? 0
            return ChunkEngine(
                disk: disk, runtime: runtime, chunks: chunks, allocator: allocator, log: log, logEnd: UInt64(replay.validBytes),
                logSlot: slot, generation: generation, compactionSlackBytes: compactionSlackBytes, hot: hotPages, hotOwner: hotOwner)
        } catch {
            throw .disk(error)
        }
    }

    /// The chunk metadata a target's metadata log describes (the valid prefix, as
    /// recovery replays it). For checkers that inspect a target's files directly.
    public static func recoveredMetadata(from logBytes: [UInt8]) -> [ChunkID: ChunkMeta] {
        ChunkMetaLog.replay(logBytes).chunks
    }

    /// The metadata log slot files in a target's folder (see `ChunkMetaLog`).
    public static var metadataLogPaths: [String] { ChunkMetaLog.paths }

    /// The chunk metadata recovery finds in a target whose log slots hold these bytes
    /// (nil: the slot's file does not exist), choosing the slot as `open` does.
    public static func recoveredMetadata(slots: [[UInt8]?]) -> [ChunkID: ChunkMeta] {
        let replays: [ChunkMetaLog.Replay?] = slots.map { bytes in
            bytes.map { b in
                var r = ChunkMetaLog.Replay()
                r.feed(b)
                return r
            }
        }
        guard let slot = ChunkMetaLog.choose(replays) else { return [:] }
        return replays[slot]?.chunks ?? [:]
    }

    static func parse(_ name: String) -> (SizeClass, UInt32)? {
        // chunks/<KiB>k-<file>.data
        guard name.hasSuffix(".data") else { return nil }
        let base = name.dropFirst("chunks/".count).dropLast(".data".count)
        let parts = base.split(separator: "-")
        guard parts.count == 2, parts[0].hasSuffix("k"), let kib = Int(parts[0].dropLast()), let file = UInt32(parts[1]) else { return nil }
        guard let c = SizeClass.fitting(kib << 10), c.blockBytes == kib << 10 else { return nil }
        return (c, file)
    }

    // MARK: Queries

    public func meta(_ id: ChunkID) -> ChunkMeta? { chunks[id] }

    /// Every chunk's metadata, sorted by id (for resync and heartbeats).
    public func allMeta() -> [ChunkMeta] { chunks.keys.sorted().map { chunks[$0]! } }

    /// The metadata of at most `limit` chunks whose ids follow `after` (from the first
    /// when nil), sorted by id, and whether more follow: one page of a resync's dump.
    /// Selecting a page is one pass over the chunks (O(n log limit)), no full sort.
    public func metaPage(after: ChunkID?, limit: Int) -> (metas: [ChunkMeta], more: Bool) {
        let limit = max(1, limit)
        var smallest = Heap<ChunkID>()
        var more = false
        for id in chunks.keys {
            if let after, id <= after { continue }
            if smallest.count < limit {
                smallest.insert(id)
            } else if let max = smallest.max, id < max {
                _ = smallest.replaceMax(with: id)
                more = true
            } else {
                more = true
            }
        }
        var ids: [ChunkID] = []
        ids.reserveCapacity(smallest.count)
        while let id = smallest.popMin() { ids.append(id) }
        return (ids.map { chunks[$0]! }, more)
    }

    public var usedBytes: UInt64 { allocator.usedBytes }

    /// The committed data of `id`, verified against its checksum. `fromDisk`: read the
    /// block even when the memory tier holds the bytes (the scrubber checks the disk).
    public func read(_ id: ChunkID, fromDisk: Bool = false) async throws(ChunkError) -> (data: [UInt8], version: ChunkVersion) {
        guard let committed = chunks[id]?.committed else { throw .notFound(id) }
        if fromDisk, !writesBehind.isEmpty {
            // A block written behind may not be on the disk yet: check what is.
            await waitForWritesBehind(before: writeBehindNext)
        }
        let data = try await readBlock(committed, id, fromDisk: fromDisk)
        return (data, committed)
    }

    /// The newest data of `id`: its pending version when one is staged, else its
    /// committed one, verified against its checksum. A head merges a partial write
    /// into these bytes: a pending version it could not settle may be committed
    /// downstream and seen by readers, so the next write must build on it.
    public func readNewest(_ id: ChunkID) async throws(ChunkError) -> (data: [UInt8], version: ChunkVersion) {
        guard let newest = chunks[id]?.newest else { throw .notFound(id) }
        return (try await readBlock(newest, id), newest)
    }

    /// The committed data of several chunks with one disk submission, each verified
    /// against its checksum; one result per id, in order.
    public func readMany(_ ids: [ChunkID]) async -> [Result<(data: [UInt8], version: ChunkVersion), ChunkError>] {
        var results = [Result<(data: [UInt8], version: ChunkVersion), ChunkError>?](repeating: nil, count: ids.count)
        var reads: [(index: Int, version: ChunkVersion)] = []
        var ops: [DiskOp] = []
        for (i, id) in ids.enumerated() {
            guard let committed = chunks[id]?.committed else {
                results[i] = .failure(.notFound(id))
                continue
            }
            if let data = held(id, committed) {
                results[i] = .success((data, committed))
                continue
            }
            do throws(ChunkError) {
                ops.append(.read(try await handle(committed.block.path), offset: committed.block.offset, length: committed.length))
                reads.append((i, committed))
            } catch {
                results[i] = .failure(error)
            }
        }
        let done = ops.isEmpty ? [] : await disk.submit(ops)
        for (k, r) in reads.enumerated() {
            switch done[k] {
            case .failure(let e):
                results[r.index] = .failure(.disk(e))
            case .success(let completion):
                var data: [UInt8] = []
                if case .read(let bytes) = completion { data = bytes }
                if let e = verify(data, r.version, ids[r.index]) {
                    results[r.index] = .failure(e)
                } else {
                    hold(ids[r.index], r.version, data)
                    results[r.index] = .success((data, r.version))
                }
            }
        }
        return results.map { $0 ?? .failure(.disk(.ioError(path: "", detail: "internal error: read not run"))) }
    }

    private func readBlock(_ v: ChunkVersion, _ id: ChunkID, fromDisk: Bool = false) async throws(ChunkError) -> [UInt8] {
        if !fromDisk, let data = held(id, v) { return data }
        let file = try await handle(v.block.path)
        let data: [UInt8]
        do {
            data = try await disk.read(file, offset: v.block.offset, length: v.length)
        } catch {
            throw .disk(error)
        }
        if let e = verify(data, v, id) { throw e }
        hold(id, v, data)
        return data
    }

    // MARK: Memory tier

    private func hotKey(_ id: ChunkID, _ version: UInt64) -> HotPageSet.Key {
        HotPageSet.Key(owner: hotOwner, chunk: id, version: version)
    }

    /// `v`'s bytes from the memory tier, if it holds exactly them.
    private func held(_ id: ChunkID, _ v: ChunkVersion) -> [UInt8]? {
        hot?.lookup(hotKey(id, v.version), length: v.length, checksum: v.checksum)
    }

    /// Keeps verified bytes of `v` (still named by the metadata) in the memory tier.
    private func hold(_ id: ChunkID, _ v: ChunkVersion, _ data: [UInt8]) {
        guard let hot, chunks[id]?.committed == v || chunks[id]?.pending == v else { return }
        hot.insert(hotKey(id, v.version), checksum: v.checksum, data: data)
    }

    /// Drops memory-tier entries of versions `before` names and `after` does not.
    private func discardDropped(_ id: ChunkID, before: ChunkMeta?, after: ChunkMeta?) {
        guard let hot, let before else { return }
        let kept = [after?.committed?.version, after?.pending?.version]
        for v in [before.committed, before.pending].compactMap({ $0 }) where !kept.contains(v.version) {
            hot.discard(hotKey(id, v.version))
        }
    }

    /// Waits until every write-behind group started before ticket `before` finished.
    private func waitForWritesBehind(before: UInt64) async {
        while let oldest = writesBehind.min(), oldest < before {
            await withUnsafeContinuation { writeBehindWaiters.append((before, $0)) }
        }
    }

    /// Writes a group of blocks behind (their bytes pinned in the memory tier),
    /// retrying failures; then unpins them and wakes the commits waiting for them.
    private func writeBehind(_ ticket: UInt64, _ writes: [(DiskFile, UInt64, [UInt8])], _ pins: [(HotPageSet.Key, UInt64)]) async {
        var left = Array(writes.indices)
        for attempt in 0..<Self.writeBehindAttemptsMax where !left.isEmpty {
            if attempt > 0 { try? await runtime.sleep(nanoseconds: Self.writeBehindRetryNanoseconds) }
            // Fault point: the first attempt waits (a slow disk) so commits and
            // checkpoints must wait for writes behind still in flight.
            if attempt == 0, runtime.faultPoint("chunk.write-behind.slow") { try? await runtime.sleep(nanoseconds: 50_000_000) }
            let failures = await writeCacheBlocks(left.map { writes[$0] })
            left = zip(left, failures).compactMap { $0.1 == nil ? nil : $0.0 }
        }
        if !left.isEmpty {
            writeBehindFailures += 1
            runtime.logger("chunk").error("\(left.count) block write(s) behind failed \(Self.writeBehindAttemptsMax) times; the target must be resynced")
        }
        for (key, t) in pins { hot?.unpin(key, ticket: t) }
        writesBehind.remove(ticket)
        let oldest = writesBehind.min() ?? .max
        var still: [(before: UInt64, done: UnsafeContinuation<Void, Never>)] = []
        for w in writeBehindWaiters {
            if oldest >= w.before { w.done.resume() } else { still.append(w) }
        }
        writeBehindWaiters = still
    }

    /// Why `data`, read from the block of version `v` of `id` (committed or pending),
    /// must not be returned, or nil when it matches its checksum. A mismatch after the
    /// chunk moved on (the block freed and reused while it was read) is not
    /// corruption: the caller reads again.
    private func verify(_ data: [UInt8], _ v: ChunkVersion, _ id: ChunkID) -> ChunkError? {
        let actual = data.count == v.length ? CRC32C.checksum(data) : ~v.checksum
        if actual == v.checksum { return nil }
        if chunks[id]?.committed != v, chunks[id]?.pending != v { return .versionMismatch(id, expected: v.version, pending: chunks[id]?.committed?.version) }
        corruptionsDetected += 1
        return .corrupt(id, expected: v.checksum, actual: actual)
    }

    // MARK: Updates

    /// One chunk of a batched stage or replace.
    public struct BlockWrite: Sendable {
        public var id: ChunkID
        public var data: [UInt8]
        public var version: UInt64
        /// `data`'s CRC32C when the caller already has it (a replica is sent the
        /// checksum its predecessor computed, inside a checksummed frame): not computed
        /// again. Were it wrong, the chunk would fail its checksum on every read and be
        /// repaired from a peer, never returned.
        public var checksum: UInt32?
        public init(id: ChunkID, data: [UInt8], version: UInt64, checksum: UInt32? = nil) {
            self.id = id
            self.data = data
            self.version = version
            self.checksum = checksum
        }
    }

    /// Writes `data` as the pending version `version` of `id` (replacing an earlier
    /// pending version). Durable on return when `durable`.
    @discardableResult
    public func stage(_ id: ChunkID, data: [UInt8], version: UInt64, chainVersion: UInt64, durable: Bool = true, checksum: UInt32? = nil) async throws(ChunkError) -> ChunkVersion {
        let results = await stageMany([BlockWrite(id: id, data: data, version: version, checksum: checksum)], chainVersion: chainVersion, durable: durable)
        return try results[0].get()
    }

    /// Stages several chunks (distinct ids) as `stage` does each, sharing one block
    /// submission and one metadata group commit. One result per write, in order.
    public func stageMany(_ writes: [BlockWrite], chainVersion: UInt64, durable: Bool) async -> [Result<ChunkVersion, ChunkError>] {
        await update(writes, chainVersion: chainVersion, durable: durable) { id, meta, v in
            var m = meta ?? ChunkMeta(id: id)
            let replaced = m.pending?.block
            m.pending = v
            return (m, replaced.map { [$0] } ?? [])
        }
    }

    /// Makes the pending version `version` the committed one and frees the old block.
    public func commit(_ id: ChunkID, version: UInt64, durable: Bool = true) async throws(ChunkError) {
        if let e = await commitMany([(id, version)], durable: durable)[0] { throw e }
    }

    /// Commits several chunks as `commit` does each, with one metadata group commit.
    /// One result per chunk (nil: committed), in order.
    public func commitMany(_ items: [(id: ChunkID, version: UInt64)], durable: Bool) async -> [ChunkError?] {
        var results = [ChunkError?](repeating: nil, count: items.count)
        var changes: [MetaChange] = []
        var owners: [Int] = []
        for (i, item) in items.enumerated() {
            guard var meta = chunks[item.id] else {
                results[i] = .notFound(item.id)
                continue
            }
            if meta.committed?.version == item.version && meta.pending == nil { continue }
            guard let pending = meta.pending, pending.version == item.version else {
                results[i] = .versionMismatch(item.id, expected: item.version, pending: meta.pending?.version)
                continue
            }
            let old = meta.committed?.block
            meta.committed = pending
            meta.pending = nil
            changes.append(MetaChange(id: item.id, after: meta, frees: old.map { [$0] } ?? []))
            owners.append(i)
        }
        if changes.isEmpty { return results }
        if let failure = await persist(changes, durable: durable) {
            for i in owners { results[i] = .disk(failure) }
        }
        return results
    }

    /// Replaces `id` with `data` as its committed version and drops any pending one
    /// (a full-chunk replace, as resync sends).
    public func replace(_ id: ChunkID, data: [UInt8], version: UInt64, chainVersion: UInt64, durable: Bool = true, checksum: UInt32? = nil) async throws(ChunkError) {
        _ = try await replaceMany([BlockWrite(id: id, data: data, version: version, checksum: checksum)], chainVersion: chainVersion, durable: durable)[0].get()
    }

    /// Replaces several chunks as `replace` does each, sharing one block submission
    /// and one metadata group commit.
    public func replaceMany(_ writes: [BlockWrite], chainVersion: UInt64, durable: Bool) async -> [Result<ChunkVersion, ChunkError>] {
        await update(writes, chainVersion: chainVersion, durable: durable) { id, meta, v in
            (ChunkMeta(id: id, committed: v, pending: nil), meta?.blocks ?? [])
        }
    }

    /// Removes `id` and frees its blocks. Removing a missing chunk is a no-op.
    public func remove(_ id: ChunkID) async throws(ChunkError) {
        guard let meta = chunks[id] else { return }
        if let failure = await persist([MetaChange(id: id, after: nil, frees: meta.blocks)], durable: true) { throw .disk(failure) }
    }

    // MARK: Internals

    /// A metadata change: `id`'s state becomes `after` (nil: removed), and `frees` are
    /// the blocks it stops naming.
    struct MetaChange {
        var id: ChunkID
        var after: ChunkMeta?
        var frees: [BlockAddress]
    }

    /// Writes each chunk's bytes to a new block (one submission for all), then records
    /// the state `change` derives from the chunk's current metadata and its new version
    /// (one group commit for all). A write that fails frees its block and changes
    /// nothing; so does every write of a failed group commit.
    private func update(
        _ writes: [BlockWrite], chainVersion: UInt64, durable: Bool,
        change: (ChunkID, ChunkMeta?, ChunkVersion) -> (ChunkMeta, [BlockAddress])
    ) async -> [Result<ChunkVersion, ChunkError>] {
        var results = [Result<ChunkVersion, ChunkError>?](repeating: nil, count: writes.count)
        var seen: Set<ChunkID> = []
        var pending: [(index: Int, file: DiskFile, block: BlockAddress)] = []
        for (i, w) in writes.enumerated() {
            guard seen.insert(w.id).inserted else {
                results[i] = .failure(.duplicate(w.id))
                continue
            }
            guard let c = SizeClass.fitting(w.data.count) else {
                results[i] = .failure(.tooLarge(w.id, bytes: w.data.count, limitBytes: SizeClass.largestBytes))
                continue
            }
            let block: BlockAddress
            do throws(ChunkError) {
                block = try await allocate(c)
            } catch {
                results[i] = .failure(error)
                continue
            }
            do throws(ChunkError) {
                pending.append((i, try await handle(block.path), block))
            } catch {
                allocator.free(block)
                results[i] = .failure(error)
            }
        }
        let blockWrites = pending.map { ($0.file, $0.block.offset, writes[$0.index].data) }
        let checksums = pending.map { writes[$0.index].checksum ?? CRC32C.checksum(writes[$0.index].data) }
        var failures: [DiskError?]
        var behind = false
        let keys = pending.map { hotKey(writes[$0.index].id, writes[$0.index].version) }
        if !durable, let hot, !pending.isEmpty,
           let tickets = hot.insertPinned(pending.indices.map { (keys[$0], checksums[$0], writes[pending[$0].index].data) }) {
            // Written behind: the bytes serve reads from memory until the block is on
            // the disk; the records wait for it in the group commit.
            behind = true
            let ticket = writeBehindNext
            writeBehindNext += 1
            writesBehind.insert(ticket)
            let pins = Array(zip(keys, tickets))
            runtime.spawn("chunk.write-behind") { [self] in await self.writeBehind(ticket, blockWrites, pins) }
            failures = Array(repeating: nil, count: pending.count)
        } else {
            failures = await writeBlocks(blockWrites, durable: durable)
        }
        var changes: [MetaChange] = []
        var staged: [(index: Int, version: ChunkVersion)] = []
        for (k, p) in pending.enumerated() {
            if let e = failures[k] {
                allocator.free(p.block)
                results[p.index] = .failure(.disk(e))
                continue
            }
            let w = writes[p.index]
            let v = ChunkVersion(version: w.version, chainVersion: chainVersion, length: w.data.count, checksum: checksums[k], block: p.block)
            let (after, frees) = change(w.id, chunks[w.id], v)
            changes.append(MetaChange(id: w.id, after: after, frees: frees))
            staged.append((p.index, v))
        }
        if !changes.isEmpty, let failure = await persist(changes, durable: durable) {
            for s in staged {
                allocator.free(s.version.block)
                results[s.index] = .failure(.disk(failure))
            }
        } else {
            for s in staged {
                results[s.index] = .success(s.version)
                if !behind { hold(writes[s.index].id, s.version, writes[s.index].data) }
            }
        }
        return results.map { $0 ?? .failure(.disk(.ioError(path: "", detail: "internal error: write not run"))) }
    }

    /// Writes each `(file, offset, bytes)` with the block group commit; one error (or
    /// nil) per write, in order.
    private func writeBlocks(_ writes: [(DiskFile, UInt64, [UInt8])], durable: Bool) async -> [DiskError?] {
        if writes.isEmpty { return [] }
        if !durable { return await writeCacheBlocks(writes) }
        return await withUnsafeContinuation { c in
            queuedBlocks.append(QueuedBlocks(writes: writes, durable: durable, done: c))
            if !flushingBlocks {
                flushingBlocks = true
                runtime.spawn("chunk.block-flush") { [self] in await self.flushBlocks() }
            }
        }
    }

    /// `cache` block writes have no fsync to share, so they skip the group commit: each
    /// call is its own submission, in flight beside the others (a target under load
    /// keeps the device's queue full instead of one submission at a time), and marks
    /// its files for the fsync that the next metadata commit does before the records
    /// naming these blocks.
    private func writeCacheBlocks(_ writes: [(DiskFile, UInt64, [UInt8])]) async -> [DiskError?] {
        let results = await disk.submit(writes.map { DiskOp.write($0.0, offset: $0.1, bytes: $0.2) })
        var outcome: [DiskError?] = []
        outcome.reserveCapacity(writes.count)
        for (w, r) in zip(writes, results) {
            if case .failure(let e) = r {
                outcome.append(e)
            } else {
                unsyncedFiles[w.0.id] = w.0
                outcome.append(nil)
            }
        }
        return outcome
    }

    /// Size classes being grown now, with the allocations waiting for that growth.
    private var growing: [Int: [UnsafeContinuation<Void, Never>]] = [:]

    /// One growth per size class at a time: concurrent writes that find the class
    /// empty wait for the growth in progress rather than each preallocating (and
    /// fsyncing) the same range again.
    private func allocate(_ c: SizeClass) async throws(ChunkError) -> BlockAddress {
        while true {
            switch allocator.allocate(c) {
            case .success(let b): return b
            case .failure(let growth):
                if growing[c.index] != nil {
                    await withUnsafeContinuation { growing[c.index, default: []].append($0) }
                    continue
                }
                growing[c.index] = []
                var failure: ChunkError?
                do {
                    try await grow(growth)
                } catch {
                    failure = error
                }
                for waiter in growing.removeValue(forKey: c.index) ?? [] { waiter.resume() }
                if let failure { throw failure }
            }
        }
    }

    /// Preallocates a range of blocks and extends the file over it, so the file size
    /// tells recovery how many blocks exist.
    /// When the usual step does not fit (a nearly full disk), a single block is tried
    /// before the write fails with `noSpace`.
    private func grow(_ g: SlabAllocator.Growth) async throws(ChunkError) {
        guard case .extend(let c, let file, let from, let blocks) = g else { return }
        let f = try await handle(BlockAddress.path(c, file))
        var step = blocks
        while true {
            let start = UInt64(from) * UInt64(c.blockBytes)
            let length = UInt64(step) * UInt64(c.blockBytes)
            let results = await disk.submit([.fallocate(f, offset: start, length: length), .truncate(f, length: start + length), .fsync(f)])
            var failure: DiskError?
            for case .failure(let e) in results { failure = failure ?? e }
            guard let failure else { break }
            if case .noSpace = failure, step > 1 {
                // Undo a partial extension before trying one block.
                _ = await disk.submit([.truncate(f, length: start), .fsync(f)])
                step = 1
                continue
            }
            throw .disk(failure)
        }
        allocator.grew(.extend(sizeClass: c, file: file, from: from, blocks: step))
    }

    private func handle(_ path: String) async throws(ChunkError) -> DiskFile {
        if let f = files[path] { return f }
        do {
            let f = try await disk.open(path, create: true)
            if let raced = files[path] {
                await disk.close(f)
                return raced
            }
            files[path] = f
            return f
        } catch {
            throw .disk(error)
        }
    }

    /// Appends the records of `changes` to the metadata log as one group, after
    /// which each chunk's in-memory state becomes its `after` and its `frees` are
    /// released. `durable`: waits for the group commit; if it fails, nothing changes in
    /// memory and the error is returned. `cache`: the states change at once, the frees
    /// wait until the records are durable, and the records go with the next group
    /// commit (retried until they are written).
    private func persist(_ changes: [MetaChange], durable: Bool) async -> DiskError? {
        var frame: [UInt8] = []
        for c in changes { ChunkMetaLog.append(c.after.map { .put($0) } ?? .remove(c.id), to: &frame) }
        if !durable {
            for c in changes {
                discardDropped(c.id, before: chunks[c.id], after: c.after)
                chunks[c.id] = c.after
            }
            queued.append(QueuedRecord(frame: frame, frees: changes.flatMap(\.frees), states: [], done: nil))
            startFlush()
            return nil
        }
        // The group commit applies the states and frees in the same step as it learns
        // the records are durable: a reader that looks the chunk up from then on finds
        // the new block (one already reading the old one checks, when its checksum
        // fails, whether the chunk moved on), and a checkpoint taken after that step
        // holds them.
        return await withUnsafeContinuation { c in
            queued.append(QueuedRecord(frame: frame, frees: changes.flatMap(\.frees), states: changes.map { ($0.id, $0.after) }, done: c))
            startFlush()
        }
    }

    private func startFlush() {
        if !flushing {
            flushing = true
            runtime.spawn("chunk.meta-flush") { [self] in await self.flush() }
        }
    }

    // MARK: Group commit

    private struct QueuedRecord {
        var frame: [UInt8]
        /// Blocks the record stops naming, freed once it is durable.
        var frees: [BlockAddress]
        /// A `durable` record's states, applied once it is durable (a `cache` record's
        /// are applied when it is queued).
        var states: [(id: ChunkID, after: ChunkMeta?)]
        /// nil for a `cache` record: nobody waits, and a failed commit retries it.
        var done: UnsafeContinuation<DiskError?, Never>?
    }

    private var queued: [QueuedRecord] = []
    private var flushing = false
    private var tornTail = false
    /// Block writes waiting for the next submission, as the groups callers queued.
    private struct QueuedBlocks {
        var writes: [(file: DiskFile, offset: UInt64, bytes: [UInt8])]
        var durable: Bool
        var done: UnsafeContinuation<[DiskError?], Never>
    }
    private var queuedBlocks: [QueuedBlocks] = []
    private var flushingBlocks = false
    /// Files holding `cache` block writes not yet fsynced: the next metadata group
    /// commit fsyncs them before its records, which may name those blocks.
    private var unsyncedFiles: [UInt64: DiskFile] = [:]
    /// Whether the last metadata group commit failed (logged once per run of failures).
    private var flushFailing = false

    /// Most block writes one disk submission carries (with their files' fsyncs).
    static let blockWritesPerSubmissionMax = 256
    /// Most records one metadata group commit carries.
    static let recordsPerCommitMax = 4_096
    /// Pause before retrying a failed metadata group commit that holds `cache` records.
    static let failedCommitRetryNanoseconds: UInt64 = 100_000_000

    /// Group commit of block data: every block write queued while the previous
    /// submission ran goes into one submission, followed by one fsync per file that a
    /// `durable` write touched, so concurrent writes share fsyncs instead of paying one
    /// each. A failed fsync fails every write of its file in the submission (any may
    /// be lost); a failed write fails only itself.
    private func flushBlocks() async {
        while !queuedBlocks.isEmpty {
            // Whole groups, as many as fit in one submission (at least one).
            var take = 1
            var writes = queuedBlocks[0].writes.count
            while take < queuedBlocks.count, writes + queuedBlocks[take].writes.count <= Self.blockWritesPerSubmissionMax {
                writes += queuedBlocks[take].writes.count
                take += 1
            }
            let groups = Array(queuedBlocks.prefix(take))
            queuedBlocks.removeFirst(take)
            var ops: [DiskOp] = []
            var synced: [UInt64] = []
            for g in groups {
                for w in g.writes { ops.append(.write(w.file, offset: w.offset, bytes: w.bytes)) }
            }
            let writeCount = ops.count
            for g in groups where g.durable {
                for w in g.writes where !synced.contains(w.file.id) {
                    synced.append(w.file.id)
                    ops.append(.fsync(w.file))
                }
            }
            let results = await disk.submit(ops)
            var syncFailure: [UInt64: DiskError] = [:]
            for (k, id) in synced.enumerated() {
                if case .failure(let e) = results[writeCount + k] { syncFailure[id] = e }
            }
            var next = 0
            for g in groups {
                var outcome: [DiskError?] = []
                for w in g.writes {
                    if case .failure(let e) = results[next] {
                        outcome.append(e)
                    } else if g.durable {
                        outcome.append(syncFailure[w.file.id])
                    } else if let e = syncFailure[w.file.id] {
                        // The file's fsync failed: its unsynced pages may be gone.
                        outcome.append(e)
                    } else {
                        unsyncedFiles[w.file.id] = w.file
                        outcome.append(nil)
                    }
                    next += 1
                }
                g.done.resume(returning: outcome)
            }
        }
        flushingBlocks = false
    }

    /// Group commit of metadata: fsyncs the files with unsynced `cache` blocks, then
    /// writes every queued record with one write and one fsync. The log end advances
    /// only when all of it succeeds, so a failed batch leaves no gap for later records
    /// to sit behind (recovery stops at the first invalid record); whatever it wrote
    /// is cut off before the next batch. Blocks the records free are released only
    /// after success. `durable` waiters get the outcome; `cache` records of a failed
    /// batch are queued again (their state is already visible) and retried.
    private func flush() async {
        while !queued.isEmpty {
            let take = min(queued.count, Self.recordsPerCommitMax)
            let batch = Array(queued.prefix(take))
            queued.removeFirst(take)
            // Records may name blocks still being written behind: those first.
            await waitForWritesBehind(before: writeBehindNext)
            var failure: DiskError?
            let dirty = unsyncedFiles.keys.sorted().compactMap { unsyncedFiles[$0] }
            unsyncedFiles.removeAll()
            if !dirty.isEmpty {
                for case .failure(let e) in await disk.submit(dirty.map { .fsync($0) }) { failure = failure ?? e }
            }
            var ops: [DiskOp] = []
            if tornTail { ops.append(.truncate(log, length: logEnd)) }
            let bytes = batch.flatMap(\.frame)
            ops += [.write(log, offset: logEnd, bytes: bytes), .fsync(log)]
            if failure == nil {
                for case .failure(let e) in await disk.submit(ops) { failure = failure ?? e }
            }
            if let failure {
                tornTail = true
                for f in dirty { unsyncedFiles[f.id] = f }
                let retry = batch.filter { $0.done == nil }
                for item in batch { item.done?.resume(returning: failure) }
                if !retry.isEmpty {
                    if !flushFailing { runtime.logger("chunk").error("metadata group commit failed: \(failure); \(retry.count) cache record(s) wait for a retry") }
                    flushFailing = true
                    queued.insert(contentsOf: retry, at: 0)
                    try? await runtime.sleep(nanoseconds: Self.failedCommitRetryNanoseconds)
                }
            } else {
                logEnd += UInt64(bytes.count)
                tornTail = false
                flushFailing = false
                for item in batch {
                    for (id, after) in item.states {
                        discardDropped(id, before: chunks[id], after: after)
                        chunks[id] = after
                    }
                    for b in item.frees { allocator.free(b) }
                    item.done?.resume(returning: nil)
                }
                if logEnd >= compactAtBytes { await compact() }
            }
        }
        flushing = false
    }

    // MARK: Compaction

    /// Writes a checkpoint of every chunk's metadata into the other log slot and
    /// appends there from then on (see `ChunkMetaLog`). Runs inside the group commit,
    /// so no record is written meanwhile; records queued meanwhile follow the
    /// checkpoint. The snapshot is the in-memory state, which is the durable log's
    /// plus `cache` states still queued: the files holding their blocks are fsynced
    /// first, so the checkpoint never names bytes that were not written, and their
    /// records, appended after it, replay to the same states. A failure keeps the
    /// current log (a later compaction tries again).
    private func compact() async {
        let next = 1 - logSlot
        let g = generation + 1
        let snapshot = ChunkMetaLog.checkpoint(chunks, generation: g)
        await waitForWritesBehind(before: writeBehindNext)
        let dirty = unsyncedFiles.keys.sorted().compactMap { unsyncedFiles[$0] }
        unsyncedFiles.removeAll()
        var failure: DiskError?
        if !dirty.isEmpty {
            for case .failure(let e) in await disk.submit(dirty.map { .fsync($0) }) { failure = failure ?? e }
        }
        var file: DiskFile?
        if failure == nil {
            do {
                file = try await disk.open(ChunkMetaLog.paths[next], create: true)
            } catch {
                failure = error
            }
        }
        if let file, failure == nil {
            var ops: [DiskOp] = [.truncate(file, length: 0)]
            var offset = 0
            while offset < snapshot.count {
                let end = min(offset + ChunkMetaLog.replayPieceBytes, snapshot.count)
                ops.append(.write(file, offset: UInt64(offset), bytes: Array(snapshot[offset..<end])))
                offset = end
            }
            ops.append(.fsync(file))
            for case .failure(let e) in await disk.submit(ops) { failure = failure ?? e }
        }
        guard let file, failure == nil else {
            for f in dirty { unsyncedFiles[f.id] = f }
            if let file { await disk.close(file) }
            // Not again before the log has grown by another slack.
            compactAtBytes = logEnd + compactionSlackBytes
            runtime.logger("chunk").warning("metadata log compaction failed: \(failure.map { "\($0)" } ?? "unknown"); the log keeps growing until a later one succeeds")
            return
        }
        let old = log
        log = file
        logSlot = next
        generation = g
        logEnd = UInt64(snapshot.count)
        tornTail = false
        compactions += 1
        compactAtBytes = Self.compactionThreshold(liveBytes: logEnd, slack: compactionSlackBytes)
        // The old slot is no longer read (the new checkpoint is durable and newer):
        // give its space back. Not fsynced: if the truncation is lost, the slot still
        // holds an older generation, which recovery passes over.
        _ = await disk.submit([.truncate(old, length: 0)])
        await disk.close(old)
    }
}
