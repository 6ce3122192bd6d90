/// Gathers an open file's small sequential writes into chunk-sized ones (a write
/// that covers part of a chunk costs the storage head a read-modify-write of the
/// whole chunk). Bytes are held until the buffer reaches the end of a chunk, a
/// write does not continue it, or the file is flushed, synced, read or closed.
/// Pure: the mount runs it under the file's lock.
public struct WriteCoalescer: Sendable, Equatable {
    public let chunkBytes: UInt64
    /// Most bytes held (a chunk at most).
    public let limitBytes: Int
    public private(set) var offset: UInt64 = 0
    public private(set) var bytes: [UInt8] = []

    public init(chunkBytes: UInt64, limitBytes: Int) {
        self.chunkBytes = max(1, chunkBytes)
        self.limitBytes = max(1, min(limitBytes, Int(clamping: chunkBytes)))
    }

    /// A range of the file to write to storage.
    public struct Flush: Sendable, Equatable {
        public var offset: UInt64
        public var bytes: [UInt8]
        public init(offset: UInt64, bytes: [UInt8]) {
            self.offset = offset
            self.bytes = bytes
        }
    }

    public var isEmpty: Bool { bytes.isEmpty }
    /// The end of the held bytes (0 when none).
    public var end: UInt64 { bytes.isEmpty ? 0 : offset + UInt64(bytes.count) }

    /// Takes `data` at `at`; returns what must be written now, in order (held bytes
    /// this write does not continue, and whatever reaches a chunk's end).
    public mutating func write(at: UInt64, _ data: [UInt8]) -> [Flush] {
        guard !data.isEmpty else { return [] }
        var out: [Flush] = []
        if !bytes.isEmpty && at != end, let f = take() { out.append(f) }
        if bytes.isEmpty { offset = at }
        var rest = data[...]
        while !rest.isEmpty {
            // Room up to the chunk's end and the buffer's limit.
            let chunkEnd = (offset / chunkBytes + 1) * chunkBytes
            let room = min(Int(chunkEnd - end(or: offset)), limitBytes - bytes.count)
            let n = min(room, rest.count)
            bytes += rest.prefix(n)
            rest = rest.dropFirst(n)
            if end(or: offset) == chunkEnd || bytes.count >= limitBytes, let f = take() {
                out.append(f)
                offset = f.offset + UInt64(f.bytes.count)
            }
        }
        return out
    }

    private func end(or start: UInt64) -> UInt64 { start + UInt64(bytes.count) }

    /// Everything held, to write now (nil when nothing is).
    public mutating func take() -> Flush? {
        guard !bytes.isEmpty else { return nil }
        let f = Flush(offset: offset, bytes: bytes)
        bytes = []
        return f
    }

    /// Drops held bytes at or past `length` (the file was truncated to it).
    public mutating func truncate(to length: UInt64) {
        guard !bytes.isEmpty else { return }
        if length <= offset { bytes = [] } else if length < end { bytes.removeLast(Int(end - length)) }
    }
}
