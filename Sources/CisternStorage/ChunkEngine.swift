import CisternCore
import CisternWire

/// Stores the chunks of one target on one `Disk`: chunk data in blocks of a few large
/// preallocated files per size class (`SlabAllocator`), metadata in an append-only
/// log. Updates are copy-on-write: new data goes to a new block, which is fsynced
/// before the metadata record naming it is appended and fsynced; the old block is
/// freed only after that. So after any crash the target recovers to the last
/// acknowledged state, whatever unsynced writes were lost. Every read verifies the
/// checksum; a corrupt replica is reported, never returned.
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

    init(disk: any Disk, runtime: any Runtime, chunks: [ChunkID: ChunkMeta], allocator: SlabAllocator, log: DiskFile, logEnd: UInt64) {
        self.disk = disk
        self.runtime = runtime
        self.chunks = chunks
        self.allocator = allocator
        self.log = log
        self.logEnd = logEnd
        self.unownedExecutor = runtime.makeActorExecutor()
    }

    /// Opens a target: replays the metadata log (cutting off a torn tail) and rebuilds
    /// the allocator from the block files and the blocks recovered metadata references.
    public static func open(disk: any Disk, runtime: any Runtime, growBlocks: UInt32 = 16, blocksPerFile: UInt32 = 256) async throws(ChunkError) -> ChunkEngine {
        do {
            let log = try await disk.open(ChunkMetaLog.path, create: true)
            let size = try await disk.size(log)
            let bytes = try await disk.read(log, offset: 0, length: Int(size))
            let (chunks, valid) = ChunkMetaLog.replay(bytes)
            if valid < bytes.count {
                try await disk.truncate(log, length: UInt64(valid))
                try await disk.fsync(log)
            }
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
            return ChunkEngine(disk: disk, runtime: runtime, chunks: chunks, allocator: allocator, log: log, logEnd: UInt64(valid))
        } catch {
            throw .disk(error)
        }
    }

    /// The chunk metadata a target's metadata log describes (the valid prefix, as
    /// recovery replays it). For checkers that inspect a target's files directly.
    public static func recoveredMetadata(from logBytes: [UInt8]) -> [ChunkID: ChunkMeta] {
        ChunkMetaLog.replay(logBytes).chunks
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

    public var usedBytes: UInt64 { allocator.usedBytes }

    /// The committed data of `id`, verified against its checksum.
    public func read(_ id: ChunkID) async throws(ChunkError) -> (data: [UInt8], version: ChunkVersion) {
        guard let committed = chunks[id]?.committed else { throw .notFound(id) }
        let data = try await readBlock(committed, id)
        return (data, committed)
    }

    private func readBlock(_ v: ChunkVersion, _ id: ChunkID) async throws(ChunkError) -> [UInt8] {
        let file = try await handle(v.block.path)
        let data: [UInt8]
        do {
            data = try await disk.read(file, offset: v.block.offset, length: v.length)
        } catch {
            throw .disk(error)
        }
        let actual = data.count == v.length ? CRC32C.checksum(data) : ~v.checksum
        guard actual == v.checksum else {
            corruptionsDetected += 1
            throw .corrupt(id, expected: v.checksum, actual: actual)
        }
        return data
    }

    // MARK: Updates

    /// Writes `data` as the pending version `version` of `id` (replacing an earlier
    /// pending version). Durable on return.
    @discardableResult
    public func stage(_ id: ChunkID, data: [UInt8], version: UInt64, chainVersion: UInt64) async throws(ChunkError) -> ChunkVersion {
        let v = try await writeBlock(id, data, version: version, chainVersion: chainVersion)
        var meta = chunks[id] ?? ChunkMeta(id: id)
        let replaced = meta.pending?.block
        meta.pending = v
        try await persist(.put(meta), id: id, after: meta)
        if let replaced { allocator.free(replaced) }
        return v
    }

    /// Makes the pending version `version` the committed one and frees the old block.
    public func commit(_ id: ChunkID, version: UInt64) async throws(ChunkError) {
        guard var meta = chunks[id] else { throw .notFound(id) }
        if meta.committed?.version == version && meta.pending == nil { return }
        guard let pending = meta.pending, pending.version == version else {
            throw .versionMismatch(id, expected: version, pending: meta.pending?.version)
        }
        let old = meta.committed?.block
        meta.committed = pending
        meta.pending = nil
        try await persist(.put(meta), id: id, after: meta)
        if let old { allocator.free(old) }
    }

    /// Replaces `id` with `data` as its committed version and drops any pending one
    /// (a full-chunk replace, as resync sends).
    public func replace(_ id: ChunkID, data: [UInt8], version: UInt64, chainVersion: UInt64) async throws(ChunkError) {
        let v = try await writeBlock(id, data, version: version, chainVersion: chainVersion)
        let old = chunks[id]?.blocks ?? []
        let meta = ChunkMeta(id: id, committed: v, pending: nil)
        try await persist(.put(meta), id: id, after: meta)
        for b in old { allocator.free(b) }
    }

    /// Removes `id` and frees its blocks. Removing a missing chunk is a no-op.
    public func remove(_ id: ChunkID) async throws(ChunkError) {
        guard let meta = chunks[id] else { return }
        try await persist(.remove(id), id: id, after: nil)
        for b in meta.blocks { allocator.free(b) }
    }

    // MARK: Internals

    private func writeBlock(_ id: ChunkID, _ data: [UInt8], version: UInt64, chainVersion: UInt64) async throws(ChunkError) -> ChunkVersion {
        guard let c = SizeClass.fitting(data.count) else {
            throw .tooLarge(id, bytes: data.count, limitBytes: SizeClass.largestBytes)
        }
        let block = try await allocate(c)
        let file = try await handle(block.path)
        let results = await disk.submit([.write(file, offset: block.offset, bytes: data), .fsync(file)])
        for case .failure(let e) in results {
            allocator.free(block)
            throw .disk(e)
        }
        return ChunkVersion(version: version, chainVersion: chainVersion, length: data.count, checksum: CRC32C.checksum(data), block: block)
    }

    private func allocate(_ c: SizeClass) async throws(ChunkError) -> BlockAddress {
        while true {
            switch allocator.allocate(c) {
            case .success(let b): return b
            case .failure(let growth): try await grow(growth)
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

    /// Appends `record` to the metadata log durably; then the in-memory state
    /// becomes `after`. If the append fails, nothing changes in memory.
    private func persist(_ record: ChunkMetaLog.Record, id: ChunkID, after: ChunkMeta?) async throws(ChunkError) {
        let failure: DiskError? = await withUnsafeContinuation { c in
            queued.append((ChunkMetaLog.frame(record), c))
            if !flushing {
                flushing = true
                runtime.spawn("chunk.meta-flush") { [self] in await self.flush() }
            }
        }
        if let failure { throw .disk(failure) }
        chunks[id] = after
    }

    private var queued: [(frame: [UInt8], done: UnsafeContinuation<DiskError?, Never>)] = []
    private var flushing = false
    private var tornTail = false

    /// Group commit: writes every queued record with one write and one fsync. The log
    /// end advances only when both succeed, so a failed batch leaves no gap for later
    /// records to sit behind (recovery stops at the first invalid record); whatever
    /// it wrote is cut off before the next batch.
    private func flush() async {
        while !queued.isEmpty {
            let batch = queued
            queued.removeAll()
            var ops: [DiskOp] = []
            if tornTail { ops.append(.truncate(log, length: logEnd)) }
            let bytes = batch.flatMap(\.frame)
            ops += [.write(log, offset: logEnd, bytes: bytes), .fsync(log)]
            let results = await disk.submit(ops)
            var failure: DiskError?
            for case .failure(let e) in results { failure = failure ?? e }
            if failure == nil {
                logEnd += UInt64(bytes.count)
                tornTail = false
            } else {
                tornTail = true
            }
            for item in batch { item.done.resume(returning: failure) }
        }
        flushing = false
    }
}
