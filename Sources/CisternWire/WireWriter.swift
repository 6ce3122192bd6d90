/// Appends the compact binary encoding: LEB128 varints, zigzag for signed integers,
/// length-prefixed byte strings, and length-prefixed nested messages.
public struct WireWriter: Sendable {
    /// The bytes written so far.
    public private(set) var bytes: [UInt8]

    public init(reservingCapacity capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }


    public mutating func writeVarint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }


    public mutating func writeSigned(_ value: Int64) {
        writeVarint(UInt64(bitPattern: (value << 1) ^ (value >> 63)))
    }

    public mutating func writeBool(_ value: Bool) { bytes.append(value ? 1 : 0) }

    public mutating func writeUInt32LE(_ value: UInt32) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    public mutating func writeUInt64LE(_ value: UInt64) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    /// A varint length, then the bytes.
    public mutating func writeBytes(_ value: some Collection<UInt8>) {
        writeVarint(UInt64(value.count))
        bytes.append(contentsOf: value)
    }

    public mutating func writeString(_ value: String) {
        writeBytes(value.utf8)
    }

    /// Raw bytes with no length prefix (for framing).
    public mutating func writeRaw(_ value: some Collection<UInt8>) {
        bytes.append(contentsOf: value)
    }

    /// A nested message: its length, then its fields. Decoders of older versions skip
    /// fields appended later; decoders of newer versions see the end and use defaults.
    public mutating func writeMessage(_ body: (inout WireWriter) -> Void) {
        var inner = WireWriter(reservingCapacity: 32)
        body(&inner)
        writeBytes(inner.bytes)
    }

    public mutating func write<T: WireCodable>(_ value: T) {
        value.encode(to: &self)
    }
}
