import CisternAuth
import CisternCore
import CisternMgmtd
import CisternRouting
import CisternWire

/// Why a chunk operation gave up.
public enum StorageClientError: Error, Equatable, Sendable, CustomStringConvertible {
    case exhausted(attempts: Int, lastError: String)
    case unknownChain(ChainID)
    /// A replica of the chain has no room for the write (not retried: it would fail
    /// again until space is freed); the text names the target, node, path and fix.
    case noSpace(String)
    /// A storage node refused the request for want of a valid capability (not
    /// retried): the text names the inode and the fix.
    case forbidden(String)
    /// The replica does not know the request (it runs an older version): not
    /// retried; the caller uses an older request instead.
    case unsupported(String)

    public var description: String {
        switch self {
        case .exhausted(let n, let e): return "gave up after \(n) attempts (last: \(e)); the chain may have no serving replica"
        case .unknownChain(let c): return "\(c) is not in the routing information; is the chain table created?"
        case .noSpace(let why): return why
        case .forbidden(let why): return "storage refused: \(why)"
        case .unsupported(let why): return why
        }
    }
}

/// Reads and writes chunks on chains: writes go to the head (retried under one
/// request tag, so a retried write is applied once), reads to any SERVING replica
/// (another one after a failure or a corrupt copy). Routing comes from the cluster
/// manager and is refreshed whenever a node refuses a request.
public actor StorageClient {
    public nonisolated let unownedExecutor: UnownedSerialExecutor
    let runtime: any Runtime
    let transport: any Transport
    let mgmtd: MgmtdClient
    let clientID: UInt32
    /// Channels free for the next write, and each channel's last sequence number.
    /// A write holds a channel from its first try to its last, so concurrent writes
    /// never share one (the storage nodes' dedup keeps one request per channel).
    private var freeChannels: [UInt32] = []
    private var channelSequence: [UInt64] = []
    private var rng: DeterministicRandom
    /// Attempts per operation (refreshing routing between them) and the waits before
    /// each retry: 40 ms doubling to 320 ms.
    public var retry = RetryPolicy(attemptsMax: 80, firstDelayNanoseconds: 40_000_000, delayNanosecondsMax: 320_000_000)
    public var attemptsMax: Int {
        get { retry.attemptsMax }
        set { retry.attemptsMax = newValue }
    }
    public var timeoutNanoseconds: UInt64 = 1_000_000_000
    /// Requests in flight to one storage node at most; more wait their turn.
    public nonisolated let limiter: InFlightLimiter<NodeID>
    /// The capabilities requests carry (a client's, from the metadata servers, or a
    /// server's service capability); nil on a cluster without authentication.
    public nonisolated let wallet: CapabilityWallet?

    /// Sets how many times a request is tried before giving up.
    public func setAttempts(_ n: Int) { attemptsMax = max(1, n) }

    /// Sets how long one request may take before it is retried.
    public func setTimeout(_ nanoseconds: UInt64) { timeoutNanoseconds = max(1_000_000, nanoseconds) }

    public init(runtime: any Runtime, transport: any Transport, mgmtd: MgmtdClient, clientID: UInt32, perNodeInFlightMax: Int = 32, wallet: CapabilityWallet? = nil) {
        self.wallet = wallet
        self.limiter = InFlightLimiter(perKeyMax: max(1, perNodeInFlightMax))
        self.runtime = runtime
        self.transport = transport
        self.mgmtd = mgmtd
        self.clientID = clientID
        self.rng = runtime.random("storage.client")
        self.unownedExecutor = runtime.makeActorExecutor()
    }

    private func chain(_ id: ChainID, refresh: Bool) async -> Chain? {
        let known = await mgmtd.routing
        if refresh || known == nil { await mgmtd.refreshRouting() }
        return await mgmtd.routing?.chain(id)
    }

    /// One call to a storage node, within the per-node in-flight limit, with the
    /// capabilities for the chunks it names. A `forbidden` answer is thrown as
    /// `StorageClientError.forbidden` (retrying cannot help).
    private func send(_ node: NodeID, _ request: StorageRequest, bulk: [UInt8] = []) async throws -> Message {
        let trailer = wallet.map { AuthTrailer(capabilities: $0.capabilities(for: request.inodes)) }
        let message = request.message(bulk: bulk, trailer: trailer)
        await limiter.acquire(node)
        defer { limiter.release(node) }
        let response = try await Self.unsupportedIfUnknown(node, request) {
            try await transport.call(node, service: storageService, message, timeoutNanoseconds: timeoutNanoseconds)
        }
        if response.header.first == 16, case .forbidden(let why)? = try? StorageReply(wireBytes: response.header) {
            throw StorageClientError.forbidden(why)
        }
        return response
    }

    /// Runs `call`; a replica that did not know the request (an older version)
    /// becomes `unsupported`, which is not retried.
    static func unsupportedIfUnknown(_ node: NodeID, _ request: StorageRequest, _ call: () async throws -> Message) async throws -> Message {
        do {
            return try await call()
        } catch {
            if case TransportError.remote(_, let text) = error, text.contains("unknown StorageRequest tag") {
                throw StorageClientError.unsupported("\(node) does not know storage request \(request.method) (it runs an older version): \(text)")
            }
            throw error
        }
    }

    /// A random SERVING replica of `chain`, preferring ones that have not failed this
    /// request yet (reads fail over to other replicas).
    private func pickReplica(_ chain: Chain, avoiding avoid: Set<TargetID>) -> TargetID? {
        let serving = chain.servingTargets
        guard !serving.isEmpty else { return nil }
        let fresh = serving.filter { !avoid.contains($0) }
        let pool = fresh.isEmpty ? serving : fresh
        return pool[Int.random(in: 0..<pool.count, using: &rng)]
    }

    private func backoff(_ attempt: Int) async {
        await retry.wait(beforeAttempt: attempt, on: runtime)
    }

    /// A channel no other write holds (a new one when all are taken); the caller
    /// puts it back in `freeChannels` when its write is done.
    private func takeChannel() -> UInt32 {
        if let c = freeChannels.popLast() { return c }
        channelSequence.append(0)
        return UInt32(channelSequence.count - 1)
    }

    /// Writes `data` at `offset` of `chunk`; returns the committed version. `durable`:
    /// acknowledged once every replica fsynced it; otherwise once every replica holds
    /// it (`cache` durability: a crash of every replica at once may lose it).
    public func write(_ chunk: ChunkID, chain id: ChainID, offset: Int = 0, _ data: [UInt8], durable: Bool = true) async throws(StorageClientError) -> UInt64 {
        let channel = takeChannel()
        defer { freeChannels.append(channel) }
        channelSequence[Int(channel)] += 1
        let tag = ClientTag(client: clientID, channel: channel, sequence: channelSequence[Int(channel)])
        var last = "no attempt"
        var refresh = false
        for attempt in 0..<attemptsMax {
            if attempt > 0 { await backoff(attempt) }
            guard let chain = await chain(id, refresh: refresh) else {
                last = "\(id) unknown"
                refresh = true
                continue
            }
            refresh = true
            let routing = await mgmtd.routing
            guard let head = chain.writeTargets.first, head.state == .serving, let node = routing?.target(head.target)?.node else {
                last = "\(chain) has no serving head"
                continue
            }
            let args = WriteArgs(target: head.target, chain: id, chainVersion: chain.version, chunk: chunk, offset: offset, tag: tag, durable: durable)
            let reply: StorageReply
            do {
                let response = try await send(node, .write(args), bulk: data)
                reply = try StorageReply(wireBytes: response.header)
            } catch let e as StorageClientError {
                throw e
            } catch {
                last = "\(head.target): \(error)"
                continue
            }
            if case .written(let v) = reply { return v }
            if case .noSpace(let why) = reply { throw .noSpace(why) }
            last = "\(head.target): \(reply)"
        }
        throw .exhausted(attempts: attemptsMax, lastError: last)
    }

    /// Writes several chunks of one chain, each replaced by its bytes, as one
    /// replicated request to the head (at most `StorageLimits.writeBatchItemsMax`
    /// chunks and `StorageLimits.writeBatchBytesMax` bytes; callers split bigger
    /// batches). Items the chain did not write are sent again, under a new request
    /// number, until every item is written or the attempts run out. One result per
    /// item, in order: the committed version or why it was not written.
    public func writeBatch(_ items: [(chunk: ChunkID, data: [UInt8])], chain id: ChainID, durable: Bool) async -> [Result<UInt64, StorageClientError>] {
        if items.isEmpty { return [] }
        let channel = takeChannel()
        defer { freeChannels.append(channel) }
        var results = [Result<UInt64, StorageClientError>?](repeating: nil, count: items.count)
        var last = [String](repeating: "no attempt", count: items.count)
        var pending = Array(items.indices)
        var newRequest = true
        var refresh = false
        for attempt in 0..<attemptsMax where !pending.isEmpty {
            if attempt > 0 { await backoff(attempt) }
            // A retry of the same items keeps its number, so a head that applied it
            // answers instead of applying it again; a smaller set is a new request.
            if newRequest {
                channelSequence[Int(channel)] += 1
                newRequest = false
            }
            let tag = ClientTag(client: clientID, channel: channel, sequence: channelSequence[Int(channel)])
            guard let chain = await chain(id, refresh: refresh) else {
                for i in pending { last[i] = "\(id) unknown" }
                refresh = true
                continue
            }
            refresh = true
            let routing = await mgmtd.routing
            guard let head = chain.writeTargets.first, head.state == .serving, let node = routing?.target(head.target)?.node else {
                for i in pending { last[i] = "\(chain) has no serving head" }
                continue
            }
            let args = WriteBatchArgs(target: head.target, chain: id, chainVersion: chain.version, tag: tag, durable: durable,
                                      items: pending.map { WriteBatchItem(chunk: items[$0].chunk, length: items[$0].data.count) })
            var bulk: [UInt8] = []
            bulk.reserveCapacity(pending.reduce(0) { $0 + items[$1].data.count })
            for i in pending { bulk += items[i].data }
            do {
                let response = try await send(node, .writeBatch(args), bulk: bulk)
                let reply = try StorageReply(wireBytes: response.header)
                guard case .batchWritten(let answers) = reply, answers.count == pending.count else {
                    for i in pending { last[i] = "\(head.target): \(reply)" }
                    // A batch answer for another set of items (remembered by a replica
                    // that received part of this request): ask again under a new number.
                    if case .batchWritten = reply { newRequest = true }
                    continue
                }
                for (i, answer) in zip(pending, answers) {
                    switch answer {
                    case .written(let v): results[i] = .success(v)
                    case .noSpace(let why): results[i] = .failure(.noSpace(why))
                    default: last[i] = "\(head.target): \(answer)"
                    }
                }
                pending = pending.filter { results[$0] == nil }
                newRequest = true
            } catch let e as StorageClientError {
                for i in pending { results[i] = .failure(e) }
                pending = []
            } catch {
                for i in pending { last[i] = "\(head.target): \(error)" }
            }
        }
        for i in pending { results[i] = .failure(.exhausted(attempts: attemptsMax, lastError: last[i])) }
        return results.map { $0! }
    }

    /// Reads several chunks of one chain in batched requests to SERVING replicas:
    /// groups of at most `StorageLimits.batchChunksMax` chunks and, given the chunks'
    /// expected size, about `StorageLimits.subBatchBytesTarget` bytes, all in flight at
    /// once, each to a replica drawn at random (so a batch spreads over the chain).
    /// Chunks a replica could not serve (a write in flight, a corrupt copy) are read
    /// again one by one. The result has an entry per chunk: nil when it does not exist.
    /// Each chunk's bytes come with their CRC32C, already verified against the
    /// server's record, so callers need not compute it again.
    public func readBatch(_ chunks: [ChunkID], chain id: ChainID, expectedBytes: Int = 0) async throws(StorageClientError) -> [ChunkID: (version: UInt64, data: [UInt8], checksum: UInt32)?] {
        var result: [ChunkID: (version: UInt64, data: [UInt8], checksum: UInt32)?] = [:]
        if let chain = await chain(id, refresh: false), !chunks.isEmpty {
            let routing = await mgmtd.routing
            var plans: [(node: NodeID, request: StorageRequest, chunks: [ChunkID])] = []
            for range in Self.readGroups(count: chunks.count, expectedBytes: expectedBytes) {
                let group = Array(chunks[range])
                guard let target = pickReplica(chain, avoiding: []), let node = routing?.target(target)?.node else { continue }
                plans.append((node, StorageRequest.readBatch(target: target, chain: id, chainVersion: chain.version, chunks: group), group))
            }
            let responses = await runtime.concurrentMap(plans, limit: Self.readRequestsInFlightMax) { plan in
                try? await self.send(plan.node, plan.request)
            }
            for (plan, response) in zip(plans, responses) {
                guard let response, let reply = try? StorageReply(wireBytes: response.header), case .batch(let items) = reply,
                      items.count == plan.chunks.count, items.reduce(0, { $0 + $1.length }) == response.bulk.count
                else { continue }
                var offset = 0
                for item in items {
                    switch item.status {
                    case .data:
                        let data = items.count == 1 ? response.bulk : Array(response.bulk[offset..<offset + item.length])
                        offset += item.length
                        if CRC32C.checksum(data) == item.checksum { result[item.chunk] = .some((item.version, data, item.checksum)) }
                    case .notFound:
                        result[item.chunk] = .some(nil)
                    default:
                        break
                    }
                }
            }
        }
        for chunk in chunks where result[chunk] == nil {
            result[chunk] = .some(try await read(chunk, chain: id).map { ($0.version, $0.data, CRC32C.checksum($0.data)) })
        }
        return result
    }

    /// How `readBatch` splits `count` chunks of about `expectedBytes` each (0: unknown):
    /// consecutive ranges of at most `StorageLimits.batchChunksMax` chunks and about
    /// `StorageLimits.subBatchBytesTarget` bytes (at least one chunk each).
    public static func readGroups(count: Int, expectedBytes: Int) -> [Range<Int>] {
        let perRequest = expectedBytes > 0
            ? max(1, min(StorageLimits.batchChunksMax, StorageLimits.subBatchBytesTarget / expectedBytes))
            : StorageLimits.batchChunksMax
        return stride(from: 0, to: count, by: perRequest).map { $0..<min($0 + perRequest, count) }
    }

    /// Batched read requests of one `readBatch` in flight at once (the per-node limit
    /// applies as well).
    public static let readRequestsInFlightMax = 16

    /// What one replica's answer means: a result, or a reason to try again.
    private enum ReplicaAnswer<T> {
        case done(T)
        case retry(String)
    }

    /// Sends `request` to a SERVING replica of chain `id` until `answer` accepts a
    /// reply, preferring replicas that have not failed this request yet, refreshing
    /// routing and backing off between tries.
    private func fromServingReplica<T>(
        _ id: ChainID, request: (TargetID, Chain) -> StorageRequest, answer: (Message) throws -> ReplicaAnswer<T>
    ) async throws(StorageClientError) -> T {
        var last = "no attempt"
        var avoid: Set<TargetID> = []
        var refresh = false
        for attempt in 0..<attemptsMax {
            if attempt > 0 { await backoff(attempt) }
            guard let chain = await chain(id, refresh: refresh) else {
                last = "\(id) unknown"
                refresh = true
                continue
            }
            refresh = true
            guard let target = pickReplica(chain, avoiding: avoid) else {
                last = "\(chain) has no serving replica"
                continue
            }
            avoid.insert(target)
            let routing = await mgmtd.routing
            guard let node = routing?.target(target)?.node else { continue }
            do {
                switch try answer(try await send(node, request(target, chain))) {
                case .done(let value): return value
                case .retry(let why): last = "\(target): \(why)"
                }
            } catch let e as StorageClientError {
                throw e
            } catch {
                last = "\(target): \(error)"
            }
        }
        throw .exhausted(attempts: attemptsMax, lastError: last)
    }

    /// The committed length of `chunk`, or nil if it does not exist (no data moves).
    public func length(of chunk: ChunkID, chain id: ChainID) async throws(StorageClientError) -> Int? {
        try await fromServingReplica(id, request: { target, chain in
            StorageRequest.statChunk(target: target, chain: id, chainVersion: chain.version, chunk: chunk)
        }) { response -> ReplicaAnswer<Int?> in
            switch try StorageReply(wireBytes: response.header) {
            case .chunkStat(_, let length): return .done(length)
            case .notFound: return .done(nil)
            case let other: return .retry("\(other)")
            }
        }
    }

    /// Up to `length` bytes at `offset` of the committed content of `chunk` (fewer at
    /// its end; none past it), or nil if the chunk does not exist.
    public func readRange(_ chunk: ChunkID, chain id: ChainID, offset: Int, length: Int) async throws(StorageClientError) -> [UInt8]? {
        let result: Result<[UInt8]?, StorageClientError>
        do throws(StorageClientError) {
            result = .success(try await rangeFromServingReplica(chunk, chain: id, offset: offset, length: length))
        } catch {
            result = .failure(error)
        }
        if case .failure(.unsupported) = result { rangeReadsUnsupported = true }
        return try result.get()
    }

    /// Whether a replica refused a ranged read as unknown (servers older than
    /// this client): callers then read whole chunks.
    public private(set) var rangeReadsUnsupported = false

    private func rangeFromServingReplica(_ chunk: ChunkID, chain id: ChainID, offset: Int, length: Int) async throws(StorageClientError) -> [UInt8]? {
        try await fromServingReplica(id, request: { target, chain in
            StorageRequest.readRange(target: target, chain: id, chainVersion: chain.version, chunk: chunk,
                                     offset: UInt32(clamping: offset), length: UInt32(clamping: length))
        }) { response -> ReplicaAnswer<[UInt8]?> in
            let reply = try StorageReply(wireBytes: response.header)
            switch reply {
            case .data(_, let checksum):
                guard response.bulk.count <= length, CRC32C.checksum(response.bulk) == checksum else { return .retry("data failed its checksum in transit") }
                return .done(response.bulk)
            case .notFound: return .done(nil)
            default: return .retry("\(reply)")
            }
        }
    }

    /// The committed content of `chunk` and its version, or nil if it does not exist.
    public func read(_ chunk: ChunkID, chain id: ChainID) async throws(StorageClientError) -> (version: UInt64, data: [UInt8])? {
        try await fromServingReplica(id, request: { target, chain in
            StorageRequest.read(target: target, chain: id, chainVersion: chain.version, chunk: chunk)
        }) { response -> ReplicaAnswer<(version: UInt64, data: [UInt8])?> in
            let reply = try StorageReply(wireBytes: response.header)
            switch reply {
            case .data(let v, let checksum):
                guard CRC32C.checksum(response.bulk) == checksum else { return .retry("data failed its checksum in transit") }
                return .done((v, response.bulk))
            case .notFound: return .done(nil)
            default: return .retry("\(reply)")
            }
        }
    }
}
