import CisternCore
import CisternWire

/// What a node does in the cluster.
public enum NodeRole: UInt8, Sendable, CaseIterable, WireEnum, CustomStringConvertible {
    case mgmtd = 1, meta = 2, storage = 3, client = 4
    public var description: String {
        switch self {
        case .mgmtd: return "mgmtd"
        case .meta: return "meta"
        case .storage: return "storage"
        case .client: return "client"
        }
    }
}

/// A node's standing with the cluster manager.
public enum NodeStatus: UInt8, Sendable, CaseIterable, WireEnum, CustomStringConvertible {
    /// Heartbeats arrive.
    case active = 1
    /// Heartbeats stopped for longer than the failure timeout.
    case failed = 2
    /// Taken out of service by an administrator; its targets are treated as offline.
    case disabled = 3
    public var description: String {
        switch self {
        case .active: return "ACTIVE"
        case .failed: return "FAILED"
        case .disabled: return "DISABLED"
        }
    }
}

/// A registered node.
public struct NodeInfo: Hashable, Sendable, WireCodable {
    public var id: NodeID
    public var role: NodeRole
    public var name: String
    public var status: NodeStatus
    /// Where the node can be reached ("host:port", host names allowed), as it
    /// advertises them in its heartbeats (appended field: empty when absent).
    public var addresses: [String]
    public init(id: NodeID, role: NodeRole, name: String, status: NodeStatus, addresses: [String] = []) {
        self.id = id
        self.role = role
        self.name = name
        self.status = status
        self.addresses = addresses
    }
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.write(id)
            w.write(role)
            w.writeString(name)
            w.write(status)
            w.write(addresses)
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        (id, role, name, status, addresses) = try reader.readMessage("NodeInfo") { r throws(WireError) in
            (try r.read(NodeID.self), try r.read(NodeRole.self), try r.readString("name"), try r.read(NodeStatus.self),
             r.isAtEnd ? [] : try r.read([String].self))
        }
    }
}

/// A target and where it lives.
public struct TargetInfo: Hashable, Sendable, WireCodable {
    public var id: TargetID
    public var node: NodeID
    public var chain: ChainID?
    /// The last local state its node reported (offline when the node is not active).
    public var localState: LocalState
    public var usedBytes: UInt64
    public var capacityBytes: UInt64
    /// Why the target refuses writes for lack of space, as its node last reported
    /// ("" when it has space).
    public var spaceError: String
    public init(id: TargetID, node: NodeID, chain: ChainID?, localState: LocalState, usedBytes: UInt64 = 0, capacityBytes: UInt64 = 0, spaceError: String = "") {
        self.id = id
        self.node = node
        self.chain = chain
        self.localState = localState
        self.usedBytes = usedBytes
        self.capacityBytes = capacityBytes
        self.spaceError = spaceError
    }
    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.write(id)
            w.write(node)
            w.write(chain)
            w.write(localState)
            w.writeVarint(usedBytes)
            w.writeVarint(capacityBytes)
            w.writeString(spaceError)
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        (id, node, chain, localState, usedBytes, capacityBytes, spaceError) = try reader.readMessage("TargetInfo") { r throws(WireError) in
            (try r.read(TargetID.self), try r.read(NodeID.self), try r.read(ChainID?.self), try r.read(LocalState.self),
             try r.readVarint("used"), try r.readVarint("capacity"), r.isAtEnd ? "" : try r.readString("spaceError"))
        }
    }
}

/// The cluster's routing information: every node, target, chain and chain table,
/// under one version that increases with every change.
public struct RoutingInfo: Hashable, Sendable, WireCodable {
    public var version: UInt64
    public var nodes: [NodeInfo]
    public var targets: [TargetInfo]
    public var chains: [Chain]
    public var tables: [ChainTable]
    /// Targets an administrator removed: reports of them are ignored, so a node that
    /// still has one does not bring it back. (Appended field.)
    public var removedTargets: [TargetID]

    public init(version: UInt64 = 0, nodes: [NodeInfo] = [], targets: [TargetInfo] = [], chains: [Chain] = [], tables: [ChainTable] = [], removedTargets: [TargetID] = []) {
        self.version = version
        self.nodes = nodes
        self.targets = targets
        self.chains = chains
        self.tables = tables
        self.removedTargets = removedTargets
    }

    public func chain(_ id: ChainID) -> Chain? { chains.first { $0.id == id } }
    public func target(_ id: TargetID) -> TargetInfo? { targets.first { $0.id == id } }
    public func node(_ id: NodeID) -> NodeInfo? { nodes.first { $0.id == id } }

    public func encode(to writer: inout WireWriter) {
        writer.writeMessage { w in
            w.writeVarint(version)
            w.write(nodes)
            w.write(targets)
            w.write(chains)
            w.write(tables)
            w.write(removedTargets)
        }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        (version, nodes, targets, chains, tables, removedTargets) = try reader.readMessage("RoutingInfo") { r throws(WireError) in
            (try r.readVarint("routing version"), try r.read([NodeInfo].self), try r.read([TargetInfo].self),
             try r.read([Chain].self), try r.read([ChainTable].self), r.isAtEnd ? [] : try r.read([TargetID].self))
        }
    }
}
