/// A value with an explicit binary encoding. Evolution is append-only: new fields go
/// at the end of a `writeMessage` body and decode to a default when absent; new enum
/// cases take new tags. Decoding malformed bytes throws; it never traps.
public protocol WireCodable: Sendable {
    func encode(to writer: inout WireWriter)
    init(from reader: inout WireReader) throws(WireError)
}

extension WireCodable {
    /// The value's encoding as a standalone byte string.
    public func wireBytes() -> [UInt8] {
        var w = WireWriter()
        encode(to: &w)
        return w.bytes
    }

    /// Decodes a standalone byte string, rejecting trailing garbage.
    public init(wireBytes: [UInt8]) throws(WireError) {
        var r = WireReader(wireBytes)
        self = try Self(from: &r)
        guard r.isAtEnd else {
            throw .invalidValue(what: String(describing: Self.self), detail: "\(r.remaining) trailing byte(s)")
        }
    }
}

extension UInt64: WireCodable {
    public func encode(to writer: inout WireWriter) { writer.writeVarint(self) }
    public init(from reader: inout WireReader) throws(WireError) { self = try reader.readVarint("UInt64") }
}

extension UInt32: WireCodable {
    public func encode(to writer: inout WireWriter) { writer.writeVarint(UInt64(self)) }
    public init(from reader: inout WireReader) throws(WireError) {
        let v = try reader.readVarint("UInt32")
        guard let x = UInt32(exactly: v) else { throw .invalidValue(what: "UInt32", detail: "\(v) out of range") }
        self = x
    }
}

extension UInt16: WireCodable {
    public func encode(to writer: inout WireWriter) { writer.writeVarint(UInt64(self)) }
    public init(from reader: inout WireReader) throws(WireError) {
        let v = try reader.readVarint("UInt16")
        guard let x = UInt16(exactly: v) else { throw .invalidValue(what: "UInt16", detail: "\(v) out of range") }
        self = x
    }
}

extension Int64: WireCodable {
    public func encode(to writer: inout WireWriter) { writer.writeSigned(self) }
    public init(from reader: inout WireReader) throws(WireError) { self = try reader.readSigned("Int64") }
}

extension Int: WireCodable {
    public func encode(to writer: inout WireWriter) { writer.writeSigned(Int64(self)) }
    public init(from reader: inout WireReader) throws(WireError) {
        let v = try reader.readSigned("Int")
        guard let x = Int(exactly: v) else { throw .invalidValue(what: "Int", detail: "\(v) out of range") }
        self = x
    }
}

extension Bool: WireCodable {
    public func encode(to writer: inout WireWriter) { writer.writeBool(self) }
    public init(from reader: inout WireReader) throws(WireError) { self = try reader.readBool() }
}

extension String: WireCodable {
    public func encode(to writer: inout WireWriter) { writer.writeString(self) }
    public init(from reader: inout WireReader) throws(WireError) { self = try reader.readString() }
}

extension Array: WireCodable where Element: WireCodable {
    /// Element count, then elements. (`[UInt8]` is encoded the same way, one varint per
    /// byte; use `writeBytes` for payloads.)
    public func encode(to writer: inout WireWriter) {
        writer.writeVarint(UInt64(count))
        for e in self { e.encode(to: &writer) }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let count = try reader.readVarint("array count")
        // Each element takes at least one byte: a count beyond what is left is corrupt.
        guard count <= UInt64(reader.remaining) else {
            throw .truncated(what: "array of \(count) \(Element.self)", offset: reader.offset, needed: Int(clamping: count) - reader.remaining)
        }
        var out: [Element] = []
        out.reserveCapacity(Int(count))
        for _ in 0..<count { out.append(try Element(from: &reader)) }
        self = out
    }
}

extension Optional: WireCodable where Wrapped: WireCodable {
    public func encode(to writer: inout WireWriter) {
        switch self {
        case .none: writer.writeBool(false)
        case .some(let v):
            writer.writeBool(true)
            v.encode(to: &writer)
        }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        self = try reader.readBool("optional flag") ? .some(try Wrapped(from: &reader)) : .none
    }
}
