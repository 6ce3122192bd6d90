import CisternAuth
import CisternCore
import CisternKV
import CisternMeta
import CisternMgmtd
import CisternRouting
import CisternStorage
import CisternWire

/// Settings of a client, with the limits that keep one client from flooding a cluster.
public struct ClientOptions: Sendable {
    /// Chunk requests in flight from this client at once, over all servers.
    public var inFlightMax = 64
    /// Chunk requests in flight to one storage node at once.
    public var perNodeInFlightMax = 32
    /// Tries per chunk request before giving up (each waits for fresh routing and
    /// backs off up to 400 ms).
    public var chunkAttemptsMax = 40
    /// How long one chunk request may take before it is retried (raise it for large
    /// chunks on slow disks: a write waits for every replica's fsync).
    public var chunkTimeoutNanoseconds: UInt64 = 1_000_000_000
    /// How long a KV reader may take to read a page it looked up: its slot is not
    /// evicted or reused before then.
    public var kvLeaseNanoseconds: UInt64 = 5_000_000_000
    /// Tries of a KV page write; bounded so a put finishes well within its reservation.
    public var kvWriteAttemptsMax = 20
    /// How often a client with files open for writing tells the metadata servers it
    /// is alive. Keep it well under the servers' session timeout (`meta:
    /// session_timeout_seconds`, 60 s by default): a client not heard from for that
    /// long is taken for dead and its files' lengths are set from storage.
    public var sessionKeepAliveNanoseconds: UInt64 = 10_000_000_000
    public init() {}
}

/// A file opened through `CisternClient.open`.
public struct FileHandle: Sendable, Hashable {
    public let path: String
    public let inode: InodeID
    public let layout: Layout
    public let writable: Bool
    /// The length the metadata service reported at open.
    public let lengthAtOpen: UInt64
    let session: UInt64
    /// The capability for the file's chunks (on a cluster with authentication).
    let capability: Capability?
}

/// The client of a Cistern cluster: finds the cluster manager's primary and keeps
/// routing fresh (by version, with pushed hints), runs metadata operations on any
/// metadata server, splits file I/O by chunk and chain and runs it in parallel within
/// limits, retrying on stale routing, uncommitted data and timeouts (reads fail over
/// to other replicas; a retried write is applied once), and offers the native KV API.
///
/// ```swift
/// let client = CisternClient(runtime: runtime, transport: transport, node: me,
///                            mgmtd: [m1], meta: [meta1])
/// await client.start()
/// let ns = try await client.kvNamespace("llama-70b", pageBytes: 64 << 10, capacityPages: 100_000)
/// _ = try await ns.put([("prefix-hash-1", page)])
/// let hits = try await ns.exists(["prefix-hash-1", "prefix-hash-2"]).consecutiveHits
/// ```
public actor CisternClient {
    public nonisolated let unownedExecutor: UnownedSerialExecutor
    public nonisolated let runtime: any Runtime
    public nonisolated let mgmtd: MgmtdClient
    public nonisolated let meta: MetaClient
    public nonisolated let storage: StorageClient
    /// Storage client for KV page writes: fewer attempts, so a put ends within its
    /// reservation.
    nonisolated let pageStorage: StorageClient
    public nonisolated let kvIndex: KVIndexClient
    public nonisolated let options: ClientOptions
    private var nextSession: UInt64 = 0
    /// Write handles open now; while there are any, the client sends keep-alives.
    private var openWriteSessions = 0
    private var keepAliveRunning = false
    private var stopped = false
    let clientID: UInt32
    /// Capabilities from the metadata servers (nil without a token).
    public nonisolated let wallet: CapabilityWallet?

    /// - Parameters:
    ///   - node: this client's identity (unique in the cluster).
    ///   - mgmtd: the cluster manager replicas.
    ///   - meta: the metadata servers (which also serve the KV index).
    ///   - token: the tenant token every request carries (clusters with authentication).
    public init(runtime: any Runtime, transport: any Transport, node: NodeID, name: String = "client", mgmtd replicas: [NodeID], meta servers: [NodeID], options: ClientOptions = ClientOptions(), incarnation: UInt32 = 0,
                token: String? = nil, mgmtdService: Capability? = nil) {
        let wallet = token.map { _ in CapabilityWallet() }
        self.wallet = wallet
        self.runtime = runtime
        self.options = options
        self.clientID = node.rawValue << 8 | (incarnation & 0xFF)
        self.mgmtd = MgmtdClient(node: node, role: .client, name: name, runtime: runtime, transport: transport, replicas: replicas, service: mgmtdService)
        self.meta = MetaClient(runtime: runtime, transport: transport, servers: servers, clientID: UInt64(clientID), token: token, wallet: wallet)
        self.storage = StorageClient(runtime: runtime, transport: transport, mgmtd: mgmtd, clientID: clientID, perNodeInFlightMax: options.perNodeInFlightMax, wallet: wallet)
        self.pageStorage = StorageClient(runtime: runtime, transport: transport, mgmtd: mgmtd, clientID: clientID ^ 0x8000_0000, perNodeInFlightMax: options.perNodeInFlightMax, wallet: wallet)
        self.kvIndex = KVIndexClient(runtime: runtime, transport: transport, servers: servers, seed: UInt64(clientID), token: token, wallet: wallet)
        self.unownedExecutor = runtime.makeActorExecutor()
    }

    /// Fetches routing and starts listening for the cluster manager's hints.
    public func start() async {
        await storage.setAttempts(options.chunkAttemptsMax)
        await pageStorage.setAttempts(options.kvWriteAttemptsMax)
        await storage.setTimeout(options.chunkTimeoutNanoseconds)
        await pageStorage.setTimeout(options.chunkTimeoutNanoseconds)
        await mgmtd.serveHints()
        await mgmtd.refreshRouting()
    }

    // MARK: Metadata

    func metaCall(_ op: MetaOp) async throws(CisternError) -> MetaReply {
        do {
            return try await meta.call(op)
        } catch {
            throw .meta(error)
        }
    }

    func inode(_ op: MetaOp) async throws(CisternError) -> Inode? {
        guard case .inode(let i) = try await metaCall(op) else { throw .meta(.exhausted(attempts: 1, lastError: "unexpected reply to \(op)")) }
        return i
    }

    public func stat(_ path: String) async throws(CisternError) -> Inode {
        guard let i = try await inode(.stat(path)) else { throw .meta(.refused(.notFound, "\(path): no such file or directory")) }
        return i
    }

    @discardableResult
    public func mkdir(_ path: String, parents: Bool = true) async throws(CisternError) -> Inode? {
        try await inode(.mkdir(path, parents: parents))
    }

    /// Creates an empty file; `exclusive` refuses an existing one (EEXIST).
    @discardableResult
    public func create(_ path: String, mode: UInt32 = 0o644, exclusive: Bool = true) async throws(CisternError) -> Inode? {
        try await inode(.create(path, mode: mode, exclusive: exclusive))
    }

    public func remove(_ path: String, recursive: Bool = false) async throws(CisternError) {
        _ = try await metaCall(.remove(path, recursive: recursive))
    }

    public func rename(_ from: String, _ to: String) async throws(CisternError) {
        _ = try await metaCall(.rename(from, to))
    }

    /// Every entry of a directory (paged through the metadata service).
    public func list(_ path: String) async throws(CisternError) -> [Dentry] {
        var out: [Dentry] = []
        var after: String?
        while true {
            guard case .entries(let page) = try await metaCall(.list(path, after: after, limit: 1_000)) else { break }
            out += page
            if page.count < 1_000 { break }
            after = page.last?.name
        }
        return out
    }

    // MARK: Files

    /// Opens `path`; `create` makes it if missing. A writable handle records a write
    /// session, closed by `close` with the length written.
    public func open(_ path: String, write: Bool = false, create: Bool = false) async throws(CisternError) -> FileHandle {
        if create { _ = try await inode(.create(path, mode: 0o644, exclusive: false)) }
        nextSession += 1
        let session = UInt64(clientID) << 32 | nextSession
        guard let file = try await inode(.open(path, write: write, session: session)) else {
            throw .meta(.refused(.notFound, "\(path): no such file or directory"))
        }
        guard file.type == .file, let layout = file.layout, layout.chunkBytes > 0, !layout.chains.isEmpty else {
            throw .invalidArgument("\(path) is a \(file.type), not a file with a layout")
        }
        if write {
            openWriteSessions += 1
            startKeepAlive()
        }
        return FileHandle(path: path, inode: file.id, layout: layout, writable: write, lengthAtOpen: file.length, session: session,
                          capability: wallet?.capability(for: file.id.rawValue))
    }

    /// Puts a handle's capability back in the wallet (which drops its oldest past its capacity).
    nonisolated func keep(_ handle: FileHandle) {
        if let c = handle.capability { wallet?.insert([c]) }
    }

    /// Sends a keep-alive every `options.sessionKeepAliveNanoseconds` while write
    /// handles are open (one loop at most; it ends when the last handle closes).
    private func startKeepAlive() {
        guard !keepAliveRunning, !stopped else { return }
        keepAliveRunning = true
        let interval = options.sessionKeepAliveNanoseconds
        runtime.spawn("client.keepalive") { [weak self] in
            while true {
                guard let self else { return }
                guard await self.keepAliveWanted() else { return }
                _ = try? await self.meta.call(.keepAlive)
                do { try await self.runtime.sleep(nanoseconds: interval) } catch { return }
            }
        }
    }

    private func keepAliveWanted() -> Bool {
        if openWriteSessions > 0 && !stopped { return true }
        keepAliveRunning = false
        return false
    }

    /// Stops background work (keep-alives). Files still open for writing are then
    /// treated like those of a client that died: their length is reconciled from
    /// storage after the servers' session timeout.
    public func stop() {
        stopped = true
    }

    /// Closes a handle; a writable one reports `length` (the end of what was written)
    /// so the file's length covers it.
    public func close(_ handle: FileHandle, length: UInt64?) async throws(CisternError) {
        keep(handle)
        if handle.writable { openWriteSessions = max(0, openWriteSessions - 1) }
        _ = try await metaCall(.close(handle.inode, session: handle.session, length: handle.writable ? length : nil))
    }

    /// Writes `bytes` at `offset`; returns when every chunk is committed on its chain.
    public func write(_ handle: FileHandle, at offset: UInt64, _ bytes: [UInt8]) async throws(CisternError) {
        guard handle.writable else { throw .invalidArgument("\(handle.path) was opened read-only") }
        keep(handle)
        let pieces = FileSplit.pieces(layout: handle.layout, inode: handle.inode, offset: offset, length: bytes.count)
        let storage = self.storage
        let results = await runtime.concurrentMap(pieces, limit: options.inFlightMax) { p -> StorageClientError? in
            do throws(StorageClientError) {
                _ = try await storage.write(p.chunk, chain: p.chain, offset: p.offsetInChunk, Array(bytes[p.bufferOffset..<p.bufferOffset + p.length]))
                return nil
            } catch {
                return error
            }
        }
        if let e = results.compactMap({ $0 }).first { throw .storage(e) }
    }

    /// Reads up to `length` bytes at `offset` (fewer at the end of the file; holes read
    /// as zeros). Chunks of one chain go in one batched request to one replica.
    public func read(_ handle: FileHandle, at offset: UInt64, length: Int, fileLength: UInt64? = nil) async throws(CisternError) -> [UInt8] {
        keep(handle)
        let end = min(offset + UInt64(max(0, length)), fileLength ?? handle.lengthAtOpen)
        guard end > offset else { return [] }
        let n = Int(end - offset)
        let pieces = FileSplit.pieces(layout: handle.layout, inode: handle.inode, offset: offset, length: n)
        if Self.readsRanges(pieces, chunkBytes: Int(handle.layout.chunkBytes)), await !storage.rangeReadsUnsupported {
            // nil: servers older than this client; whole chunks, below.
            if let out = try await readRanges(pieces, length: n) { return out }
        }
        let chunks = try await readChunks(pieces.map { ($0.chunk, $0.chain) }, expectedBytes: Int(handle.layout.chunkBytes))
        // One whole chunk: its bytes are the answer (no copy).
        if pieces.count == 1, let p = pieces.first, p.offsetInChunk == 0, let data = chunks[p.chunk] ?? nil, data.count == p.length { return data }
        // Pieces are in order and contiguous: append each (zeros for holes and for
        // what a short chunk lacks), so no byte is written twice.
        var out: [UInt8] = []
        out.reserveCapacity(n)
        for p in pieces {
            let data = chunks[p.chunk] ?? nil
            let available = data.map { max(0, min(p.length, $0.count - p.offsetInChunk)) } ?? 0
            if let data, available > 0 { out.append(contentsOf: data[p.offsetInChunk..<p.offsetInChunk + available]) }
            if available < p.length { out.append(contentsOf: repeatElement(0, count: p.length - available)) }
        }
        return out
    }

    /// Whether a read of `pieces` asks each replica for its byte range rather than
    /// whole chunks: a few pieces, each well under a chunk (a 4 KiB read then moves
    /// 4 KiB, not the chunk; large reads batch whole chunks per chain).
    static func readsRanges(_ pieces: [FileSplit.Piece], chunkBytes: Int) -> Bool {
        pieces.count <= 4 && pieces.allSatisfy { $0.length <= chunkBytes / 4 }
    }

    /// Reads each piece's byte range from its chain, in parallel; holes read as zeros.
    func readRanges(_ pieces: [FileSplit.Piece], length n: Int) async throws(CisternError) -> [UInt8]? {
        let storage = self.storage
        let results = await runtime.concurrentMap(pieces, limit: options.inFlightMax) { p -> Result<[UInt8]?, StorageClientError> in
            do throws(StorageClientError) {
                return .success(try await storage.readRange(p.chunk, chain: p.chain, offset: p.offsetInChunk, length: p.length))
            } catch {
                return .failure(error)
            }
        }
        var out = [UInt8](repeating: 0, count: n)
        for (p, r) in zip(pieces, results) {
            switch r {
            case .failure(.unsupported): return nil
            case .failure(let e): throw .storage(e)
            case .success(let data?) where !data.isEmpty:
                out.replaceSubrange(p.bufferOffset..<p.bufferOffset + data.count, with: data)
            case .success: break
            }
        }
        return out
    }

    /// Reads chunks grouped by chain (one batched request per chain, chains in
    /// parallel); nil for chunks that do not exist.
    func readChunks(_ wanted: [(ChunkID, ChainID)], expectedBytes: Int = 0, using client: StorageClient? = nil) async throws(CisternError) -> [ChunkID: [UInt8]?] {
        let verified = try await readVerifiedChunks(wanted, expectedBytes: expectedBytes, using: client)
        var out: [ChunkID: [UInt8]?] = [:]
        out.reserveCapacity(verified.count)
        for (k, v) in verified { out[k] = .some(v?.data) }
        return out
    }

    /// Like `readChunks`, with each chunk's CRC32C (verified against the server's).
    func readVerifiedChunks(_ wanted: [(ChunkID, ChainID)], expectedBytes: Int = 0, using client: StorageClient? = nil) async throws(CisternError) -> [ChunkID: VerifiedChunk?] {
        var byChain: [ChainID: [ChunkID]] = [:]
        var seen: Set<ChunkID> = []
        for (c, chain) in wanted where seen.insert(c).inserted { byChain[chain, default: []].append(c) }
        let groups = byChain.keys.sorted().map { ($0, byChain[$0]!) }
        let storage = client ?? self.storage
        let results = await runtime.concurrentMap(groups, limit: options.inFlightMax) { (chain, chunks) -> Result<[ChunkID: VerifiedChunk?], StorageClientError> in
            do throws(StorageClientError) {
                let got = try await storage.readBatch(chunks, chain: chain, expectedBytes: expectedBytes)
                var out: [ChunkID: VerifiedChunk?] = [:]
                for (k, v) in got { out[k] = .some(v.map { VerifiedChunk(data: $0.data, checksum: $0.checksum) }) }
                return .success(out)
            } catch {
                return .failure(error)
            }
        }
        var merged: [ChunkID: VerifiedChunk?] = [:]
        for r in results {
            switch r {
            case .success(let m): merged.merge(m) { a, _ in a }
            case .failure(let e): throw .storage(e)
            }
        }
        return merged
    }

    /// Writes a whole file (created if missing) and closes it with its length.
    public func writeFile(_ path: String, _ bytes: [UInt8]) async throws(CisternError) {
        let h = try await open(path, write: true, create: true)
        try await write(h, at: 0, bytes)
        try await close(h, length: UInt64(bytes.count))
    }

    /// Reads a whole file.
    public func readFile(_ path: String) async throws(CisternError) -> [UInt8] {
        let h = try await open(path)
        let data = try await read(h, at: 0, length: Int(h.lengthAtOpen))
        try await close(h, length: nil)
        return data
    }

    // MARK: KV

    /// Opens the KV namespace `name`, creating it with this shape if it does not
    /// exist (an existing one must have the same shape and durability).
    public func kvNamespace(_ name: String, pageBytes: Int, capacityPages: UInt64, files: Int = 4, durability: KVDurability = .cache) async throws(CisternError) -> KVNamespace {
        guard pageBytes > 0, files > 0 else { throw .invalidArgument("page size and file count must be positive") }
        let reply: KVReply
        do {
            reply = try await kvIndex.call(.createNamespace(name: name, pageBytes: UInt32(clamping: pageBytes), capacityPages: capacityPages, files: UInt32(clamping: files), durability: durability))
        } catch {
            throw .kv(error)
        }
        guard case .config(let config) = reply else { throw .kv(.unavailable("unexpected reply \(reply)")) }
        return KVNamespace(client: self, config: config)
    }

    /// Opens an existing KV namespace.
    public func kvNamespace(_ name: String) async throws(CisternError) -> KVNamespace {
        let reply: KVReply
        do {
            reply = try await kvIndex.call(.describe(name: name))
        } catch {
            throw .kv(error)
        }
        guard case .config(let config) = reply else { throw .kv(.unavailable("unexpected reply \(reply)")) }
        return KVNamespace(client: self, config: config)
    }
}

/// A chunk's bytes with their CRC32C, verified against the storage server's record.
struct VerifiedChunk: Sendable {
    var data: [UInt8]
    var checksum: UInt32
}

/// How a byte range of a file maps onto chunks.
public enum FileSplit {
    public struct Piece: Sendable, Hashable {
        public var chunk: ChunkID
        public var chain: ChainID
        public var offsetInChunk: Int
        public var length: Int
        /// Where the piece starts in the caller's buffer.
        public var bufferOffset: Int
    }

    /// The pieces of [offset, offset + length), one per chunk touched, in order.
    public static func pieces(layout: Layout, inode: InodeID, offset: UInt64, length: Int) -> [Piece] {
        guard length > 0, layout.chunkBytes > 0 else { return [] }
        let size = UInt64(layout.chunkBytes)
        var out: [Piece] = []
        var pos = offset
        let end = offset + UInt64(length)
        while pos < end {
            let k = pos / size
            let inChunk = pos % size
            let n = min(size - inChunk, end - pos)
            guard let chain = layout.chain(ofChunk: k) else { break }
            out.append(Piece(chunk: ChunkID(inode: inode.rawValue, index: k), chain: chain, offsetInChunk: Int(inChunk), length: Int(n), bufferOffset: Int(pos - offset)))
            pos += n
        }
        return out
    }
}
