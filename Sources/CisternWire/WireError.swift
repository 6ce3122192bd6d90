/// Why a byte string could not be decoded. Decoders never trap on bad input: every
/// malformed, truncated or oversized input ends in one of these.
public enum WireError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The input ended `needed` bytes short while reading `what` at `offset`.
    case truncated(what: String, offset: Int, needed: Int)
    /// A varint ran past 10 bytes or past 64 bits.
    case varintOverflow(offset: Int)
    /// A length prefix names more bytes than the limit allows.
    case lengthTooLarge(what: String, length: UInt64, limitBytes: Int)
    /// A tag names no case this build knows; `type` is the enum being decoded.
    case unknownTag(type: String, tag: UInt64)
    /// A string's bytes are not valid UTF-8.
    case invalidUTF8(offset: Int)
    /// A value was decoded but breaks a rule of its type (for example a bool byte of 7).
    case invalidValue(what: String, detail: String)
    /// A frame's checksum does not match its bytes.
    case checksumMismatch(expected: UInt32, actual: UInt32)

    public var description: String {
        switch self {
        case .truncated(let what, let offset, let needed):
            return "truncated message: \(needed) more byte(s) needed for \(what) at offset \(offset); the sender and receiver may run incompatible versions, or the bytes were cut in transit"
        case .varintOverflow(let offset):
            return "malformed varint at offset \(offset): more than 64 bits"
        case .lengthTooLarge(let what, let length, let limit):
            return "\(what) claims \(length) bytes, over the \(limit)-byte limit; the message is corrupt or the limit must be raised"
        case .unknownTag(let type, let tag):
            return "unknown \(type) tag \(tag): the peer runs a newer version; upgrade this node"
        case .invalidUTF8(let offset):
            return "string at offset \(offset) is not valid UTF-8"
        case .invalidValue(let what, let detail):
            return "invalid \(what): \(detail)"
        case .checksumMismatch(let expected, let actual):
            return "checksum mismatch: frame says \(String(expected, radix: 16)), bytes hash to \(String(actual, radix: 16)); the bytes were corrupted in transit"
        }
    }
}
