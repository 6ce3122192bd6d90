import CURingShim
import Synchronization

/// One io_uring instance, behind the C shim.
///
/// Not thread-safe: a ring is used by one thread at a time. `URingCache` guarantees this
/// by handing a ring to exactly one batch until the batch gives it back.
final class URing: @unchecked Sendable {
    let pointer: OpaquePointer
    /// Submission-queue entries; the batch runner keeps at most this many operations in
    /// flight, so the completion queue (twice as large) never overflows.
    let entries: Int
    /// Set when a submit failed for good: operations may still be in the kernel (their
    /// buffers were deliberately leaked), so the ring is destroyed, never reused.
    var broken = false

    private init(pointer: OpaquePointer) {
        self.pointer = pointer
        self.entries = Int(cistern_ring_entries(pointer))
    }

    /// A new ring with `entries` submission entries, or the error number.
    static func make(entries: UInt32) -> Result<URing, URingCreateError> {
        var raw: OpaquePointer? = nil
        let rc = cistern_ring_create(entries, &raw)
        guard rc == 0, let raw else { return .failure(URingCreateError(code: rc < 0 ? -rc : rc)) }
        return .success(URing(pointer: raw))
    }

    /// Whether the kernel supports the READ, WRITE, FSYNC and FALLOCATE operations.
    var supportsDiskOperations: Bool { cistern_ring_supports_disk_ops(pointer) == 1 }

    deinit {
        cistern_ring_destroy(pointer)
    }
}

/// Why a ring could not be created: the error number of `io_uring_queue_init`.
struct URingCreateError: Error {
    let code: Int32
}

/// The rings of one `IOUringDisk`: each batch checks one out (creating it when none is
/// idle), uses it alone on its thread-pool thread, and checks it back in. Concurrent
/// batches therefore never share a ring and never wait for each other; at most as many
/// rings exist as batches run at once (bounded by the thread pool's threads), and at
/// most `maxIdle` are kept between batches.
final class URingCache: Sendable {
    let entries: UInt32
    let maxIdle: Int
    private let idle = Mutex<[URing]>([])

    init(entries: UInt32, maxIdle: Int) {
        self.entries = entries
        self.maxIdle = maxIdle
    }

    func checkOut() -> Result<URing, URingCreateError> {
        if let ring = idle.withLock({ $0.popLast() }) { return .success(ring) }
        return URing.make(entries: entries)
    }

    func checkIn(_ ring: URing) {
        if ring.broken { return }
        idle.withLock { rings in
            if rings.count < maxIdle { rings.append(ring) }
        }
    }
}
