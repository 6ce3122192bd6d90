/// Reads the encoding `WireWriter` produces. Every read checks bounds and throws a
/// `WireError`; nothing here traps on malformed input.
public struct WireReader: Sendable {
    /// Longest byte string or nested message accepted (guards allocation on corrupt lengths).
    public static let defaultLengthLimitBytes = 64 << 20

    public let bytes: [UInt8]
    public private(set) var offset: Int
    let end: Int
    public let lengthLimitBytes: Int

    public init(_ bytes: [UInt8], lengthLimitBytes: Int = WireReader.defaultLengthLimitBytes) {
        self.bytes = bytes
        self.offset = 0
        self.end = bytes.count
        self.lengthLimitBytes = lengthLimitBytes
    }

    init(bytes: [UInt8], offset: Int, end: Int, lengthLimitBytes: Int) {
        self.bytes = bytes
        self.offset = offset
        self.end = end
        self.lengthLimitBytes = lengthLimitBytes
    }

    /// Bytes left in this reader (in a nested message: left in that message).
    public var remaining: Int { end - offset }
    public var isAtEnd: Bool { offset >= end }


    public mutating func readVarint(_ what: @autoclosure () -> String = "varint") throws(WireError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        let start = offset
        while true {
            guard offset < end else { throw .truncated(what: what(), offset: offset, needed: 1) }
            let byte = bytes[offset]
            offset += 1
            if shift == 63 && byte > 1 { throw .varintOverflow(offset: start) }
            result |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
            if shift > 63 { throw .varintOverflow(offset: start) }
        }
    }

    public mutating func readSigned(_ what: @autoclosure () -> String = "signed varint") throws(WireError) -> Int64 {
        let raw = try readVarint(what())
        return Int64(bitPattern: (raw >> 1) ^ (0 &- (raw & 1)))
    }

    public mutating func readBool(_ what: @autoclosure () -> String = "bool") throws(WireError) -> Bool {
        guard offset < end else { throw .truncated(what: what(), offset: offset, needed: 1) }
        let byte = bytes[offset]
        offset += 1
        switch byte {
        case 0: return false
        case 1: return true
        default: throw .invalidValue(what: what(), detail: "bool byte \(byte), expected 0 or 1")
        }
    }

    public mutating func readUInt32LE(_ what: @autoclosure () -> String = "uint32") throws(WireError) -> UInt32 {
        guard remaining >= 4 else { throw .truncated(what: what(), offset: offset, needed: 4 - remaining) }
        var v: UInt32 = 0
        for i in 0..<4 { v |= UInt32(bytes[offset + i]) << (8 * UInt32(i)) }
        offset += 4
        return v
    }

    public mutating func readUInt64LE(_ what: @autoclosure () -> String = "uint64") throws(WireError) -> UInt64 {
        guard remaining >= 8 else { throw .truncated(what: what(), offset: offset, needed: 8 - remaining) }
        var v: UInt64 = 0
        for i in 0..<8 { v |= UInt64(bytes[offset + i]) << (8 * UInt64(i)) }
        offset += 8
        return v
    }

    mutating func readLength(_ what: String) throws(WireError) -> Int {
        let length = try readVarint(what + " length")
        guard length <= UInt64(lengthLimitBytes) else {
            throw .lengthTooLarge(what: what, length: length, limitBytes: lengthLimitBytes)
        }
        guard length <= UInt64(remaining) else {
            throw .truncated(what: what, offset: offset, needed: Int(length) - remaining)
        }
        return Int(length)
    }

    public mutating func readBytes(_ what: @autoclosure () -> String = "bytes") throws(WireError) -> [UInt8] {
        let length = try readLength(what())
        let slice = Array(bytes[offset..<offset + length])
        offset += length
        return slice
    }

    public mutating func readString(_ what: @autoclosure () -> String = "string") throws(WireError) -> String {
        let start = offset
        let raw = try readBytes(what())
        guard let s = String(validating: raw, as: UTF8.self) else { throw .invalidUTF8(offset: start) }
        return s
    }

    /// Reads exactly `count` raw bytes.
    public mutating func readRaw(count: Int, _ what: @autoclosure () -> String = "raw bytes") throws(WireError) -> [UInt8] {
        guard count >= 0, remaining >= count else {
            throw .truncated(what: what(), offset: offset, needed: count - remaining)
        }
        let slice = Array(bytes[offset..<offset + count])
        offset += count
        return slice
    }

    /// Reads a nested message. `body` reads the fields it knows; fields a newer
    /// sender appended after them are skipped.
    public mutating func readMessage<T>(
        _ what: @autoclosure () -> String = "message",
        _ body: (inout WireReader) throws(WireError) -> T
    ) throws(WireError) -> T {
        let length = try readLength(what())
        var inner = WireReader(bytes: bytes, offset: offset, end: offset + length, lengthLimitBytes: lengthLimitBytes)
        let value = try body(&inner)
        offset += length
        return value
    }

    public mutating func read<T: WireCodable>(_ type: T.Type = T.self) throws(WireError) -> T {
        try T(from: &self)
    }
}
