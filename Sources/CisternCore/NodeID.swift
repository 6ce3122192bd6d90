import CisternWire

/// A node's identity: stable across restarts and address changes. Addresses are
/// found through a `Resolver`.
public struct NodeID: Hashable, Comparable, Sendable, WireCodable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(_ rawValue: UInt32) { self.rawValue = rawValue }
    public static func < (a: NodeID, b: NodeID) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "node#\(rawValue)" }
    public func encode(to writer: inout WireWriter) { writer.writeVarint(UInt64(rawValue)) }
    public init(from reader: inout WireReader) throws(WireError) { rawValue = try UInt32(from: &reader) }
}

/// Where a node can be reached now: a host (an IP in production, a simulated IP in
/// the simulator) and a port.
public struct NodeAddress: Hashable, Comparable, Sendable, WireCodable, CustomStringConvertible {
    public var host: String
    public var port: UInt16
    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }
    public static func < (a: NodeAddress, b: NodeAddress) -> Bool { (a.host, a.port) < (b.host, b.port) }
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.writeString(host)
            w.writeVarint(UInt64(port))
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        (host, port) = try reader.readMessage("NodeAddress") { r throws(WireError) in
            (try r.readString("host"), try UInt16(from: &r))
        }
    }

    /// Parses `host:port` or `[v6]:port`.
    public init?(parsing text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]) else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        self.init(host: host, port: port)
    }
}
