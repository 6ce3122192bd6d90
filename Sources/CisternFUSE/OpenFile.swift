import Cistern
import CisternCore
import CisternMeta
import Synchronization

/// A file the kernel opened on the mount: its client handle, the write-behind
/// buffer, and the chunk writes in flight. Writes are answered once buffered; what
/// fails later is reported by the next write, flush, fsync or close of the file
/// (as with any write-back file system), so `fsync` and `close` return only after
/// every byte before them is committed on its chain.
final class OpenFile: Sendable {
    let handle: FileHandle
    let append: Bool
    /// Serializes this handle's writes, flushes and drains.
    let lock = AsyncFIFOLock()
    private struct State {
        var coalescer: WriteCoalescer
        /// Byte ranges being written to storage now.
        var inflight: [UInt64: Range<UInt64>] = [:]
        var nextFlush: UInt64 = 0
        /// Tasks waiting for a write in flight to end (resumed with false: look again).
        var waiters: [CheckedContinuation<Bool, Never>] = []
        /// The first write that failed (reported once, then cleared).
        var failure: CisternError?
        /// Whether anything was written through this handle since it was last reported.
        var wrote = false
    }
    private let state: Mutex<State>
    /// Chunk writes in flight per open file at most.
    static let inflightMax = 8

    init(handle: FileHandle, append: Bool, bufferBytes: Int) {
        self.handle = handle
        self.append = append
        self.state = Mutex(State(coalescer: WriteCoalescer(chunkBytes: UInt64(handle.layout.chunkBytes), limitBytes: bufferBytes)))
    }

    /// Buffers `data` at `offset` and starts the chunk writes that are due. Call
    /// with `lock` held.
    func write(at offset: UInt64, _ data: [UInt8], client: CisternClient, runtime: any Runtime) async throws(CisternError) {
        if let e = takeFailure() { throw e }
        let due = state.withLock { s -> [WriteCoalescer.Flush] in
            s.wrote = true
            return s.coalescer.write(at: offset, data)
        }
        for f in due { await start(f, client: client, runtime: runtime) }
    }

    /// Writes what is buffered and waits for every chunk write in flight; throws the
    /// first failure since the last report. Call with `lock` held.
    func drain(client: CisternClient, runtime: any Runtime) async throws(CisternError) {
        if let f = state.withLock({ $0.coalescer.take() }) { await start(f, client: client, runtime: runtime) }
        await waitUntil { $0.inflight.isEmpty }
        if let e = takeFailure() { throw e }
    }

    /// Drops buffered bytes past `length` (the file was truncated). Call with `lock` held.
    func truncateBuffer(to length: UInt64) {
        state.withLock { $0.coalescer.truncate(to: length) }
    }

    /// The end of the bytes buffered here (0 when none).
    var bufferedEnd: UInt64 { state.withLock { $0.coalescer.end } }

    /// Whether the handle wrote since the last call (and forgets it).
    func takeWrote() -> Bool { state.withLock { s in defer { s.wrote = false }; return s.wrote } }

    private func takeFailure() -> CisternError? {
        state.withLock { s in defer { s.failure = nil }; return s.failure }
    }

    /// Starts one chunk write once no write in flight overlaps it (so a later write
    /// of the same bytes lands last) and fewer than `inflightMax` are running.
    private func start(_ f: WriteCoalescer.Flush, client: CisternClient, runtime: any Runtime) async {
        let range = f.offset..<(f.offset + UInt64(f.bytes.count))
        await waitUntil { s in s.inflight.count < Self.inflightMax && !s.inflight.values.contains { $0.overlaps(range) } }
        let id = state.withLock { s -> UInt64 in
            s.nextFlush += 1
            s.inflight[s.nextFlush] = range
            return s.nextFlush
        }
        let handle = self.handle
        runtime.spawn("fuse.write") { [self] in
            var failure: CisternError?
            do throws(CisternError) {
                try await client.write(handle, at: f.offset, f.bytes)
            } catch {
                failure = error
            }
            let waiters = state.withLock { s -> [CheckedContinuation<Bool, Never>] in
                s.inflight[id] = nil
                if s.failure == nil, let failure { s.failure = failure }
                defer { s.waiters = [] }
                return s.waiters
            }
            for w in waiters { w.resume(returning: false) }
        }
    }

    private func waitUntil(_ ready: @escaping @Sendable (borrowing State) -> Bool) async {
        while true {
            let done: Bool = await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
                let ok = state.withLock { s -> Bool in
                    if ready(s) { return true }
                    s.waiters.append(c)
                    return false
                }
                if ok { c.resume(returning: true) }
            }
            if done { return }
        }
    }
}
