/// Why bytes received on a `TCPTransport` connection are not a valid `TCPFrame`.
/// The transport closes the connection on any of these and logs the description.
public enum TCPFrameError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The first four bytes are not "CSTN".
    case badMagic(found: UInt32)
    /// The format version is not one this build speaks.
    case unsupportedVersion(found: UInt8)
    /// The kind byte names no known frame kind.
    case unknownKind(found: UInt8)
    /// The header and bulk lengths add up to more than the message limit.
    case tooLarge(headerBytes: Int, bulkBytes: Int, limitBytes: Int)
    /// The checksum does not match the frame's bytes.
    case checksumMismatch(stored: UInt32, computed: UInt32)

    public var description: String {
        switch self {
        case .badMagic(let found):
            return "bad frame magic 0x\(String(found, radix: 16)) (expected 0x\(String(TCPFrame.magic, radix: 16)) \"CSTN\"): the peer does not speak the Cistern TCP protocol"
        case .unsupportedVersion(let found):
            return "frame format version \(found) is not supported (this build speaks \(TCPFrame.formatVersion)): upgrade the older node"
        case .unknownKind(let found):
            return "unknown frame kind \(found): the peer runs a newer version or the stream is corrupt"
        case .tooLarge(let header, let bulk, let limit):
            return "frame claims \(header) header + \(bulk) bulk bytes, over the \(limit)-byte message limit; the stream is corrupt or the peer ignores the limit"
        case .checksumMismatch(let stored, let computed):
            return "frame checksum mismatch: frame says 0x\(String(stored, radix: 16)), bytes hash to 0x\(String(computed, radix: 16)); the bytes were corrupted in transit"
        }
    }
}
