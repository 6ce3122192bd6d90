import CisternAuth
import CisternCore
import CisternKV
import CisternStorage
import CisternWire
import CisternRouting

/// What a put did with one page.
public enum KVPutOutcome: Hashable, Sendable {
    /// The page is stored and visible to readers.
    case stored
    /// The key was already stored: nothing was written (a cheap no-op).
    case existed
    /// No slot could be had: every page is reserved or being read.
    case full
    /// The page was not stored (its write or confirm failed); the reason says why.
    case failed(String)
    /// The page was not stored: a replica's disk is full (the text names it and the
    /// fix). Retrying fails alike until space is freed or storage added.
    case noSpace(String)

    public var isStored: Bool { self == .stored || self == .existed }
}

/// What a get found for one key.
public enum KVGetResult: Hashable, Sendable {
    case found([UInt8])
    /// The key is not stored (never put, deleted, or evicted).
    case missing
    /// The page could not be read now (storage unreachable after retries).
    case failed(String)

    public var bytes: [UInt8]? {
        if case .found(let b) = self { return b }
        return nil
    }
}

/// The answer to a batched exists: each key's presence and how many keys from the
/// first are present in a row (SGLang HiCache's prefix-hit contract).
public struct KVExistsResult: Hashable, Sendable {
    public var present: [Bool]
    public var consecutiveHits: Int
    public init(present: [Bool]) {
        self.present = present
        self.consecutiveHits = present.firstIndex(of: false) ?? present.count
    }
}

/// A KV namespace: fixed-size pages keyed by strings, stored in slots of a few large
/// files (one chunk per slot) and indexed in the metadata store.
///
/// - `put` is two-phase: reserve slots, write the pages, confirm. Readers never see a
///   page before its confirm, and a key already stored is skipped without moving data.
/// - `get` takes a read lease on each slot it looks up: eviction and reuse wait for
///   the lease, and the reader discards a read that outlived it. Every page is checked
///   against the length and CRC32C the index recorded, so a reader never returns
///   mixed bytes.
/// - When the namespace is full, the least recently read pages are evicted.
public struct KVNamespace: Sendable {
    public let client: CisternClient
    public let config: KVNamespaceConfig
    /// Capabilities for the data files' chunks (on a cluster with authentication).
    let capabilities: [Capability]
    public var name: String { config.name }

    init(client: CisternClient, config: KVNamespaceConfig) {
        self.client = client
        self.config = config
        self.capabilities = client.wallet?.capabilities(for: config.files.map(\.inode.rawValue)) ?? []
    }
    public var pageBytes: Int { Int(config.pageBytes) }

    /// Margin kept from a lease or reservation for clock-rate differences and the
    /// reply's flight time.
    static let marginNanoseconds: UInt64 = 1_000_000_000

    func index(_ request: KVRequest) async throws(CisternError) -> KVReply {
        // Every page operation goes through here first: the data files' capabilities
        // go back in the wallet in case it dropped them.
        if !capabilities.isEmpty { client.wallet?.insert(capabilities) }
        do {
            return try await client.kvIndex.call(request)
        } catch {
            throw .kv(error)
        }
    }

    /// Stores pages (at most `KVCacheLimits.batchKeysMax` per call, each at most the
    /// page size). Returns each page's outcome in order.
    public func put(_ pages: [(key: String, bytes: [UInt8])]) async throws(CisternError) -> [KVPutOutcome] {
        let keys = pages.map(\.key)
        do throws(KVCacheError) {
            try KVCacheError.check(keys: keys)
        } catch {
            throw .kv(error)
        }
        for p in pages where p.bytes.count > pageBytes {
            throw .kv(.pageTooLarge(key: p.key, bytes: p.bytes.count, pageBytes: pageBytes))
        }
        if pages.isEmpty { return [] }
        let runtime = client.runtime
        let start = runtime.nowNanoseconds()
        guard case .reserved(let reservations, _) = try await index(.reserve(name: name, keys: keys)), reservations.count == pages.count else {
            throw .kv(.unavailable("the index answered a reserve with the wrong shape"))
        }
        // A write must not land after the reservation could have expired.
        let deadline = start + KVCacheLimits.reservationNanoseconds - Self.marginNanoseconds * 10
        var outcomes = [KVPutOutcome](repeating: .existed, count: pages.count)
        var writes: [(i: Int, slot: PageSlot, token: UInt64)] = []
        for (i, r) in reservations.enumerated() {
            switch r {
            case .exists: outcomes[i] = .existed
            case .full: outcomes[i] = .full
            case .reserved(let slot, let token): writes.append((i, slot, token))
            }
        }
        let config = self.config
        let storage = client.pageStorage
        // Pages grouped by chain, in byte-bounded sub-batches, each one replicated
        // write request; all sub-batches in flight at once (within the client's limit).
        // Per write: nil when written, else the outcome saying why not.
        var written = [KVPutOutcome?](repeating: nil, count: writes.count)
        var byChain: [ChainID: [(k: Int, chunk: ChunkID)]] = [:]
        for (k, w) in writes.enumerated() {
            guard let (chunk, chain) = config.location(of: w.slot) else {
                written[k] = .failed("\(w.slot) is outside the namespace")
                continue
            }
            byChain[chain, default: []].append((k, chunk))
        }
        var subBatches: [(chain: ChainID, items: [(k: Int, chunk: ChunkID)])] = []
        // Fault point: sub-batches of one page each (many small requests in flight).
        let itemsMax = runtime.faultPoint("kv.put.subbatch.one-page") ? 1 : StorageLimits.writeBatchItemsMax
        for chain in byChain.keys.sorted() {
            for group in Self.split(byChain[chain]!, bytes: { pages[writes[$0.k].i].bytes.count }, itemsMax: itemsMax) { subBatches.append((chain, group)) }
        }
        let durable = config.durability == .durable
        let toWrite = writes
        let answers = await runtime.concurrentMap(subBatches, limit: client.options.inFlightMax) { sub -> [KVPutOutcome?] in
            guard runtime.nowNanoseconds() < deadline else { return Array(repeating: .failed("the reservation ran out before the write started"), count: sub.items.count) }
            let results = await storage.writeBatch(sub.items.map { ($0.chunk, pages[toWrite[$0.k].i].bytes) }, chain: sub.chain, durable: durable)
            return results.map { r -> KVPutOutcome? in
                switch r {
                case .success: return nil
                case .failure(.noSpace(let why)): return .noSpace(why)
                case .failure(let e): return .failed("\(e)")
                }
            }
        }
        for (sub, answer) in zip(subBatches, answers) {
            for (item, failure) in zip(sub.items, answer) { written[item.k] = failure }
        }
        var confirms: [KVConfirmItem] = []
        var aborts: [(PageSlot, UInt64)] = []
        for (w, failure) in zip(writes, written) {
            if let failure {
                outcomes[w.i] = failure
                aborts.append((w.slot, w.token))
            } else {
                let bytes = pages[w.i].bytes
                confirms.append(KVConfirmItem(key: pages[w.i].key, slot: w.slot, token: w.token, length: UInt32(bytes.count), checksum: CRC32C.checksum(bytes)))
            }
        }
        if !aborts.isEmpty {
            _ = try? await index(.abort(name: name, slots: aborts.map(\.0), tokens: aborts.map(\.1)))
        }
        if !confirms.isEmpty {
            guard case .confirmed(let done) = try await index(.confirm(name: name, items: confirms)), done.count == confirms.count else {
                throw .kv(.unavailable("the index answered a confirm with the wrong shape"))
            }
            var k = 0
            for (w, failure) in zip(writes, written) where failure == nil {
                switch done[k] {
                case .confirmed: outcomes[w.i] = .stored
                case .exists: outcomes[w.i] = .existed
                case .expired: outcomes[w.i] = .failed("the reservation expired before the confirm; put it again")
                }
                k += 1
            }
        }
        return outcomes
    }

    /// Splits `items` into runs of at most `StorageLimits.subBatchBytesTarget` bytes
    /// (an item larger than that alone) and `StorageLimits.writeBatchItemsMax` items,
    /// in order.
    public static func split<T>(_ items: [T], bytes: (T) -> Int, targetBytes: Int = StorageLimits.subBatchBytesTarget, itemsMax: Int = StorageLimits.writeBatchItemsMax) -> [[T]] {
        var out: [[T]] = []
        var current: [T] = []
        var currentBytes = 0
        for item in items {
            let n = bytes(item)
            if !current.isEmpty && (currentBytes + n > targetBytes || current.count >= itemsMax) {
                out.append(current)
                current = []
                currentBytes = 0
            }
            current.append(item)
            currentBytes += n
        }
        if !current.isEmpty { out.append(current) }
        return out
    }

    /// Reads pages. A page whose bytes do not match the index (a slot reused under a
    /// reader whose lease ran out) is looked up and read again, up to three times.
    public func get(_ keys: [String]) async throws(CisternError) -> [KVGetResult] {
        do throws(KVCacheError) {
            try KVCacheError.check(keys: keys)
        } catch {
            throw .kv(error)
        }
        var results = [KVGetResult?](repeating: nil, count: keys.count)
        let lease = client.options.kvLeaseNanoseconds
        let runtime = client.runtime
        // Keys whose bytes (in the last attempt) did not match what the index recorded.
        var mismatched: Set<Int> = []
        for attempt in 0..<3 {
            let pending = keys.indices.filter { results[$0] == nil }
            if pending.isEmpty { break }
            let start = runtime.nowNanoseconds()
            guard case .located(let found) = try await index(.lookup(name: name, keys: pending.map { keys[$0] }, leaseNanoseconds: lease)), found.count == pending.count else {
                throw .kv(.unavailable("the index answered a lookup with the wrong shape"))
            }
            var wanted: [(ChunkID, ChainID)] = []
            var where_: [Int: (ChunkID, KVPageLocation)] = [:]
            for (j, i) in pending.enumerated() {
                guard let loc = found[j] else {
                    results[i] = .missing
                    continue
                }
                guard let (chunk, chain) = config.location(of: loc.slot) else {
                    results[i] = .failed("\(loc.slot) is outside the namespace")
                    continue
                }
                wanted.append((chunk, chain))
                where_[i] = (chunk, loc)
            }
            if wanted.isEmpty { break }
            let chunks: [ChunkID: VerifiedChunk?]
            do {
                chunks = try await client.readVerifiedChunks(wanted, expectedBytes: pageBytes)
            } catch {
                for i in where_.keys { results[i] = .failed("\(error)") }
                break
            }
            // A read that outlived its lease may have raced a reuse of the slot.
            let finished = runtime.nowNanoseconds()
            mismatched.removeAll()
            for (i, (chunk, loc)) in where_ {
                guard finished + Self.marginNanoseconds <= start + loc.leaseNanoseconds else { continue }
                guard let got = chunks[chunk] ?? nil, got.data.count >= Int(loc.length) else {
                    mismatched.insert(i)
                    continue
                }
                // The usual case: the chunk is the page, and its checksum (verified on
                // arrival) is the one the index recorded.
                if got.data.count == Int(loc.length) {
                    if got.checksum == loc.checksum { results[i] = .found(got.data) } else { mismatched.insert(i) }
                    continue
                }
                let page = Array(got.data.prefix(Int(loc.length)))
                if CRC32C.checksum(page) == loc.checksum { results[i] = .found(page) } else { mismatched.insert(i) }
            }
            if attempt == 2 {
                // `cache`: a crash of the whole chain may have rolled the slot back to
                // older bytes than the index names; the page is lost, not broken.
                for i in where_.keys where results[i] == nil {
                    results[i] = config.durability == .cache && mismatched.contains(i) ? .missing : .failed("the page kept changing under the reader")
                }
            }
        }
        return results.map { $0 ?? .failed("not read") }
    }

    /// Whether each key is stored, and the number of consecutive hits from the first.
    public func exists(_ keys: [String]) async throws(CisternError) -> KVExistsResult {
        guard case .present(let p) = try await index(.exists(name: name, keys: keys)), p.count == keys.count else {
            throw .kv(.unavailable("the index answered exists with the wrong shape"))
        }
        return KVExistsResult(present: p)
    }

    /// Removes keys; returns how many were stored.
    @discardableResult
    public func delete(_ keys: [String]) async throws(CisternError) -> Int {
        guard case .deleted(let n) = try await index(.delete(name: name, keys: keys)) else {
            throw .kv(.unavailable("the index answered delete with the wrong shape"))
        }
        return n
    }

    /// How the namespace's slots are used now.
    public func usage() async throws(CisternError) -> KVUsage {
        guard case .usage(let u) = try await index(.usage(name: name)) else {
            throw .kv(.unavailable("the index answered usage with the wrong shape"))
        }
        return u
    }
}
