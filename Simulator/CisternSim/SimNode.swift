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
    /// The node's own clock (what its processes' runtimes read); it survives restarts
    /// like the machine's hardware clock.
    public internal(set) var clock = SimClock()
}

/// A node's clock against virtual time: it may run ahead (a forward jump, as after a
/// suspended VM resumes) and drift (a rate error in parts per million). It never goes
/// backwards, as a monotonic clock never does.
public struct SimClock: Sendable, Equatable {
    var localBaseNanoseconds: UInt64 = 0
    var realBaseNanoseconds: UInt64 = 0
    /// Rate error: +100 runs 100 µs per second fast. Limited to ±100000 (10%).
    public private(set) var driftPPM: Int = 0

    public init() {}

    /// Local time at virtual time `real`.
    public func local(_ real: UInt64) -> UInt64 {
        let elapsed = real &- realBaseNanoseconds
        let scaled = driftPPM == 0 ? elapsed : UInt64(Double(elapsed) * (1 + Double(driftPPM) / 1e6))
        return localBaseNanoseconds &+ scaled
    }

    /// How much virtual time passes while this clock advances `localNanoseconds`.
    public func realDelay(forLocal localNanoseconds: UInt64) -> UInt64 {
        driftPPM == 0 ? localNanoseconds : UInt64((Double(localNanoseconds) / (1 + Double(driftPPM) / 1e6)).rounded(.up))
    }

    /// From virtual time `real` on, the clock runs ahead by `jumpNanoseconds` more and
    /// drifts by `driftPPM`.
    public mutating func adjust(at real: UInt64, jumpNanoseconds: UInt64, driftPPM newDrift: Int) {
        localBaseNanoseconds = local(real) &+ jumpNanoseconds
        realBaseNanoseconds = real
        driftPPM = max(-100_000, min(100_000, newDrift))
    }

    /// How far ahead of virtual time the clock reads at `real` (negative: behind).
    public func offsetNanoseconds(at real: UInt64) -> Int64 { Int64(bitPattern: local(real) &- real) }
}
