/// An enum whose wire form is its `UInt8` raw value as a varint. Decoding an unknown
/// value throws `unknownTag` (a newer peer sent a case this build does not know).
public protocol WireEnum: WireCodable, RawRepresentable where RawValue == UInt8 {}

extension WireEnum {
    public func encode(to writer: inout WireWriter) { writer.writeVarint(UInt64(rawValue)) }

    public init(from reader: inout WireReader) throws(WireError) {
        let v = try reader.readVarint(String(describing: Self.self))
        guard v <= UInt64(UInt8.max), let value = Self(rawValue: UInt8(v)) else {
            throw .unknownTag(type: String(describing: Self.self), tag: v)
        }
        self = value
    }
}
