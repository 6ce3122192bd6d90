import CisternCore
import CisternStorage

/// A buffer registered for batched I/O (in the spirit of 3FS's USRBIO "iov"): reads
/// land in it and writes take their bytes from it, at the offsets each request names,
/// without copies beyond what the transport needs.
///
/// The memory is owned by the buffer and freed with it. Requests of one batch must
/// not overlap in the buffer; the caller must not touch a region while a request on
/// it is in flight (the same contract as io_uring's registered buffers).
public final class IOBuffer: @unchecked Sendable {
    public let count: Int
    let base: UnsafeMutableRawBufferPointer

    public init(count: Int) {
        precondition(count >= 0, "a buffer size cannot be negative")
        self.count = count
        self.base = UnsafeMutableRawBufferPointer.allocate(byteCount: max(count, 1), alignment: 4_096)
        self.base.initializeMemory(as: UInt8.self, repeating: 0)
    }

    deinit { base.deallocate() }

    /// Copies `bytes` into the buffer at `offset`.
    public func store(_ bytes: some Collection<UInt8>, at offset: Int) {
        precondition(offset >= 0 && offset + bytes.count <= count, "store of \(bytes.count) bytes at \(offset) overruns a \(count)-byte buffer")
        UnsafeMutableRawBufferPointer(rebasing: base[offset..<offset + bytes.count]).copyBytes(from: bytes)
    }

    /// The bytes at [offset, offset + length).
    public func load(at offset: Int, length: Int) -> [UInt8] {
        precondition(offset >= 0 && length >= 0 && offset + length <= count, "load of \(length) bytes at \(offset) overruns a \(count)-byte buffer")
        return Array(base[offset..<offset + length])
    }
}

/// One prepared request of an `IORing`.
public struct IORequest: Sendable, Hashable {
    public enum Kind: Sendable, Hashable { case read, write }
    public var kind: Kind
    public var file: FileHandle
    public var fileOffset: UInt64
    public var length: Int
    public var bufferOffset: Int
    /// The caller's tag, returned in the completion.
    public var userData: UInt64
}

/// A finished request: its tag and the bytes moved, or why it failed.
public struct IOCompletion: Sendable, Equatable {
    public var userData: UInt64
    public var result: Result<Int, CisternError>
}

/// Batched I/O: prepare many reads and writes against one registered buffer, submit
/// them together, and wait for completions. A submitted batch runs as one unit: reads
/// of one chain go in one request per chain, writes run in parallel within the
/// client's limits.
///
/// ```swift
/// let ring = IORing(client: client, buffer: IOBuffer(count: 8 << 20))
/// await ring.prepareRead(file, at: 0, length: 1 << 20, bufferOffset: 0, userData: 1)
/// await ring.prepareWrite(other, at: 0, length: 4096, bufferOffset: 1 << 20, userData: 2)
/// await ring.submit()
/// let done = await ring.wait(atLeast: 2)
/// ```
public actor IORing {
    public nonisolated let unownedExecutor: UnownedSerialExecutor
    public nonisolated let client: CisternClient
    public nonisolated let buffer: IOBuffer
    /// Prepared requests a ring holds before `submit` at most.
    public let entriesMax: Int
    private var prepared: [IORequest] = []
    private var completed: [IOCompletion] = []
    private var inFlight = 0
    private var waiters: [(count: Int, continuation: CheckedContinuation<[IOCompletion], Never>)] = []

    public init(client: CisternClient, buffer: IOBuffer, entriesMax: Int = 4_096) {
        self.client = client
        self.buffer = buffer
        self.entriesMax = max(1, entriesMax)
        self.unownedExecutor = client.runtime.makeActorExecutor()
    }

    /// Requests submitted and not yet reaped.
    public var pending: Int { inFlight + completed.count }

    func prepare(_ r: IORequest) throws(CisternError) {
        guard prepared.count < entriesMax else { throw .invalidArgument("the ring holds at most \(entriesMax) prepared requests; submit first") }
        guard r.length >= 0, r.bufferOffset >= 0, r.bufferOffset + r.length <= buffer.count else {
            throw .invalidArgument("request \(r.userData): \(r.length) bytes at buffer offset \(r.bufferOffset) overrun the \(buffer.count)-byte buffer")
        }
        if r.kind == .write && !r.file.writable { throw .invalidArgument("request \(r.userData): \(r.file.path) was opened read-only") }
        prepared.append(r)
    }

    public func prepareRead(_ file: FileHandle, at offset: UInt64, length: Int, bufferOffset: Int, userData: UInt64) throws(CisternError) {
        try prepare(IORequest(kind: .read, file: file, fileOffset: offset, length: length, bufferOffset: bufferOffset, userData: userData))
    }

    public func prepareWrite(_ file: FileHandle, at offset: UInt64, length: Int, bufferOffset: Int, userData: UInt64) throws(CisternError) {
        try prepare(IORequest(kind: .write, file: file, fileOffset: offset, length: length, bufferOffset: bufferOffset, userData: userData))
    }

    /// Starts every prepared request; returns how many were submitted.
    @discardableResult
    public func submit() -> Int {
        let batch = prepared
        prepared = []
        guard !batch.isEmpty else { return 0 }
        inFlight += batch.count
        let runtime = client.runtime
        runtime.spawn("io-ring") { [self] in
            let results = await self.run(batch)
            await self.complete(results)
        }
        return batch.count
    }

    /// Waits until at least `count` completions are ready (or nothing else is in
    /// flight), then returns and removes every ready completion.
    public func wait(atLeast count: Int) async -> [IOCompletion] {
        if completed.count >= count || inFlight == 0 {
            defer { completed = [] }
            return completed
        }
        return await withCheckedContinuation { c in waiters.append((count, c)) }
    }

    private func complete(_ results: [IOCompletion]) {
        completed += results
        inFlight -= results.count
        while let w = waiters.first, completed.count >= w.count || inFlight == 0 {
            waiters.removeFirst()
            let ready = completed
            completed = []
            w.continuation.resume(returning: ready)
        }
    }

    /// Runs one batch: every read's pieces grouped by chain into batched requests,
    /// every write's pieces in parallel.
    nonisolated func run(_ batch: [IORequest]) async -> [IOCompletion] {
        var out: [IOCompletion] = []
        // Reads: one readChunks call for every piece of every read.
        let reads = batch.filter { $0.kind == .read }
        if !reads.isEmpty {
            let pieces = reads.map { r in FileSplit.pieces(layout: r.file.layout, inode: r.file.inode, offset: r.fileOffset, length: r.length) }
            do {
                let chunks = try await client.readChunks(pieces.flatMap { $0.map { ($0.chunk, $0.chain) } })
                for (r, ps) in zip(reads, pieces) {
                    for p in ps {
                        let data = chunks[p.chunk] ?? nil
                        let available = max(0, min(p.length, (data?.count ?? 0) - p.offsetInChunk))
                        if let data, available > 0 { buffer.store(data[p.offsetInChunk..<p.offsetInChunk + available], at: r.bufferOffset + p.bufferOffset) }
                        if available < p.length {
                            buffer.store(repeatElement(UInt8(0), count: p.length - available), at: r.bufferOffset + p.bufferOffset + available)
                        }
                    }
                    out.append(IOCompletion(userData: r.userData, result: .success(r.length)))
                }
            } catch {
                for r in reads { out.append(IOCompletion(userData: r.userData, result: .failure(error))) }
            }
        }
        // Writes: every piece of every write in parallel, within the client's limits.
        let writes = batch.filter { $0.kind == .write }
        if !writes.isEmpty {
            let buffer = self.buffer
            let storage = client.storage
            let jobs = writes.enumerated().flatMap { (i, w) in
                FileSplit.pieces(layout: w.file.layout, inode: w.file.inode, offset: w.fileOffset, length: w.length).map { (i, $0, w.bufferOffset) }
            }
            let results = await client.runtime.concurrentMap(jobs, limit: client.options.inFlightMax) { (i, p, base) -> (Int, StorageClientError?) in
                do throws(StorageClientError) {
                    _ = try await storage.write(p.chunk, chain: p.chain, offset: p.offsetInChunk, buffer.load(at: base + p.bufferOffset, length: p.length))
                    return (i, nil)
                } catch {
                    return (i, error)
                }
            }
            var failure: [Int: StorageClientError] = [:]
            for (i, e) in results { if let e, failure[i] == nil { failure[i] = e } }
            for (i, w) in writes.enumerated() {
                out.append(IOCompletion(userData: w.userData, result: failure[i].map { .failure(.storage($0)) } ?? .success(w.length)))
            }
        }
        return out
    }
}
