import CisternCore
import CisternWire

/// The replica's durable log: records of (key, stamp, value), each framed as
/// `[length u32][crc32c u32][payload]`. Recovery keeps the longest valid prefix, so
/// a torn or lost tail after a crash is cut off, never misread.
public enum RegisterLog {
    public struct Record: Sendable, Equatable {
        public var key: String
        public var stamp: Stamp
        public var value: String?
        public init(key: String, stamp: Stamp, value: String?) {
            self.key = key
            self.stamp = stamp
            self.value = value
        }
    }

    /// Largest record accepted, in bytes.
    public static let recordBytesMax = 1 << 20

    public static func frame(_ record: Record) -> [UInt8] {
        var payload = WireWriter()
        payload.writeString(record.key)
        payload.write(record.stamp)
        payload.write(record.value)
        var out = WireWriter(reservingCapacity: payload.bytes.count + 8)
        out.writeUInt32LE(UInt32(payload.bytes.count))
        out.writeUInt32LE(CRC32C.checksum(payload.bytes))
        out.writeRaw(payload.bytes)
        return out.bytes
    }

    /// Parses records from the start of `bytes`; returns them and the length of the
    /// valid prefix.
    public static func recover(_ bytes: [UInt8]) -> (records: [Record], validBytes: Int) {
        var r = WireReader(bytes)
        var records: [Record] = []
        var valid = 0
        while !r.isAtEnd {
            guard let length = try? r.readUInt32LE(), let crc = try? r.readUInt32LE(),
                  length <= recordBytesMax, let payload = try? r.readRaw(count: Int(length)),
                  CRC32C.checksum(payload) == crc
            else { break }
            var p = WireReader(payload)
            guard let key = try? p.readString(), let stamp = try? p.read(Stamp.self), let value = try? p.read(String?.self) else { break }
            records.append(Record(key: key, stamp: stamp, value: value))
            valid = r.offset
        }
        return (records, valid)
    }
}
