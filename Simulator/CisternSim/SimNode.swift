import CisternCore

/// What a booting process gets: its identity and its seams.
public struct SimProcessContext: @unchecked Sendable {
    public let process: SimProcess
    public var node: NodeID { process.node.id }
    public var name: String { process.node.name }
    public var runtime: any Runtime { process.runtime }
    public var transport: any Transport { process.transport }
    public var disk: any Disk { process.disk }
    public var kv: any TransactionalKV { process.kv }
    public var resolver: any Resolver { process.transport.resolver }
    /// Keeps `object` alive as long as the process lives.
    public func retain(_ object: AnyObject) { process.retained.append(object) }
}

/// A machine of the simulated world: an identity that survives restarts and address
/// changes, an address, a disk, and at most one running process.
public final class SimNode: @unchecked Sendable {
    public let id: NodeID
    public let name: String
    public internal(set) var host: String
    public let port: UInt16
    public internal(set) var process: SimProcess?
    public internal(set) var incarnations: UInt64 = 0
    public let diskStore: SimDiskStore
    /// Boots the node's services in a new process. Set by the harness.
    public var boot: (@Sendable (SimProcessContext) async -> Void)?

    init(id: NodeID, name: String, host: String, port: UInt16, diskStore: SimDiskStore) {
        self.id = id
        self.name = name
        self.host = host
        self.port = port
        self.diskStore = diskStore
    }

    public var address: NodeAddress { NodeAddress(host: host, port: port) }
    /// Addresses on other networks (multi-homed nodes); the name service lists them
    /// after the primary address, and callers fail over to them.
    public internal(set) var secondaryHosts: [String] = []
    public var addresses: [NodeAddress] { [address] + secondaryHosts.map { NodeAddress(host: $0, port: port) } }
    /// The network endpoint this node holds now (set when it is added or moves).
    var endpoint: SimNetwork.Endpoint?
    public var isUp: Bool { process?.status == .running }
}
