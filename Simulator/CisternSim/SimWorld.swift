import CisternCore
import Logging

/// A whole simulated cluster: nodes with processes, disks and addresses, one
/// network, one name service and one transactional KV store, all driven by one
/// `SimExecutor` in virtual time. Everything random comes from `seed`, so the same
/// seed and build give the same trace digest.
///
/// A world lives on one thread: create it, start work and run it inside
/// `SimThread.run` (or `SimWorld.simulate`).
public final class SimWorld: @unchecked Sendable {
    /// The identity of the transactional KV store on the simulated network: partition
    /// a node from it and that node's KV operations fail with `unavailable`.
    public static let kvNodeID = NodeID(UInt32.max - 1)

    public let seed: UInt64
    public let executor: SimExecutor
    public var trace: SimTrace
    public private(set) var network: SimNetwork!
    let nameService = SimNameService()
    public private(set) var kvStore: SimKVStore!
    /// Fault decisions made by scenarios draw from here.
    public var rng: DeterministicRandom
    public private(set) var nodes: [SimNode] = []
    private var byName: [String: SimNode] = [:]
    private var byID: [NodeID: SimNode] = [:]
    public var defaultDisk: DiskConfig
    public var logLevel: Logger.Level = .critical
    /// Receives log lines when set (for `--verbose`).
    public var logSink: ((String) -> Void)?
    /// The fault points (off unless a run turns them on).
    public let faultPoints: SimFaultPoints

    public init(seed: UInt64, network: NetworkConfig = NetworkConfig(), disk: DiskConfig = DiskConfig(), kv: KVConfig = KVConfig(), traceLines: Int = 0) {
        self.seed = seed
        self.executor = SimExecutor()
        self.executor.adoptCurrentThread()
        self.trace = SimTrace(keepLines: traceLines)
        let root = DeterministicRandom(seed: seed)
        self.rng = root.fork("world")
        self.faultPoints = SimFaultPoints(seed: seed)
        self.defaultDisk = disk
        self.network = SimNetwork(world: self, config: network, rng: root.fork("network"))
        self.kvStore = SimKVStore(world: self, config: kv, rng: root.fork("kv"))
    }

    public var nowNanoseconds: UInt64 { executor.nowNanoseconds }

    func log(_ line: String) { logSink?(line) }

    // MARK: Topology

    /// Adds a node (not yet started) at `host` and registers it with the name service.
    /// Identities are assigned in order unless `id` is given.
    @discardableResult
    public func addNode(name: String, host: String, secondaryHosts: [String] = [], port: UInt16 = 9000, disk: DiskConfig? = nil, id: NodeID? = nil) -> SimNode {
        precondition(byName[name] == nil, "duplicate node name \(name)")
        let id = id ?? NodeID((nodes.map(\.id.rawValue).max() ?? 0) + 1)
        precondition(byID[id] == nil, "duplicate node id \(id)")
        let store = SimDiskStore(world: self, config: disk ?? defaultDisk, rng: DeterministicRandom(seed: seed).fork("disk/\(name)"))
        let node = SimNode(id: id, name: name, host: host, port: port, diskStore: store)
        nodes.append(node)
        byName[name] = node
        byID[id] = node
        node.secondaryHosts = secondaryHosts
        for a in node.addresses { network.bind(a, to: node) }
        node.endpoint = network.endpoint(node.address)
        nameService.register(id, node.addresses, now: nowNanoseconds)
        return node
    }

    public func node(named name: String) throws(SimError) -> SimNode {
        guard let n = byName[name] else { throw .unknownNode(name) }
        return n
    }

    public func node(_ id: NodeID) -> SimNode? { byID[id] }

    // MARK: Lifecycle

    /// Starts a new process on `node` and runs its boot closure.
    @discardableResult
    public func start(_ node: SimNode) -> SimProcess {
        precondition(node.process == nil || node.process!.isDead, "\(node.name) is already running")
        node.incarnations += 1
        let process = SimProcess(node: node, incarnation: node.incarnations, world: self)
        node.process = process
        trace.note(.restart, at: nowNanoseconds, "\(node.name) starts (incarnation \(node.incarnations))")
        if let boot = node.boot {
            let context = SimProcessContext(process: process)
            process.spawn { await boot(context) }
        }
        return process
    }

    /// Kills `node`'s process. With `loseUnsyncedWrites` (a machine crash rather
    /// than a process crash) unsynced disk writes may be lost or torn; with
    /// `wipeDisk` the disk is replaced by an empty one.
    public func kill(_ node: SimNode, loseUnsyncedWrites: Bool = false, wipeDisk: Bool = false) {
        guard let process = node.process, !process.isDead else { return }
        process.kill()
        trace.note(.kill, at: nowNanoseconds, "\(node.name) killed\(loseUnsyncedWrites ? ", unsynced writes at risk" : "")\(wipeDisk ? ", disk wiped" : "")")
        if wipeDisk {
            node.diskStore.wipe()
        } else if loseUnsyncedWrites {
            node.diskStore.crash()
        }
    }

    /// Kills and starts again.
    public func restart(_ node: SimNode, loseUnsyncedWrites: Bool = false, wipeDisk: Bool = false) {
        kill(node, loseUnsyncedWrites: loseUnsyncedWrites, wipeDisk: wipeDisk)
        start(node)
    }

    public func pause(_ node: SimNode) {
        guard let p = node.process, p.status == .running else { return }
        p.status = .paused
        trace.note(.pause, at: nowNanoseconds, "\(node.name) paused")
    }

    public func resume(_ node: SimNode) {
        guard let p = node.process, p.status == .paused else { return }
        trace.note(.resume, at: nowNanoseconds, "\(node.name) resumed")
        p.resume()
    }

    /// Moves `node` to `host`: its identity stays, its old address goes dead, and the
    /// name service answers the new address (after the configured delay).
    public func changeAddress(_ node: SimNode, to host: String) {
        network.unbind(node.address)
        node.host = host
        network.bind(node.address, to: node)
        node.endpoint = network.endpoint(node.address)
        nameService.register(node.id, node.addresses, now: nowNanoseconds)
        trace.note(.ipChange, at: nowNanoseconds, "\(node.name) now at \(node.address)")
    }

    /// Moves `node`'s clock `jumpNanoseconds` ahead and sets its drift (parts per
    /// million); its processes' runtimes read and sleep by that clock.
    public func skewClock(_ node: SimNode, jumpNanoseconds: UInt64, driftPPM: Int) {
        node.clock.adjust(at: nowNanoseconds, jumpNanoseconds: jumpNanoseconds, driftPPM: driftPPM)
        trace.note(.fault, at: nowNanoseconds, "\(node.name) clock +\(formatSeconds(jumpNanoseconds)), drift \(driftPPM) ppm (now \(node.clock.offsetNanoseconds(at: nowNanoseconds) / 1_000_000) ms ahead)")
    }

    /// Takes one of `node`'s addresses off the network (a failed NIC or network):
    /// messages to it are lost until `restoreAddress`. Replies to the node's calls
    /// still reach it through the address it sends from.
    public func dropAddress(_ node: SimNode, host: String) {
        network.unbind(NodeAddress(host: host, port: node.port))
        trace.note(.fault, at: nowNanoseconds, "\(node.name) loses \(host)")
    }

    public func restoreAddress(_ node: SimNode, host: String) {
        network.bind(NodeAddress(host: host, port: node.port), to: node)
        trace.note(.heal, at: nowNanoseconds, "\(node.name) regains \(host)")
    }

    // MARK: Running

    /// Starts a world-level task (a workload or a fault schedule) on the simulator
    /// thread. The closure may capture the caller's state freely: everything in a
    /// world runs on its one thread (the tripwire enforces it).
    public func spawn(_ operation: @escaping () async -> Void) {
        let box = UncheckedBox(operation)
        _ = Task(executorPreference: executor) { await box.value() }
    }

    /// Runs until virtual time reaches `untilNanoseconds`, nothing is left to do, or
    /// `shouldStop` returns true. Returns why it stopped.
    @discardableResult
    public func run(untilNanoseconds: UInt64, shouldStop: () -> Bool = { false }) -> SimExecutor.Stop {
        executor.run(untilNanoseconds: untilNanoseconds, shouldStop: shouldStop)
    }

    /// What `simulate` does when the tripwire fired during the run.
    public enum TripwirePolicy: Sendable {
        /// Stop the process with the reason: nondeterminism is a bug, never a warning.
        case crash
        /// Leave it to the caller (tests of the tripwire itself; the scenario runner,
        /// which reports it as a violation).
        case report
    }

    /// Creates a world on a fresh simulator thread, hands it to `body`, and returns
    /// what `body` returns. The world and its tasks are torn down afterwards. If any
    /// job or timer was enqueued from another thread, the tripwire policy applies.
    public static func simulate<T>(
        seed: UInt64, network: NetworkConfig = NetworkConfig(), disk: DiskConfig = DiskConfig(), kv: KVConfig = KVConfig(),
        tripwire: TripwirePolicy = .crash, _ body: @escaping (SimWorld) -> T
    ) -> T {
        SimThread.run {
            let world = SimWorld(seed: seed, network: network, disk: disk, kv: kv)
            let result = body(world)
            if tripwire == .crash, let reason = world.executor.tripped {
                fatalError("determinism tripwire (seed \(seed)): \(reason)")
            }
            world.tearDown()
            return result
        }
    }

    /// Drops every pending job and timer; stranded tasks are leaked, never resumed.
    public func tearDown() {
        for n in nodes { n.process?.kill() }
        executor.discardAll()
    }
}

/// Carries a value the compiler cannot prove sendable onto the simulator thread,
/// where everything runs serially.
struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
