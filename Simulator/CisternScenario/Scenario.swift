import CisternCore
/// A fault-injection scenario, as written in a YAML file under Scenarios/: a
/// cluster topology, network/disk/KV parameters, a workload, timed faults, random
/// fault generators, a heal time, and the invariants to check.
public struct Scenario: Codable, Sendable {
    public var name: String
    public var description: String?
    /// How long the workload runs.
    public var duration: SimDuration
    /// When every fault is healed (default: 70% of `duration`).
    public var healAt: SimDuration?
    /// After the heal, every operation must finish within this bound.
    public var livenessBound: SimDuration?
    public var topology: Topology
    public var network: NetworkSpec?
    public var disk: DiskSpec?
    public var kv: KVSpec?
    public var workload: Workload
    public var faults: [FaultSpec]?
    public var randomFaults: [RandomFaults]?
    /// Swarm testing: each seed draws its own fault mix (see `Swarm`).
    public var swarm: Swarm?
    /// Checkers to run; default: all that apply to the workload.
    public var invariants: [String]?
    /// The scenario goes beyond what the protocol can repair on purpose: violations
    /// are expected (the run succeeds only if one is detected).
    public var expectViolations: Bool?
    /// The faults take down more nodes at once than the topology tolerates on purpose
    /// (a power loss of every storage node): the survivability check is skipped, and
    /// the invariants listed must still hold once the nodes return.
    public var allowTotalOutage: Bool?
    /// How the simulator picks among jobs ready at the same moment: `fifo` (the
    /// default) or `shuffled` (seed-drawn picks; see `SimExecutor.Scheduling`).
    /// `cistern sim --scheduling` overrides it for a run.
    public var scheduling: String?
    /// Whether fault points in component code may fire (see `Runtime.faultPoint`);
    /// default false. `cistern sim --fault-points on|off` overrides it for a run.
    public var faultPoints: Bool?
    /// Whether the run draws its settings (`Knobs`) from the seed; default false.
    /// `cistern sim --knobs on|off` overrides it for a run.
    public var knobs: Bool?
    /// The draw itself, made by `ScenarioRunner` when `knobs` is on (not in the file).
    public var knobDraw: Knobs?
    /// Knobs pinned to values (`knob_values: {name: value}`): with `knobs` on they
    /// override the draw; without it they change the defaults. What a shrunk
    /// scenario records, and how to hold one setting while seeds vary the rest.
    public var knobValues: [String: UInt64]?
    /// The Kubernetes operator upgrades every storage node, one at a time, from `at`
    /// (storage workload): its planner (`OperatorPlanner`) decides against the
    /// simulated cluster's routing, and a simulated kubelet restarts a deleted pod.
    public var rollingUpgrade: RollingUpgrade?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, description, duration, topology, network, disk, kv, workload, faults, invariants, swarm
        case healAt = "heal_at", livenessBound = "liveness_bound", randomFaults = "random_faults", expectViolations = "expect_violations"
        case allowTotalOutage = "allow_total_outage"
        case scheduling
        case faultPoints = "fault_points"
        case knobs
        case knobValues = "knob_values"
        case rollingUpgrade = "rolling_upgrade"
    }

    public static let schedulingModes = ["fifo", "shuffled"]

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        description = try c.decodeIfPresent(String.self, forKey: .description)
        duration = try c.decode(SimDuration.self, forKey: .duration)
        healAt = try c.decodeIfPresent(SimDuration.self, forKey: .healAt)
        livenessBound = try c.decodeIfPresent(SimDuration.self, forKey: .livenessBound)
        topology = try c.decode(Topology.self, forKey: .topology)
        network = try c.decodeIfPresent(NetworkSpec.self, forKey: .network)
        disk = try c.decodeIfPresent(DiskSpec.self, forKey: .disk)
        kv = try c.decodeIfPresent(KVSpec.self, forKey: .kv)
        workload = try c.decode(Workload.self, forKey: .workload)
        faults = try c.decodeIfPresent([FaultSpec].self, forKey: .faults)
        randomFaults = try c.decodeIfPresent([RandomFaults].self, forKey: .randomFaults)
        swarm = try c.decodeIfPresent(Swarm.self, forKey: .swarm)
        invariants = try c.decodeIfPresent([String].self, forKey: .invariants)
        expectViolations = try c.decodeIfPresent(Bool.self, forKey: .expectViolations)
        allowTotalOutage = try c.decodeIfPresent(Bool.self, forKey: .allowTotalOutage)
        scheduling = try c.decodeIfPresent(String.self, forKey: .scheduling)
        faultPoints = try c.decodeIfPresent(Bool.self, forKey: .faultPoints)
        knobs = try c.decodeIfPresent(Bool.self, forKey: .knobs)
        knobValues = try c.decodeIfPresent([String: UInt64].self, forKey: .knobValues)
        rollingUpgrade = try c.decodeIfPresent(RollingUpgrade.self, forKey: .rollingUpgrade)
        if let pins = knobValues, let why = Knobs.problem(pins) {
            throw DecodingError.dataCorruptedError(forKey: .knobValues, in: c, debugDescription: why)
        }
        if let mode = scheduling, !Self.schedulingModes.contains(mode) {
            throw DecodingError.dataCorruptedError(forKey: .scheduling, in: c, debugDescription: "scheduling: '\(mode)' is not one of \(Self.schedulingModes.joined(separator: ", "))")
        }
    }

    /// `rolling_upgrade: { at: 3s, interval: 500ms, restart_delay: 1s }`.
    public struct RollingUpgrade: Codable, Sendable {
        /// When the new image is set on the resource.
        public var at: SimDuration
        /// How often the operator reconciles (default 500ms).
        public var interval: SimDuration?
        /// How long a deleted pod takes to come back with the new image (default 1s).
        public var restartDelay: SimDuration?
        enum CodingKeys: String, CodingKey, CaseIterable {
            case at, interval
            case restartDelay = "restart_delay"
        }
        public init(from decoder: any Decoder) throws {
            try rejectUnknownKeys(decoder, CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            at = try c.decode(SimDuration.self, forKey: .at)
            interval = try c.decodeIfPresent(SimDuration.self, forKey: .interval)
            restartDelay = try c.decodeIfPresent(SimDuration.self, forKey: .restartDelay)
        }
    }

    public var healTime: SimDuration { healAt ?? SimDuration(nanoseconds: duration.nanoseconds / 10 * 7) }
    public var liveness: SimDuration { livenessBound ?? .seconds(10) }
}

public struct Topology: Codable, Sendable {
    public var nodes: [NodeSpec]
    enum CodingKeys: String, CodingKey, CaseIterable { case nodes }
    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        nodes = try decoder.container(keyedBy: CodingKeys.self).decode([NodeSpec].self, forKey: .nodes)
    }
}

/// Roles a simulated node can play.
public enum NodeRole: String, Codable, Sendable, CaseIterable {
    /// A replica of the demo register.
    case register
    /// Runs the workload's client loop.
    case client
    /// A cluster manager replica.
    case mgmtd
    /// A storage node with `targets` targets.
    case storage
    /// A metadata server (stateless, over the shared transactional KV).
    case meta
}

public struct NodeSpec: Codable, Sendable {
    public var name: String
    public var role: NodeRole
    /// The node's simulated IP (default: assigned).
    public var host: String?
    /// Storage targets on this node (storage nodes only; default 2).
    public var targets: Int?
    /// Addresses on other networks, tried after `host` fails.
    public var secondaryHosts: [String]?
    /// Storage workload: the node joins the running cluster at this time (not at
    /// boot); once enough new nodes registered, the chain table grows onto them.
    public var startAt: SimDuration?
    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, role, host, targets
        case secondaryHosts = "secondary_hosts", startAt = "start_at"
    }
    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        let roleText = try c.decode(String.self, forKey: .role)
        guard let r = NodeRole(rawValue: roleText) else {
            throw DecodingError.dataCorruptedError(forKey: .role, in: c, debugDescription: "unknown role '\(roleText)'; expected one of: \(NodeRole.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        role = r
        host = try c.decodeIfPresent(String.self, forKey: .host)
        targets = try c.decodeIfPresent(Int.self, forKey: .targets)
        secondaryHosts = try c.decodeIfPresent([String].self, forKey: .secondaryHosts)
        startAt = try c.decodeIfPresent(SimDuration.self, forKey: .startAt)
    }
}

public struct NetworkSpec: Codable, Sendable {
    public var latencyMin: SimDuration?
    public var latencyMeanExtra: SimDuration?
    public var loss: Double?
    public var duplicate: Double?
    public var reorder: Double?
    public var nameServiceDelay: SimDuration?
    enum CodingKeys: String, CodingKey, CaseIterable {
        case loss, duplicate, reorder
        case latencyMin = "latency_min", latencyMeanExtra = "latency_mean_extra", nameServiceDelay = "name_service_delay"
    }
    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        latencyMin = try c.decodeIfPresent(SimDuration.self, forKey: .latencyMin)
        latencyMeanExtra = try c.decodeIfPresent(SimDuration.self, forKey: .latencyMeanExtra)
        loss = try c.decodeIfPresent(Double.self, forKey: .loss)
        duplicate = try c.decodeIfPresent(Double.self, forKey: .duplicate)
        reorder = try c.decodeIfPresent(Double.self, forKey: .reorder)
        nameServiceDelay = try c.decodeIfPresent(SimDuration.self, forKey: .nameServiceDelay)
    }
}

public struct DiskSpec: Codable, Sendable {
    public var latencyMin: SimDuration?
    public var latencyMeanExtra: SimDuration?
    public var errorProbability: Double?
    public var capacity: ByteSize?
    enum CodingKeys: String, CodingKey, CaseIterable {
        case capacity
        case latencyMin = "latency_min", latencyMeanExtra = "latency_mean_extra", errorProbability = "error_probability"
    }
    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        latencyMin = try c.decodeIfPresent(SimDuration.self, forKey: .latencyMin)
        latencyMeanExtra = try c.decodeIfPresent(SimDuration.self, forKey: .latencyMeanExtra)
        errorProbability = try c.decodeIfPresent(Double.self, forKey: .errorProbability)
        capacity = try c.decodeIfPresent(ByteSize.self, forKey: .capacity)
    }
}

public struct KVSpec: Codable, Sendable {
    public var latency: SimDuration?
    public var conflictProbability: Double?
    public var maybeCommittedProbability: Double?
    enum CodingKeys: String, CodingKey, CaseIterable {
        case latency
        case conflictProbability = "conflict_probability", maybeCommittedProbability = "maybe_committed_probability"
    }
    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        latency = try c.decodeIfPresent(SimDuration.self, forKey: .latency)
        conflictProbability = try c.decodeIfPresent(Double.self, forKey: .conflictProbability)
        maybeCommittedProbability = try c.decodeIfPresent(Double.self, forKey: .maybeCommittedProbability)
    }
}

/// The client load. `register`: clients read and write a few keys of the demo register.
public struct Workload: Codable, Sendable {
    public var kind: String
    public var keys: Int?
    public var readFraction: Double?
    public var opTimeout: SimDuration?
    public var thinkTime: SimDuration?
    /// A deliberate bug, to prove the checkers catch it: `stale_reads` (register:
    /// reads ask one replica) or `early_takeover` (cluster: replicas ignore a live
    /// lease). Only for scenarios with `expect_violations: true`.
    public var plantedBug: String?
    /// Cluster and storage workloads: replicas per chain (default 3).
    public var replicas: Int?
    /// Storage workload: how many chunks the clients share, and each one's size.
    public var chunks: Int?
    public var chunkBytes: ByteSize?
    /// Cluster workload: heartbeat interval and failure timeout of the cluster manager.
    public var heartbeatInterval: SimDuration?
    public var failureTimeout: SimDuration?
    /// Cluster workload: a killed storage node's targets must be offline in routing
    /// within this bound (default: failure timeout + 2 s).
    public var failureDetectionBound: SimDuration?
    /// KV cache workload: page size, the namespace's capacity in pages, how many
    /// distinct prompt prefixes clients draw from, and the most pages per prefix.
    public var pageBytes: ByteSize?
    public var capacityPages: Int?
    public var prefixes: Int?
    public var prefixPages: Int?
    /// KV cache workload: the namespace's durability, `cache` (the default) or
    /// `durable`.
    public var durability: String?
    /// KV cache workload: run with authentication and this many tenants (1...8), each
    /// with its own namespace, token and quota; clients are spread over them and probe
    /// the other tenants' namespaces, files and chunks (`tenant_isolation`,
    /// `quotas_hold`). Without it the cluster runs without authentication.
    public var tenants: Int?
    enum CodingKeys: String, CodingKey, CaseIterable {
        case kind, keys, replicas, chunks, prefixes, durability, tenants
        case pageBytes = "page_bytes", capacityPages = "capacity_pages", prefixPages = "prefix_pages"
        case chunkBytes = "chunk_bytes"
        case readFraction = "read_fraction", opTimeout = "op_timeout", thinkTime = "think_time", plantedBug = "planted_bug"
        case heartbeatInterval = "heartbeat_interval", failureTimeout = "failure_timeout", failureDetectionBound = "failure_detection_bound"
    }
    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        kind = try c.decode(String.self, forKey: .kind)
        keys = try c.decodeIfPresent(Int.self, forKey: .keys)
        readFraction = try c.decodeIfPresent(Double.self, forKey: .readFraction)
        opTimeout = try c.decodeIfPresent(SimDuration.self, forKey: .opTimeout)
        thinkTime = try c.decodeIfPresent(SimDuration.self, forKey: .thinkTime)
        plantedBug = try c.decodeIfPresent(String.self, forKey: .plantedBug)
        replicas = try c.decodeIfPresent(Int.self, forKey: .replicas)
        chunks = try c.decodeIfPresent(Int.self, forKey: .chunks)
        chunkBytes = try c.decodeIfPresent(ByteSize.self, forKey: .chunkBytes)
        heartbeatInterval = try c.decodeIfPresent(SimDuration.self, forKey: .heartbeatInterval)
        failureTimeout = try c.decodeIfPresent(SimDuration.self, forKey: .failureTimeout)
        failureDetectionBound = try c.decodeIfPresent(SimDuration.self, forKey: .failureDetectionBound)
        pageBytes = try c.decodeIfPresent(ByteSize.self, forKey: .pageBytes)
        capacityPages = try c.decodeIfPresent(Int.self, forKey: .capacityPages)
        prefixes = try c.decodeIfPresent(Int.self, forKey: .prefixes)
        prefixPages = try c.decodeIfPresent(Int.self, forKey: .prefixPages)
        durability = try c.decodeIfPresent(String.self, forKey: .durability)
        tenants = try c.decodeIfPresent(Int.self, forKey: .tenants)
    }
}

/// Fault kinds a scenario can schedule.
public enum FaultKind: String, Codable, Sendable, CaseIterable {
    /// Kill a node's process (page cache survives: nothing unsynced is lost).
    case kill
    /// Kill a node as a machine crash: unsynced writes may be lost or torn.
    case crash
    /// Start a killed node again from its disk.
    case restart
    /// Freeze a node (for `duration`, or until `resume`).
    case pause
    case resume
    /// Cut the network between `groups` (symmetric), or from `from` to `to` (one way).
    case partition
    /// Delay every message of a node for `duration`.
    case clog
    /// Give a node a new IP (identity kept; peers find it through the name service).
    case ipChange = "ip_change"
    /// Take a node's primary address off the network (a failed NIC); peers must fail
    /// over to its `secondary_hosts`.
    case addressDown = "address_down"
    /// Make a node's disk `factor` times slower.
    case slowDisk = "slow_disk"
    /// Make a node's disk fail operations with `probability`.
    case diskErrors = "disk_errors"
    /// Flip one bit on a node's disk.
    case bitFlip = "bit_flip"
    /// Drop messages with `probability` everywhere.
    case loss
    /// Make the transactional KV store unavailable for `duration`.
    case kvOutage = "kv_outage"
    /// Move a node's clock `offset` ahead and make it drift `drift_ppm` (for
    /// `duration`, then it runs at the right rate again; it never goes back).
    case clockSkew = "clock_skew"
    /// Undo every fault now.
    case heal

    /// Decodes fault kind names, naming an unknown one and the known ones.
    static func list<K: CodingKey>(_ texts: [String], in c: KeyedDecodingContainer<K>, forKey key: K) throws -> [FaultKind] {
        try texts.map { t in
            guard let k = FaultKind(rawValue: t) else {
                throw DecodingError.dataCorruptedError(forKey: key, in: c, debugDescription: "unknown fault kind '\(t)'; expected one of: \(FaultKind.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return k
        }
    }
}

public struct FaultSpec: Codable, Sendable {
    public var at: SimDuration
    public var kind: FaultKind
    public var node: String?
    public var groups: [[String]]?
    public var from: [String]?
    public var to: [String]?
    public var duration: SimDuration?
    public var factor: Double?
    public var probability: Double?
    public var host: String?
    public var wipeDisk: Bool?
    /// `bit_flip`: only files whose path contains this (for example `/chunks/` for
    /// chunk data on a storage node).
    public var path: String?
    /// `clock_skew`: how far the node's clock jumps ahead, and its rate error.
    public var offset: SimDuration?
    public var driftPPM: Int?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case at, kind, node, groups, from, to, duration, factor, probability, host, path, offset
        case wipeDisk = "wipe_disk", driftPPM = "drift_ppm"
    }

    public init(at: SimDuration, kind: FaultKind, node: String? = nil) {
        self.at = at
        self.kind = kind
        self.node = node
    }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        at = try c.decode(SimDuration.self, forKey: .at)
        let kindText = try c.decode(String.self, forKey: .kind)
        guard let k = FaultKind(rawValue: kindText) else {
            throw DecodingError.dataCorruptedError(forKey: .kind, in: c, debugDescription: "unknown fault kind '\(kindText)'; expected one of: \(FaultKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        kind = k
        node = try c.decodeIfPresent(String.self, forKey: .node)
        groups = try c.decodeIfPresent([[String]].self, forKey: .groups)
        from = try c.decodeIfPresent([String].self, forKey: .from)
        to = try c.decodeIfPresent([String].self, forKey: .to)
        duration = try c.decodeIfPresent(SimDuration.self, forKey: .duration)
        factor = try c.decodeIfPresent(Double.self, forKey: .factor)
        probability = try c.decodeIfPresent(Double.self, forKey: .probability)
        host = try c.decodeIfPresent(String.self, forKey: .host)
        wipeDisk = try c.decodeIfPresent(Bool.self, forKey: .wipeDisk)
        path = try c.decodeIfPresent(String.self, forKey: .path)
        offset = try c.decodeIfPresent(SimDuration.self, forKey: .offset)
        driftPPM = try c.decodeIfPresent(Int.self, forKey: .driftPPM)
    }
}

/// A random fault generator: between `from` and `until`, faults of `kinds` arrive
/// about every `mean_interval`, each lasting up to `max_duration`, never taking
/// down more nodes at once than the topology survives.
public struct RandomFaults: Codable, Sendable {
    public var kinds: [FaultKind]
    public var meanInterval: SimDuration
    public var from: SimDuration?
    public var until: SimDuration?
    public var maxDuration: SimDuration?
    /// Scales how bad each fault is (loss and disk-error probabilities, slowdowns,
    /// clock jumps), 0...1 (default 1).
    public var severity: Double?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case kinds, from, until, severity
        case meanInterval = "mean_interval", maxDuration = "max_duration"
    }

    public init(kinds: [FaultKind], meanInterval: SimDuration, from: SimDuration? = nil, until: SimDuration? = nil, maxDuration: SimDuration? = nil, severity: Double? = nil) {
        self.kinds = kinds
        self.meanInterval = meanInterval
        self.from = from
        self.until = until
        self.maxDuration = maxDuration
        self.severity = severity
    }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let texts = try c.decode([String].self, forKey: .kinds)
        kinds = try FaultKind.list(texts, in: c, forKey: .kinds)
        meanInterval = try c.decode(SimDuration.self, forKey: .meanInterval)
        from = try c.decodeIfPresent(SimDuration.self, forKey: .from)
        until = try c.decodeIfPresent(SimDuration.self, forKey: .until)
        maxDuration = try c.decodeIfPresent(SimDuration.self, forKey: .maxDuration)
        severity = try c.decodeIfPresent(Double.self, forKey: .severity)
    }
}

/// Swarm testing: instead of one fixed fault mix, each seed draws its own: which
/// fault kinds (a random subset of `kinds`), how often (a mean interval between
/// `min_interval` and `max_interval`, log-uniform), how long each lasts (up to a
/// drawn maximum under `max_duration`) and how severe (0.2...1). Faults come between
/// `from` and `until` (default: the heal time), always within what the topology
/// survives; after the heal every pending operation must finish within the liveness
/// bound.
public struct Swarm: Codable, Sendable {
    /// The pool of kinds a seed draws from (default: every kind random faults can be).
    public var kinds: [FaultKind]?
    public var from: SimDuration?
    public var until: SimDuration?
    public var minInterval: SimDuration?
    public var maxInterval: SimDuration?
    public var maxDuration: SimDuration?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case kinds, from, until
        case minInterval = "min_interval", maxInterval = "max_interval", maxDuration = "max_duration"
    }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let texts = try c.decodeIfPresent([String].self, forKey: .kinds) {
            kinds = try FaultKind.list(texts, in: c, forKey: .kinds)
        }
        from = try c.decodeIfPresent(SimDuration.self, forKey: .from)
        until = try c.decodeIfPresent(SimDuration.self, forKey: .until)
        minInterval = try c.decodeIfPresent(SimDuration.self, forKey: .minInterval)
        maxInterval = try c.decodeIfPresent(SimDuration.self, forKey: .maxInterval)
        maxDuration = try c.decodeIfPresent(SimDuration.self, forKey: .maxDuration)
    }
}
