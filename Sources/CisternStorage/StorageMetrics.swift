import CisternRouting
import CoreMetrics
import Synchronization

/// The storage service's I/O metrics (swift-metrics; exported by the server process,
/// no-ops where no metrics backend is bootstrapped, as in the simulator): requests,
/// bytes and refusals; a latency histogram per operation
/// (`cistern_storage_request_duration_seconds{op}`); requests in flight; bytes per
/// chain and direction. Durations come from the runtime's clock.
final class StorageMetrics: Sendable {
    let writes = Counter(label: "cistern_storage_write_requests_total")
    let writeBytes = Counter(label: "cistern_storage_write_bytes_total")
    let reads = Counter(label: "cistern_storage_read_requests_total")
    let readBytes = Counter(label: "cistern_storage_read_bytes_total")
    let failures = Counter(label: "cistern_storage_refused_requests_total")
    let inFlight = Meter(label: "cistern_storage_requests_in_flight")
    /// Histograms by operation name (`op` label).
    let durations: [String: CoreMetrics.Timer]
    /// Bytes per (chain, "read" | "write"), made on first use. Bounded by the chain
    /// table (at most `chainBytesSeriesMax` series; later chains are not broken out).
    private let chainBytes = Mutex<[ChainDirection: Counter]>([:])
    static let chainBytesSeriesMax = 4_096

    struct ChainDirection: Hashable {
        var chain: UInt32
        var write: Bool
    }

    static let operations = ["write", "write_batch", "read", "read_batch", "stat", "resync"]

    init() {
        var d: [String: CoreMetrics.Timer] = [:]
        for op in Self.operations { d[op] = CoreMetrics.Timer(label: "cistern_storage_request_duration_seconds", dimensions: [("op", op)]) }
        durations = d
    }

    /// The `op` label of a request.
    static func operation(_ request: StorageRequest) -> String {
        switch request {
        case .write: return "write"
        case .writeBatch: return "write_batch"
        case .read, .readRange: return "read"
        case .readBatch: return "read_batch"
        case .statChunk: return "stat"
        case .dumpMeta, .dumpMetaPage, .removeChunk, .syncDone: return "resync"
        }
    }

    func started() { inFlight.increment() }

    func record(_ request: StorageRequest, requestBulk: Int, reply: StorageReply, replyBulk: Int, nanoseconds: UInt64) {
        inFlight.decrement()
        durations[Self.operation(request)]?.recordNanoseconds(Int64(clamping: nanoseconds))
        switch request {
        case .write(let w):
            writes.increment()
            writeBytes.increment(by: Int64(requestBulk))
            chain(w.chain, write: true)?.increment(by: Int64(requestBulk))
        case .writeBatch(let w):
            writes.increment()
            writeBytes.increment(by: Int64(requestBulk))
            chain(w.chain, write: true)?.increment(by: Int64(requestBulk))
        case .read(_, let c, _, _), .readBatch(_, let c, _, _), .readRange(_, let c, _, _, _, _):
            reads.increment()
            readBytes.increment(by: Int64(replyBulk))
            chain(c, write: false)?.increment(by: Int64(replyBulk))
        default:
            break
        }
        switch reply {
        case .notServing, .chainVersionMismatch, .failed: failures.increment()
        default: break
        }
    }

    private func chain(_ c: ChainID, write: Bool) -> Counter? {
        let key = ChainDirection(chain: c.rawValue, write: write)
        return chainBytes.withLock { counters in
            if let counter = counters[key] { return counter }
            guard counters.count < Self.chainBytesSeriesMax else { return nil }
            let counter = Counter(label: "cistern_storage_chain_bytes_total", dimensions: [("chain", "\(c.rawValue)"), ("direction", write ? "write" : "read")])
            counters[key] = counter
            return counter
        }
    }
}

/// A node's disk and resync figures, published from the heartbeat loop.
struct NodeStorageMetrics: Sendable {
    let diskTotal = Gauge(label: "cistern_storage_disk_total_bytes")
    let diskFree = Gauge(label: "cistern_storage_disk_free_bytes")
    let targetsInService = Gauge(label: "cistern_storage_targets", dimensions: [("status", "in_service")])
    let targetsOut = Gauge(label: "cistern_storage_targets", dimensions: [("status", "out_of_service")])
    let resyncsRunning = Gauge(label: "cistern_storage_resyncs_running")
    let resyncChunks = Counter(label: "cistern_storage_resync_chunks_total")
    let resyncBytes = Counter(label: "cistern_storage_resync_bytes_total")
    let resyncFailures = Counter(label: "cistern_storage_resync_failures_total")
    let resyncsCompleted = Counter(label: "cistern_storage_resyncs_completed_total")
}

/// The memory tier's figures (`HotPages`), published from the heartbeat loop: bytes
/// held and pinned as gauges, hits, misses and evictions as counters.
struct MemoryTierMetrics: Sendable {
    let bytes = Gauge(label: "cistern_storage_memory_tier_bytes")
    let pinnedBytes = Gauge(label: "cistern_storage_memory_tier_pinned_bytes")
    let hits = Counter(label: "cistern_storage_memory_tier_hits_total")
    let misses = Counter(label: "cistern_storage_memory_tier_misses_total")
    let evictions = Counter(label: "cistern_storage_memory_tier_evictions_total")

    /// Publishes `now`, counting what happened since `before`.
    func publish(_ now: HotPages.Stats, since before: HotPages.Stats?) {
        bytes.record(now.bytes)
        pinnedBytes.record(now.pinnedBytes)
        hits.increment(by: Int64(now.hits - (before?.hits ?? 0)))
        misses.increment(by: Int64(now.misses - (before?.misses ?? 0)))
        evictions.increment(by: Int64(now.evictions - (before?.evictions ?? 0)))
    }
}
