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
