import CisternCore
import CisternWire
import CisternRouting

/// The chunk engine's durable metadata: an append-only log of records, each framed
/// as `[length u32][crc32c u32][payload]`. Recovery keeps the longest valid prefix
/// (a torn or lost tail after a crash is cut off) and replays it.
///
/// The log is compacted so it stays proportional to the live metadata: it lives in
/// one of two slot files, and a compaction writes a checkpoint (every chunk's
/// metadata between a begin and an end record carrying a new generation) into the
/// other slot, fsyncs it, and appends there from then on. Recovery picks the slot
/// with the highest generation whose checkpoint is complete in its valid prefix; a
/// slot without a begin record is generation 0 (a log from before compaction, or a
/// fresh one) and complete. A crash during a compaction leaves that slot's checkpoint
/// incomplete, so the other slot, untouched, is used.
enum ChunkMetaLog {
    /// The two slot files; slot 0 has the name logs had before compaction existed.
    static let paths = ["meta.log", "meta-b.log"]
    static let recordBytesMax = 1 << 16
    /// How much of a log recovery reads at a time.
    static let replayPieceBytes = 4 << 20

    enum Record: Equatable {
        /// The chunk's whole metadata after a change.
        case put(ChunkMeta)
        case remove(ChunkID)
        /// A checkpoint of generation `generation` starts: the records up to its end
        /// record are the whole state.
        case checkpointBegin(generation: UInt64)
        case checkpointEnd(generation: UInt64)
    }

    static func frame(_ record: Record) -> [UInt8] {
        var out: [UInt8] = []
        append(record, to: &out)
        return out
    }

    static func append(_ record: Record, to out: inout [UInt8]) {
        var payload = WireWriter()
        switch record {
        case .put(let meta):
            payload.writeVarint(1)
            payload.write(meta)
        case .remove(let id):
            payload.writeVarint(2)
            payload.write(id)
        case .checkpointBegin(let g):
            payload.writeVarint(3)
            payload.writeUInt64LE(g)
        case .checkpointEnd(let g):
            payload.writeVarint(4)
            payload.writeUInt64LE(g)
        }
        var head = WireWriter(reservingCapacity: 8)
        head.writeUInt32LE(UInt32(payload.bytes.count))
        head.writeUInt32LE(CRC32C.checksum(payload.bytes))
        out += head.bytes
        out += payload.bytes
    }

    /// A checkpoint of `chunks` as generation `generation`, in id order.
    static func checkpoint(_ chunks: [ChunkID: ChunkMeta], generation: UInt64) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(chunks.count * 96 + 64)
        append(.checkpointBegin(generation: generation), to: &out)
        for id in chunks.keys.sorted() { append(.put(chunks[id]!), to: &out) }
        append(.checkpointEnd(generation: generation), to: &out)
        return out
    }

    /// Replays a log fed in pieces of any size: keeps at most one partial record
    /// between pieces, so a log of any length is replayed in bounded memory (beyond
    /// the state it describes).
    struct Replay {
        private(set) var chunks: [ChunkID: ChunkMeta] = [:]
        /// Bytes of the valid prefix so far.
        private(set) var validBytes = 0
        /// The checkpoint generation this log starts with (0 without one).
        private(set) var generation: UInt64 = 0
        /// Whether the log's starting checkpoint is complete (always for generation 0).
        private(set) var complete = true
        /// Whether an invalid record ended the valid prefix.
        private(set) var stopped = false
        private var carry: [UInt8] = []
        private var records = 0

        mutating func feed(_ piece: [UInt8]) {
            guard !stopped else { return }
            var bytes = carry
            bytes += piece
            var r = WireReader(bytes)
            var consumed = 0
            while !r.isAtEnd {
                guard let length = try? r.readUInt32LE(), let crc = try? r.readUInt32LE() else { break }
                guard length <= recordBytesMax else {
                    stopped = true
                    break
                }
                guard let payload = try? r.readRaw(count: Int(length)) else { break }
                guard CRC32C.checksum(payload) == crc, apply(payload) else {
                    stopped = true
                    break
                }
                consumed = r.offset
            }
            validBytes += consumed
            carry = stopped ? [] : Array(bytes[consumed...])
        }

        /// Applies one record; false when it is not a record this log can hold there.
        private mutating func apply(_ payload: [UInt8]) -> Bool {
            var p = WireReader(payload)
            guard let kind = try? p.readVarint() else { return false }
            defer { records += 1 }
            switch kind {
            case 1:
                guard let meta = try? p.read(ChunkMeta.self) else { return false }
                chunks[meta.id] = meta
            case 2:
                guard let id = try? p.read(ChunkID.self) else { return false }
                chunks[id] = nil
            case 3:
                // Only a log's first record may begin a checkpoint.
                guard records == 0, let g = try? p.readUInt64LE(), g > 0 else { return false }
                generation = g
                complete = false
            case 4:
                guard !complete, let g = try? p.readUInt64LE(), g == generation else { return false }
                complete = true
            default:
                return false
            }
            return true
        }
    }

    /// The state the valid prefix of `bytes` describes, and that prefix's length.
    static func replay(_ bytes: [UInt8]) -> (chunks: [ChunkID: ChunkMeta], validBytes: Int) {
        var r = Replay()
        r.feed(bytes)
        return (r.chunks, r.validBytes)
    }

    /// Which of the slots' replays recovery uses: the complete one with the highest
    /// generation (slot 0 on a tie, which only two generation-0 logs can produce).
    static func choose(_ replays: [Replay?]) -> Int? {
        var best: Int?
        for (i, r) in replays.enumerated() {
            guard let r, r.complete else { continue }
            if let b = best, let rb = replays[b], rb.generation >= r.generation { continue }
            best = i
        }
        return best
    }
}
