import CisternCore
import CisternWire

/// The chunk engine's durable metadata: an append-only log of records, each framed
/// as `[length u32][crc32c u32][payload]`. Recovery keeps the longest valid prefix
/// (a torn or lost tail after a crash is cut off) and replays it.
enum ChunkMetaLog {
    static let path = "meta.log"
    static let recordBytesMax = 1 << 16

    enum Record: Equatable {
        /// The chunk's whole metadata after a change.
        case put(ChunkMeta)
        case remove(ChunkID)
    }

    static func frame(_ record: Record) -> [UInt8] {
        var payload = WireWriter()
        switch record {
        case .put(let meta):
            payload.writeVarint(1)
            payload.write(meta)
        case .remove(let id):
            payload.writeVarint(2)
            payload.write(id)
        }
        var out = WireWriter(reservingCapacity: payload.bytes.count + 8)
        out.writeUInt32LE(UInt32(payload.bytes.count))
        out.writeUInt32LE(CRC32C.checksum(payload.bytes))
        out.writeRaw(payload.bytes)
        return out.bytes
    }

    /// The state the valid prefix of `bytes` describes, and that prefix's length.
    static func replay(_ bytes: [UInt8]) -> (chunks: [ChunkID: ChunkMeta], validBytes: Int) {
        var r = WireReader(bytes)
        var chunks: [ChunkID: ChunkMeta] = [:]
        var valid = 0
        while !r.isAtEnd {
            guard let length = try? r.readUInt32LE(), let crc = try? r.readUInt32LE(), length <= recordBytesMax,
                  let payload = try? r.readRaw(count: Int(length)), CRC32C.checksum(payload) == crc
            else { break }
            var p = WireReader(payload)
            guard let kind = try? p.readVarint() else { break }
            if kind == 1, let meta = try? p.read(ChunkMeta.self) {
                chunks[meta.id] = meta
            } else if kind == 2, let id = try? p.read(ChunkID.self) {
                chunks[id] = nil
            } else {
                break
            }
            valid = r.offset
        }
        return (chunks, valid)
    }
}
