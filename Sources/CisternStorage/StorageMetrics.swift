import CoreMetrics

/// The storage service's I/O metrics (swift-metrics; exported by the server process,
/// no-ops where no metrics backend is bootstrapped, as in the simulator).
struct StorageMetrics: Sendable {
    let writes = Counter(label: "cistern_storage_write_requests_total")
    let writeBytes = Counter(label: "cistern_storage_write_bytes_total")
    let reads = Counter(label: "cistern_storage_read_requests_total")
    let readBytes = Counter(label: "cistern_storage_read_bytes_total")
    let failures = Counter(label: "cistern_storage_refused_requests_total")

    func record(_ request: StorageRequest, requestBulk: Int, reply: StorageReply, replyBulk: Int) {
        switch request {
        case .write, .writeBatch:
            writes.increment()
            writeBytes.increment(by: Int64(requestBulk))
        case .read, .readBatch:
            reads.increment()
            readBytes.increment(by: Int64(replyBulk))
        default:
            break
        }
        switch reply {
        case .notServing, .chainVersionMismatch, .failed: failures.increment()
        default: break
        }
    }
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
