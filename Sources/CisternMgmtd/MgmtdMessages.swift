import CisternAuth
import CisternCore
import CisternRouting
import CisternWire

/// The cluster manager's service number.
public let mgmtdService = ServiceID(2)
/// The service every node serves so the primary can push "routing changed" hints.
public let routingHintService = ServiceID(3)

/// What a storage node reports about one of its targets.
public struct TargetReport: Hashable, Sendable, WireCodable {
    public var target: TargetID
    public var localState: LocalState
    public var usedBytes: UInt64
    public var capacityBytes: UInt64
    /// Why the target refuses writes for lack of space ("" when it has space).
    public var spaceError: String
    public init(target: TargetID, localState: LocalState, usedBytes: UInt64 = 0, capacityBytes: UInt64 = 0, spaceError: String = "") {
        self.target = target
        self.localState = localState
        self.usedBytes = usedBytes
        self.capacityBytes = capacityBytes
        self.spaceError = spaceError
    }
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.write(target)
            w.write(localState)
            w.writeVarint(usedBytes)
            w.writeVarint(capacityBytes)
            w.writeString(spaceError)
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        (target, localState, usedBytes, capacityBytes, spaceError) = try reader.readMessage("TargetReport") { r throws(WireError) in
            (try r.read(TargetID.self), try r.read(LocalState.self), try r.readVarint("used"), try r.readVarint("capacity"),
             r.isAtEnd ? "" : try r.readString("spaceError"))
        }
    }
}

/// A heartbeat: registers the node on first contact and renews its liveness; a
/// storage node carries its targets' local states and space. `sequence` increases
/// with every heartbeat of one process, identified by `bootID`, so a late heartbeat
/// of a process is recognised and a restarted process is not mistaken for one.
public struct Heartbeat: Hashable, Sendable, WireCodable {
    public var node: NodeID
    public var role: NodeRole
    public var name: String
    public var sequence: UInt64
    public var targets: [TargetReport]
    /// Random per process start (appended field: 0 from senders that predate it).
    public var bootID: UInt64
    /// Where the node can be reached (appended field: empty from older senders).
    public var addresses: [String]
    public init(node: NodeID, role: NodeRole, name: String, sequence: UInt64, targets: [TargetReport] = [], bootID: UInt64 = 0, addresses: [String] = []) {
        self.node = node
        self.role = role
        self.name = name
        self.sequence = sequence
        self.targets = targets
        self.bootID = bootID
        self.addresses = addresses
    }
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.write(node)
            w.write(role)
            w.writeString(name)
            w.writeVarint(sequence)
            w.write(targets)
            w.writeVarint(bootID)
            w.write(addresses)
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        (node, role, name, sequence, targets, bootID, addresses) = try reader.readMessage("Heartbeat") { r throws(WireError) in
            (try r.read(NodeID.self), try r.read(NodeRole.self), try r.readString("name"), try r.readVarint("sequence"), try r.read([TargetReport].self),
             r.isAtEnd ? 0 : try r.readVarint("boot id"), r.isAtEnd ? [] : try r.read([String].self))
        }
    }
}

/// Requests the cluster manager serves. The method number is the wire tag.
public enum MgmtdRequest: Sendable, Equatable {
    case heartbeat(Heartbeat)
    /// The routing information, or `unchanged` if it is still `knownVersion`.
    case getRouting(knownVersion: UInt64)
    case setNodeEnabled(NodeID, enabled: Bool)
    /// Treats a target as offline until it is removed (for a failed medium).
    case offlineTarget(TargetID)
    /// Removes an offline target from its chain and from the cluster.
    case removeTarget(TargetID)
    /// For a chain whose LASTSRV target will not return: that target goes offline and
    /// the next best replica becomes LASTSRV. Writes only the old one had are lost.
    case rotateLastsrv(ChainID)
    /// Builds chains of `replicas` targets from every target not yet in a chain and
    /// adds them to chain table 1 (a new table version).
    case createChains(replicas: Int)

    public var method: UInt16 {
        switch self {
        case .heartbeat: return 1
        case .getRouting: return 2
        case .setNodeEnabled: return 3
        case .offlineTarget: return 4
        case .removeTarget: return 5
        case .rotateLastsrv: return 6
        case .createChains: return 7
        }
    }

    /// Whether the request is for servers and administrators only: on a cluster with
    /// a key it must carry the key's service capability. Clients only read routing
    /// and announce themselves.
    /// The request's name in messages.
    public var kindName: String {
        switch self {
        case .heartbeat: return "a server heartbeat"
        case .getRouting: return "getRouting"
        case .setNodeEnabled: return "setNodeEnabled"
        case .offlineTarget: return "offlineTarget"
        case .removeTarget: return "removeTarget"
        case .rotateLastsrv: return "rotateLastsrv"
        case .createChains: return "createChains"
        }
    }

    public var needsService: Bool {
        switch self {
        case .getRouting: return false
        case .heartbeat(let h): return h.role != .client
        case .setNodeEnabled, .offlineTarget, .removeTarget, .rotateLastsrv, .createChains: return true
        }
    }

    /// Whether the request changes routing (and so needs the primary's lease).
    public var isWrite: Bool {
        switch self {
        case .getRouting: return false
        default: return true
        }
    }

    public func message() -> Message {
        var w = WireWriter()
        w.writeMessage { m in
            switch self {
            case .heartbeat(let h): m.write(h)
            case .getRouting(let v): m.writeVarint(v)
            case .setNodeEnabled(let n, let e):
                m.write(n)
                m.writeBool(e)
            case .offlineTarget(let t), .removeTarget(let t): m.write(t)
            case .rotateLastsrv(let c): m.write(c)
            case .createChains(let r): m.write(r)
            }
        }
        return Message(method: method, header: w.bytes)
    }

    /// The request and its trailer (nil if it has none).
    public static func decode(_ message: Message) throws(WireError) -> (MgmtdRequest, AuthTrailer?) {
        var r = WireReader(message.header)
        let request = try MgmtdRequest(reading: &r, method: message.method)
        return (request, try AuthTrailer.read(after: &r))
    }

    public init(_ message: Message) throws(WireError) {
        var r = WireReader(message.header)
        try self.init(reading: &r, method: message.method)
    }

    init(reading r: inout WireReader, method: UInt16) throws(WireError) {
        self = try r.readMessage("MgmtdRequest") { m throws(WireError) -> MgmtdRequest in
            switch method {
            case 1: return .heartbeat(try m.read(Heartbeat.self))
            case 2: return .getRouting(knownVersion: try m.readVarint("known version"))
            case 3: return .setNodeEnabled(try m.read(NodeID.self), enabled: try m.readBool())
            case 4: return .offlineTarget(try m.read(TargetID.self))
            case 5: return .removeTarget(try m.read(TargetID.self))
            case 6: return .rotateLastsrv(try m.read(ChainID.self))
            case 7: return .createChains(replicas: try m.read(Int.self))
            default: throw .unknownTag(type: "MgmtdRequest", tag: UInt64(method))
            }
        }
    }
}

/// The cluster manager's answers.
public enum MgmtdReply: Sendable, Equatable, WireCodable {
    /// Done; routing is now at `routingVersion`.
    case ok(routingVersion: UInt64)
    case routing(RoutingInfo)
    case unchanged(routingVersion: UInt64)
    /// This replica is not the primary; `primary` is the one holding the lease, if known.
    case notPrimary(primary: NodeID?)
    /// The request was refused; the text says why and what to do.
    case refused(String)

    public func encode(to writer: inout WireWriter) {
        switch self {
        case .ok(let v):
            writer.writeVarint(1)
            writer.writeMessage { $0.writeVarint(v) }
        case .routing(let r):
            writer.writeVarint(2)
            writer.writeMessage { $0.write(r) }
        case .unchanged(let v):
            writer.writeVarint(3)
            writer.writeMessage { $0.writeVarint(v) }
        case .notPrimary(let p):
            writer.writeVarint(4)
            writer.writeMessage { $0.write(p) }
        case .refused(let text):
            writer.writeVarint(5)
            writer.writeMessage { $0.writeString(text) }
        }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let tag = try reader.readVarint("MgmtdReply tag")
        self = try reader.readMessage("MgmtdReply") { m throws(WireError) -> MgmtdReply in
            switch tag {
            case 1: return .ok(routingVersion: try m.readVarint())
            case 2: return .routing(try m.read(RoutingInfo.self))
            case 3: return .unchanged(routingVersion: try m.readVarint())
            case 4: return .notPrimary(primary: try m.read(NodeID?.self))
            case 5: return .refused(try m.readString())
            default: throw .unknownTag(type: "MgmtdReply", tag: tag)
            }
        }
    }
}

/// The lease record in the transactional KV. `renewal` changes on every renewal so
/// a competitor can tell a live lease from a stale one by watching it.
public struct LeaseRecord: Hashable, Sendable, WireCodable {
    public var holder: NodeID
    public var epoch: UInt64
    public var renewal: UInt64
    public var durationNanoseconds: UInt64
    public init(holder: NodeID, epoch: UInt64, renewal: UInt64, durationNanoseconds: UInt64) {
        self.holder = holder
        self.epoch = epoch
        self.renewal = renewal
        self.durationNanoseconds = durationNanoseconds
    }
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.write(holder)
            w.writeVarint(epoch)
            w.writeVarint(renewal)
            w.writeVarint(durationNanoseconds)
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        (holder, epoch, renewal, durationNanoseconds) = try reader.readMessage("LeaseRecord") { r throws(WireError) in
            (try r.read(NodeID.self), try r.readVarint(), try r.readVarint(), try r.readVarint())
        }
    }
}

/// A push hint: routing moved to `version`; pull it.
public struct RoutingHint: Sendable, Equatable, WireCodable {
    public var version: UInt64
    public init(version: UInt64) { self.version = version }
    public func encode(to writer: inout WireWriter) { writer.writeMessage { $0.writeVarint(version) } }
    public init(from reader: inout WireReader) throws(WireError) {
        version = try reader.readMessage("RoutingHint") { r throws(WireError) in try r.readVarint() }
    }
}
