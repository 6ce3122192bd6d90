import CisternPOSIX
import CURingShim
import CisternCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Runs one `IOUringDisk` batch on one ring, on one thread-pool thread.
///
/// Ordering: the batch is split into dependency-ordered waves (no `IOSQE_IO_LINK`). An
/// operation goes into the first wave after every earlier operation of the batch on the
/// same file (same device and inode, whatever the handle) that it conflicts with:
/// - `fsync`, `fallocate` and `truncate` conflict with everything on the file (barriers);
/// - two reads never conflict;
/// - two writes conflict when their byte ranges overlap;
/// - a read and a write conflict when the write ends after the read starts (the write
///   may change the bytes the read sees, or the file size that ends it).
/// Each wave's operations are independent, so all of them are prepared, submitted with
/// one `io_uring_enter` (in chunks of the ring's size when the wave is larger) and
/// reaped; short reads and writes are resubmitted for their remainder until done or end
/// of file, like a `pread`/`pwrite` loop. The next wave starts when every operation of
/// the current one has completed, so each operation observes the earlier ones it
/// conflicts with, exactly as if the batch ran one operation at a time.
///
/// Links were not used because a short read (any read reaching end of file) breaks a
/// link chain and cancels the rest of it, which would need the same resubmission
/// machinery plus cancellation bookkeeping.
///
/// Buffers: each read and write of a wave gets its own heap buffer (write bytes are
/// copied in, read bytes copied out), freed when the wave completes. `truncate` runs
/// `ftruncate(2)` synchronously (it is not an io_uring operation on 5.x kernels).
///
/// Direct I/O: when the file has an `O_DIRECT` descriptor, a read at a 4 KiB-aligned
/// offset and a write whose offset and length are 4 KiB multiples use it, with a
/// 4 KiB-aligned buffer; a read then asks for its length rounded up to 4 KiB and keeps
/// the bytes asked for. A direct transfer that comes back short continues through the
/// page cache (its remainder is no longer aligned), and one the file system refuses
/// (`EINVAL`) is done again through the page cache.
struct IOUringBatch {
    private let ops: [DiskOp]
    private let descriptors: [DiskFileDescriptor?]
    private let root: String
    private var results: [Result<DiskCompletion, DiskError>?]

    /// Runs `ops` (whose handles were resolved to `descriptors`; nil is a bad handle)
    /// and returns one result per operation, in order.
    static func run(
        _ ops: [DiskOp], descriptors: [DiskFileDescriptor?], root: String, rings: URingCache
    ) -> [Result<DiskCompletion, DiskError>] {
        var batch = IOUringBatch(ops: ops, descriptors: descriptors, root: root)
        batch.execute(rings: rings)
        return batch.results.map { $0 ?? .failure(.ioError(path: "", detail: "internal error: operation not run")) }
    }

    private init(ops: [DiskOp], descriptors: [DiskFileDescriptor?], root: String) {
        self.ops = ops
        self.descriptors = descriptors
        self.root = root
        self.results = Array(repeating: nil, count: ops.count)
        for (index, descriptor) in descriptors.enumerated() where descriptor == nil {
            results[index] = .failure(.badHandle(DiskNames.file(of: ops[index])))
        }
    }

    private mutating func execute(rings: URingCache) {
        let waves = Self.waves(ops, descriptors)
        if waves.isEmpty { return }
        let ring: URing
        switch rings.checkOut() {
        case .success(let checkedOut): ring = checkedOut
        case .failure(let error):
            failRemaining(.unavailable(reason: IOUringProbe.reason(for: error.code)))
            return
        }
        defer { rings.checkIn(ring) }
        for wave in waves {
            var transfers = prepare(wave)
            if transfers.isEmpty { continue }
            if let code = Self.drive(ring, &transfers, root: root, finish: { transfer, result in
                results[transfer.op] = result
            }) {
                // The ring failed: operations may still be in the kernel, so their
                // buffers are leaked rather than freed, and the ring is discarded.
                ring.broken = true
                for transfer in transfers where results[transfer.op] == nil {
                    results[transfer.op] = .failure(
                        .ioError(path: transfer.descriptor.path, detail: "io_uring_enter: \(POSIXErrno.describe(code))"))
                }
                failRemainingWithPath { "io_uring_enter: \(POSIXErrno.describe(code))" }
                return
            }
            for transfer in transfers { transfer.buffer?.deallocate() }
        }
    }

    private mutating func failRemaining(_ error: DiskError) {
        for index in results.indices where results[index] == nil { results[index] = .failure(error) }
    }

    private mutating func failRemainingWithPath(_ detail: () -> String) {
        for index in results.indices where results[index] == nil {
            results[index] = .failure(.ioError(path: descriptors[index]?.path ?? DiskNames.file(of: ops[index]).path, detail: detail()))
        }
    }

    // MARK: - Waves

    /// What an operation touches, for ordering.
    private enum Access {
        /// The whole file (fsync, fallocate, truncate).
        case barrier
        /// Bytes `[lo, hi)`; empty for operations that move no bytes.
        case range(lo: UInt64, hi: UInt64, isWrite: Bool)
    }

    /// The ordering state of one file within a batch.
    private struct FileOrder {
        private struct Span {
            let lo: UInt64
            let hi: UInt64
            let isWrite: Bool
            let wave: Int
        }

        /// Spans remembered since the last barrier before they are folded into one
        /// (bounds the cost of placing an operation; folding only orders more).
        private static let spanLimit = 64

        /// The wave of the last barrier (or of the folded spans); -1 if none.
        private var barrier = -1
        private var spans: [Span] = []
        private var latest = -1

        /// Places the next operation on this file and returns its wave.
        mutating func place(_ access: Access) -> Int {
            switch access {
            case .barrier:
                let wave = max(barrier, latest) + 1
                barrier = wave
                latest = wave
                spans.removeAll(keepingCapacity: true)
                return wave
            case .range(let lo, let hi, let isWrite):
                var wave = barrier + 1
                guard lo < hi else { return wave }
                for span in spans where Self.conflicts(span, lo: lo, hi: hi, isWrite: isWrite) {
                    wave = max(wave, span.wave + 1)
                }
                spans.append(Span(lo: lo, hi: hi, isWrite: isWrite, wave: wave))
                latest = max(latest, wave)
                if spans.count > Self.spanLimit {
                    barrier = latest
                    spans.removeAll(keepingCapacity: true)
                }
                return wave
            }
        }

        private static func conflicts(_ span: Span, lo: UInt64, hi: UInt64, isWrite: Bool) -> Bool {
            switch (span.isWrite, isWrite) {
            case (false, false): return false
            case (true, true): return span.lo < hi && lo < span.hi
            case (true, false): return span.hi > lo  // earlier write, later read
            case (false, true): return hi > span.lo  // earlier read, later write
            }
        }
    }

    /// The operations with open handles, grouped into waves (see the type's comment).
    private static func waves(_ ops: [DiskOp], _ descriptors: [DiskFileDescriptor?]) -> [[Int]] {
        var files: [DiskFileKey: FileOrder] = [:]
        var waves: [[Int]] = []
        for (index, op) in ops.enumerated() {
            guard let descriptor = descriptors[index] else { continue }
            let wave = files[descriptor.key, default: FileOrder()].place(access(of: op))
            while waves.count <= wave { waves.append([]) }
            waves[wave].append(index)
        }
        return waves
    }

    private static func access(of op: DiskOp) -> Access {
        switch op {
        case .fsync, .fallocate, .truncate:
            return .barrier
        case .read(_, let offset, let length):
            return range(offset, length, isWrite: false)
        case .write(_, let offset, let bytes):
            return range(offset, bytes.count, isWrite: true)
        }
    }

    /// The byte range of a read or write, empty when the operation is invalid (it will
    /// fail without touching the file) or moves no bytes.
    private static func range(_ offset: UInt64, _ count: Int, isWrite: Bool) -> Access {
        guard count > 0, count <= DiskLimits.ioBytesMax, DiskNames.fileOffset(offset, plus: count) != nil else {
            return .range(lo: 0, hi: 0, isWrite: isWrite)
        }
        return .range(lo: offset, hi: offset + UInt64(count), isWrite: isWrite)
    }

    // MARK: - One wave

    /// One operation going through the ring.
    fileprivate struct Transfer {
        enum Kind {
            case read
            case write
            case fsync
            case fallocate
        }

        let op: Int
        let kind: Kind
        let descriptor: DiskFileDescriptor
        let offset: UInt64
        /// Bytes to read or write, or to reserve (fallocate).
        let length: UInt64
        /// The read or write buffer (nil for fsync and fallocate).
        let buffer: UnsafeMutableRawPointer?
        /// Bytes read or written so far.
        var done: Int = 0
        /// Whether the transfer goes through the file's `O_DIRECT` descriptor.
        var direct = false
        /// The bytes the caller asked for (a direct read asks for more, rounded up).
        var requested: Int = 0

        var fd: Int32 { direct ? descriptor.directFD : descriptor.fd }
    }

    /// `count` rounded up to the direct I/O alignment.
    private static func roundedUp(_ count: Int) -> Int {
        let a = DiskFileDescriptor.directAlignmentBytes
        return (count + a - 1) / a * a
    }

    private static func aligned(_ value: UInt64) -> Bool {
        value % UInt64(DiskFileDescriptor.directAlignmentBytes) == 0
    }

    /// Checks the wave's operations as `POSIXDisk` does (poisoned handle first, then
    /// limits), finishes those that need no ring (errors, empty transfers, truncate),
    /// and returns the rest with their buffers allocated.
    private mutating func prepare(_ wave: [Int]) -> [Transfer] {
        var transfers: [Transfer] = []
        transfers.reserveCapacity(wave.count)
        for index in wave {
            guard let descriptor = descriptors[index] else { continue }
            let path = descriptor.path
            if let reason = descriptor.poisoned {
                results[index] = .failure(.ioError(path: path, detail: reason))
                continue
            }
            switch ops[index] {
            case .read(_, let offset, let length):
                if length > DiskLimits.ioBytesMax {
                    results[index] = .failure(.tooLarge(what: "read", bytes: length, limitBytes: DiskLimits.ioBytesMax))
                } else if length < 0 {
                    results[index] = .failure(
                        .tooLarge(what: "read of negative length", bytes: length, limitBytes: DiskLimits.ioBytesMax))
                } else if DiskNames.fileOffset(offset, plus: length) == nil {
                    results[index] = .failure(
                        .ioError(path: path, detail: "read at offset \(offset) is beyond the largest file offset"))
                } else if length == 0 {
                    results[index] = .success(.read([]))
                } else {
                    let direct = descriptor.directFD >= 0 && Self.aligned(offset)
                    let size = direct ? Self.roundedUp(length) : length
                    let buffer = UnsafeMutableRawPointer.allocate(
                        byteCount: size, alignment: direct ? DiskFileDescriptor.directAlignmentBytes : 64)
                    var transfer = Transfer(
                        op: index, kind: .read, descriptor: descriptor, offset: offset, length: UInt64(size), buffer: buffer)
                    transfer.direct = direct
                    transfer.requested = length
                    transfers.append(transfer)
                }

            case .write(_, let offset, let bytes):
                if bytes.count > DiskLimits.ioBytesMax {
                    results[index] = .failure(.tooLarge(what: "write", bytes: bytes.count, limitBytes: DiskLimits.ioBytesMax))
                } else if DiskNames.fileOffset(offset, plus: bytes.count) == nil {
                    results[index] = .failure(
                        .ioError(path: path, detail: "write at offset \(offset) is beyond the largest file offset"))
                } else if bytes.isEmpty {
                    results[index] = .success(.done)
                } else {
                    let direct = descriptor.directFD >= 0 && Self.aligned(offset) && Self.aligned(UInt64(bytes.count))
                    let buffer = UnsafeMutableRawPointer.allocate(
                        byteCount: bytes.count, alignment: direct ? DiskFileDescriptor.directAlignmentBytes : 64)
                    bytes.withUnsafeBytes { source in
                        buffer.copyMemory(from: source.baseAddress!, byteCount: source.count)
                    }
                    var transfer = Transfer(
                        op: index, kind: .write, descriptor: descriptor, offset: offset, length: UInt64(bytes.count),
                        buffer: buffer)
                    transfer.direct = direct
                    transfers.append(transfer)
                }

            case .fsync:
                transfers.append(Transfer(op: index, kind: .fsync, descriptor: descriptor, offset: 0, length: 0, buffer: nil))

            case .fallocate(_, let offset, let length):
                if length == 0 {
                    results[index] = .success(.done)
                } else if let start = Int64(exactly: offset), let count = Int64(exactly: length), start <= Int64.max - count {
                    transfers.append(Transfer(
                        op: index, kind: .fallocate, descriptor: descriptor, offset: offset, length: length, buffer: nil))
                } else {
                    results[index] = .failure(.ioError(
                        path: path, detail: "fallocate of \(length) bytes at \(offset) is beyond the largest file offset"))
                }

            case .truncate(_, let length):
                results[index] = Self.truncate(descriptor, to: length, root: root)
            }
        }
        return transfers
    }

    /// `ftruncate(2)`, synchronously, retrying on `EINTR`.
    private static func truncate(
        _ descriptor: DiskFileDescriptor, to length: UInt64, root: String
    ) -> Result<DiskCompletion, DiskError> {
        guard let size = off_t(exactly: length) else {
            return .failure(
                .ioError(path: descriptor.path, detail: "truncate to \(length) bytes is beyond the largest file offset"))
        }
        var rc: Int32
        repeat { rc = ftruncate(descriptor.fd, size) } while rc != 0 && errno == EINTR
        if rc != 0 {
            return .failure(POSIXErrno.error(
                POSIXErrno.current, call: "ftruncate", path: descriptor.path, root: root, neededBytes: length))
        }
        return .success(.done)
    }

    /// Runs `transfers` through `ring` until each has finished (`finish` is called once
    /// per transfer with its result). Keeps at most `ring.entries` operations in flight.
    /// Returns nil, or the error number of an `io_uring_enter` failure that ended the
    /// wave early (transfers still in flight may then be in the kernel).
    private static func drive(
        _ ring: URing, _ transfers: inout [Transfer], root: String,
        finish: (Transfer, Result<DiskCompletion, DiskError>) -> Void
    ) -> Int32? {
        let capacity = max(ring.entries, 1)
        var queue = Array(transfers.indices)
        var head = 0
        var inflight = 0
        var completions = [cistern_completion](repeating: cistern_completion(), count: capacity)
        while head < queue.count || inflight > 0 {
            while inflight < capacity && head < queue.count {
                guard prepare(transfers[queue[head]], as: UInt64(queue[head]), on: ring) == 0 else { break }
                head += 1
                inflight += 1
            }
            let rc = cistern_ring_submit_and_wait(ring.pointer, 1)
            if rc < 0 && -rc != EINTR && -rc != EAGAIN && -rc != EBUSY { return -rc }
            let reaped = completions.withUnsafeMutableBufferPointer { out in
                Int(cistern_ring_peek(ring.pointer, out.baseAddress!, UInt32(out.count)))
            }
            for completion in completions[0..<reaped] {
                inflight -= 1
                let index = Int(completion.user_data)
                if let result = complete(&transfers[index], res: completion.res, root: root) {
                    finish(transfers[index], result)
                } else {
                    queue.append(index)  // the remainder of a short transfer, or EINTR
                }
            }
        }
        return nil
    }

    /// Queues `transfer` (or what is left of it) on the ring; 0, or -EBUSY when full.
    private static func prepare(_ transfer: Transfer, as userData: UInt64, on ring: URing) -> Int32 {
        let fd = transfer.fd
        switch transfer.kind {
        case .read:
            return cistern_ring_prep_read(
                ring.pointer, fd, transfer.buffer! + transfer.done, UInt32(transfer.length - UInt64(transfer.done)),
                transfer.offset + UInt64(transfer.done), userData)
        case .write:
            return cistern_ring_prep_write(
                ring.pointer, fd, transfer.buffer! + transfer.done, UInt32(transfer.length - UInt64(transfer.done)),
                transfer.offset + UInt64(transfer.done), userData)
        case .fsync:
            return cistern_ring_prep_fsync(ring.pointer, fd, userData)
        case .fallocate:
            return cistern_ring_prep_fallocate_keep_size(ring.pointer, fd, transfer.offset, transfer.length, userData)
        }
    }

    /// Applies one completion to `transfer`: its result when it has finished, or nil
    /// when the rest must be resubmitted. Mirrors `POSIXDisk`'s loops and error mapping.
    private static func complete(
        _ transfer: inout Transfer, res: Int32, root: String
    ) -> Result<DiskCompletion, DiskError>? {
        let descriptor = transfer.descriptor
        let path = descriptor.path
        if res < 0 && -res == EINTR { return nil }
        if transfer.direct && (res == -EINVAL || (res > 0 && UInt64(transfer.done) + UInt64(res) < transfer.length)) {
            // Refused, or short: go on through the page cache from where it stopped.
            transfer.direct = false
            if res > 0 { transfer.done += Int(res) }
            return nil
        }
        switch transfer.kind {
        case .read:
            if res < 0 { return .failure(POSIXErrno.error(-res, call: "io_uring read", path: path, root: root)) }
            transfer.done += Int(res)
            let wanted = transfer.requested > 0 ? transfer.requested : Int(transfer.length)
            if res > 0 && transfer.done < wanted { return nil }
            // Finished, or end of file (a read of 0 bytes).
            return .success(.read([UInt8](UnsafeRawBufferPointer(start: transfer.buffer, count: min(transfer.done, wanted)))))
        case .write:
            let code: Int32 = res == 0 ? EIO : -res  // no progress and no error: a device failure
            if res <= 0 {
                return .failure(POSIXErrno.error(code, call: "io_uring write", path: path, root: root, neededBytes: transfer.length))
            }
            transfer.done += Int(res)
            return UInt64(transfer.done) < transfer.length ? nil : .success(.done)
        case .fsync:
            if res < 0 {
                let error = POSIXErrno.error(-res, call: "io_uring fsync", path: path, root: root)
                descriptor.markPoisoned(
                    "an earlier fsync failed (\(POSIXErrno.describe(-res))); writes since the last successful fsync may be lost")
                return .failure(error)
            }
            return .success(.done)
        case .fallocate:
            // Where the file system cannot preallocate, nothing is reserved (as POSIXDisk).
            if res < 0 && -res != EOPNOTSUPP {
                return .failure(
                    POSIXErrno.error(-res, call: "io_uring fallocate", path: path, root: root, neededBytes: transfer.length))
            }
            return .success(.done)
        }
    }

    // MARK: - Helpers
}
