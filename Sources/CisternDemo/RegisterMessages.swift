import CisternCore
import CisternWire

/// The demo register's service number.
public let registerService = ServiceID(100)

/// A write's position in the register's total order: higher counter wins; the
/// writer breaks ties, so two writers never produce the same stamp.
public struct Stamp: Comparable, Hashable, Sendable, WireCodable, CustomStringConvertible {
    public var counter: UInt64
    public var writer: UInt32
    public init(counter: UInt64, writer: UInt32) {
        self.counter = counter
        self.writer = writer
    }
    public static let zero = Stamp(counter: 0, writer: 0)
    public static func < (a: Stamp, b: Stamp) -> Bool { (a.counter, a.writer) < (b.counter, b.writer) }
    public var description: String { "\(counter).\(writer)" }
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.writeVarint(counter)
            w.writeVarint(UInt64(self.writer))
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        (counter, writer) = try reader.readMessage("Stamp") { r throws(WireError) in
            (try r.readVarint("counter"), try UInt32(from: &r))
        }
    }
}

/// Requests a register replica serves. Method numbers are the wire tags.
public enum RegisterRequest: Sendable, Equatable {
    /// Returns the replica's stamp and value for `key`.
    case read(key: String)
    /// Stores (`stamp`, `value`) for `key` durably if `stamp` is newer than what the
    /// replica has; acknowledges either way.
    case write(key: String, stamp: Stamp, value: String?)

    public var method: UInt16 {
        switch self {
        case .read: return 1
        case .write: return 2
        }
    }

    public func message() -> Message {
        var w = WireWriter()
        switch self {
        case .read(let key):
            w.writeMessage { $0.writeString(key) }
        case .write(let key, let stamp, let value):
            w.writeMessage { m in
                m.writeString(key)
                m.write(stamp)
                m.write(value)
            }
        }
        return Message(method: method, header: w.bytes)
    }

    public init(_ message: Message) throws(WireError) {
        var r = WireReader(message.header)
        switch message.method {
        case 1:
            self = .read(key: try r.readMessage("read") { m throws(WireError) in try m.readString("key") })
        case 2:
            self = try r.readMessage("write") { m throws(WireError) in
                .write(key: try m.readString("key"), stamp: try m.read(Stamp.self), value: try m.read(String?.self))
            }
        default:
            throw .unknownTag(type: "RegisterRequest", tag: UInt64(message.method))
        }
    }
}

/// A replica's answer: its stamp and value for the key (after a write: what it holds now).
public struct RegisterReply: Sendable, Equatable, WireCodable {
    public var stamp: Stamp
    public var value: String?
    public init(stamp: Stamp, value: String?) {
        self.stamp = stamp
        self.value = value
    }
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.write(stamp)
            w.write(value)
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        (stamp, value) = try reader.readMessage("RegisterReply") { r throws(WireError) in
            (try r.read(Stamp.self), try r.read(String?.self))
        }
    }
}
