import CisternCore

/// What the operator sees of one `CisternCluster`: its pods and StatefulSets from the
/// Kubernetes API, and its chains and nodes from the cluster manager (nil when the
/// manager could not be reached).
public struct Observation: Sendable, Equatable {
    public struct Pod: Sendable, Equatable {
        public var name: String
        public var role: ClusterRenderer.Role?
        public var ordinal: Int
        public var image: String
        /// Pending, Running, Succeeded, Failed or Unknown.
        public var phase: String
        public var ready: Bool
        public var terminating: Bool
        /// The pod's node stopped reporting (status.reason NodeLost, or phase Unknown).
        public var nodeLost: Bool
        public init(name: String, role: ClusterRenderer.Role?, ordinal: Int, image: String, phase: String = "Running", ready: Bool = true,
                    terminating: Bool = false, nodeLost: Bool = false) {
            self.name = name
            self.role = role
            self.ordinal = ordinal
            self.image = image
            self.phase = phase
            self.ready = ready
            self.terminating = terminating
            self.nodeLost = nodeLost
        }
    }

    public struct Chain: Sendable, Equatable {
        public var id: UInt64
        public var replicas: Int
        public var serving: Int
        /// The chain's version: it moves whenever the manager changes a replica's state.
        public var version: UInt64
        /// Names of the nodes holding its replicas (a storage pod's name is its node's).
        public var members: [String]
        public init(id: UInt64, replicas: Int, serving: Int, version: UInt64 = 0, members: [String] = []) {
            self.id = id
            self.replicas = replicas
            self.serving = serving
            self.version = version
            self.members = members
        }
        public var fullyServing: Bool { serving == replicas }
    }

    /// The cluster manager's view.
    public struct Cluster: Sendable, Equatable {
        public var chains: [Chain]
        /// Storage nodes registered and heartbeating.
        public var storageNodesActive: Int
        /// Targets of active nodes not yet in any chain.
        public var unassignedTargets: Int
        public init(chains: [Chain], storageNodesActive: Int, unassignedTargets: Int) {
            self.chains = chains
            self.storageNodesActive = storageNodesActive
            self.unassignedTargets = unassignedTargets
        }
    }

    public var generation: Int64
    public var pods: [Pod]
    /// Replicas of each StatefulSet that exists, by name.
    public var statefulSetReplicas: [String: Int]
    /// The `cistern.io/spec-hash` annotation of each object that exists, by kind/name.
    public var appliedHashes: [String: String]
    public var cluster: Cluster?
    /// Tenants the master service has (nil: the master was not reached).
    public var tenants: Set<String>?
    public var previous: ClusterStatus?

    public init(generation: Int64 = 1, pods: [Pod] = [], statefulSetReplicas: [String: Int] = [:], appliedHashes: [String: String] = [:],
                cluster: Cluster? = nil, tenants: Set<String>? = nil, previous: ClusterStatus? = nil) {
        self.generation = generation
        self.pods = pods
        self.statefulSetReplicas = statefulSetReplicas
        self.appliedHashes = appliedHashes
        self.cluster = cluster
        self.tenants = tenants
        self.previous = previous
    }
}

/// The `status` the operator writes on a `CisternCluster`.
public struct ClusterStatus: Codable, Sendable, Equatable {
    public struct Condition: Codable, Sendable, Equatable {
        public var type: String
        public var status: String
        public var reason: String
        public var message: String
        public var lastTransitionTime: String
        public var observedGeneration: Int64?
        public init(type: String, status: String, reason: String, message: String, lastTransitionTime: String, observedGeneration: Int64?) {
            self.type = type
            self.status = status
            self.reason = reason
            self.message = message
            self.lastTransitionTime = lastTransitionTime
            self.observedGeneration = observedGeneration
        }
    }
    public struct Storage: Codable, Sendable, Equatable {
        public var nodes: Int
        public var ready: Int
        public var upgraded: Int
        public init(nodes: Int, ready: Int, upgraded: Int) {
            self.nodes = nodes
            self.ready = ready
            self.upgraded = upgraded
        }
    }
    public struct Chains: Codable, Sendable, Equatable {
        public var total: Int
        public var serving: Int
        public init(total: Int, serving: Int) {
            self.total = total
            self.serving = serving
        }
    }
    public struct Upgrade: Codable, Sendable, Equatable {
        public var image: String
        /// The storage pod deleted last for the upgrade (or next to be).
        public var node: String
        /// When it was deleted (seconds on the operator's clock) and the versions of its
        /// chains then: the next pod waits until each of those chains has moved on (the
        /// manager saw the restart and rebuilt it), or `settleSeconds` passed with none
        /// moving (nothing was missed).
        public var deletedAtSeconds: Double?
        public var chainVersions: [String: UInt64]?
        public init(image: String, node: String, deletedAtSeconds: Double? = nil, chainVersions: [String: UInt64]? = nil) {
            self.image = image
            self.node = node
            self.deletedAtSeconds = deletedAtSeconds
            self.chainVersions = chainVersions
        }
    }
    public var observedGeneration: Int64
    public var phase: String
    public var image: String?
    public var storage: Storage
    public var chains: Chains
    public var upgrade: Upgrade?
    public var message: String
    public var conditions: [Condition]

    public init(observedGeneration: Int64, phase: String, image: String?, storage: Storage, chains: Chains, upgrade: Upgrade?, message: String, conditions: [Condition]) {
        self.observedGeneration = observedGeneration
        self.phase = phase
        self.image = image
        self.storage = storage
        self.chains = chains
        self.upgrade = upgrade
        self.message = message
        self.conditions = conditions
    }

    public func condition(_ type: String) -> Condition? { conditions.first { $0.type == type } }
}

/// One thing the operator does.
public enum Directive: Sendable, Equatable {
    /// Create or update an object (server-side apply).
    case apply(JSONValue)
    /// Delete a pod; its StatefulSet makes it again (with the template's image).
    case deletePod(name: String, reason: String, force: Bool)
    /// Ask the cluster manager to make chains of the unassigned targets.
    case createChains(replicas: Int)
    /// Make a tenant through the master service and write its token into its Secret.
    case createTenant(ClusterSpec.Tenant)
    case status(ClusterStatus)
}

/// The operator's decisions for one `CisternCluster`: a pure function of the resource
/// and what was observed, so every rule is tested without an API server and the
/// simulator drives the same code against a simulated cluster.
///
/// - Objects whose rendered form changed (by hash) are applied.
/// - A failed pod, or one whose node is lost, is deleted so its StatefulSet replaces it.
/// - A storage upgrade deletes one storage pod running another image at a time, only
///   when every storage pod is ready and every chain has all its replicas SERVING:
///   so an upgrade never takes a second replica of a chain down, even when a node is
///   lost part way (it waits for the chain to be whole again).
/// - New storage nodes' targets become chains once every wanted node is active.
/// - Storage is never scaled in (that needs data moved off the nodes first): the
///   StatefulSet keeps its size and the status says why.
/// - Tenants missing from the master are made; none is ever deleted.
public struct OperatorPlanner: Sendable {
    public static let hashAnnotation = "cistern.io/spec-hash"

    public let name: String
    public let namespace: String
    public let spec: ClusterSpec
    /// The rendered objects, made once per planner (rendering dominates a plan's cost).
    let rendered: [JSONValue]
    /// Each rendered object with its hash annotation set.
    let annotated: [(key: String, object: JSONValue, hash: String)]

    /// How long after deleting a storage pod the upgrade goes on when the manager
    /// shows no change to its chains (a restart quick enough to miss nothing).
    public let settleSeconds: Double

    public init(name: String, namespace: String, spec: ClusterSpec, settleSeconds: Double = 30) {
        self.name = name
        self.namespace = namespace
        self.spec = spec
        self.settleSeconds = settleSeconds
        self.rendered = spec.problems.isEmpty ? ClusterRenderer(name: name, namespace: namespace, spec: spec).objects() : []
        self.annotated = rendered.map(Self.annotate)
    }

    static func annotate(_ object: JSONValue) -> (key: String, object: JSONValue, hash: String) {
        var o = object
        let h = hash(object)
        o["metadata"]?["annotations"] = [hashAnnotation: .string(h)]
        return (key(object), o, h)
    }

    /// FNV-1a of the object's canonical JSON, as 16 hex digits.
    public static func hash(_ object: JSONValue) -> String {
        let hex = String(StableHash.fnv1a64(bytes: object.encoded()), radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    public static func key(_ object: JSONValue) -> String {
        "\(object["kind"]?.string ?? "?")/\(object.at("metadata.name")?.string ?? "?")"
    }

    /// - Parameters:
    ///   - now: the time conditions record as their transition (RFC 3339).
    ///   - nowSeconds: the same time in seconds, to measure `settleSeconds`.
    public func plan(_ o: Observation, now: String, nowSeconds: Double = 0) -> [Directive] {
        let problems = spec.problems
        let storagePods = o.pods.filter { $0.role == .storage }.sorted { $0.ordinal < $1.ordinal }
        let upgraded = storagePods.filter { $0.image == spec.image && !$0.terminating }.count
        let readyStorage = storagePods.filter { $0.ready && !$0.terminating }.count
        let chains = o.cluster?.chains ?? []
        var status = ClusterStatus(observedGeneration: o.generation, phase: "Running", image: o.previous?.image,
                                   storage: .init(nodes: storagePods.count, ready: readyStorage, upgraded: upgraded),
                                   chains: .init(total: chains.count, serving: chains.filter(\.fullyServing).count),
                                   upgrade: nil, message: "", conditions: [])
        var out: [Directive] = []
        func finish(phase: String, message: String, available: Bool, progressing: Bool, degraded: Bool, reason: String) -> [Directive] {
            status.phase = phase
            status.message = message
            status.conditions = [
                condition("Available", available, available ? "ChainsServing" : reason, message, o, now),
                condition("Progressing", progressing, progressing ? reason : "Settled", message, o, now),
                condition("Degraded", degraded, degraded ? reason : "Healthy", message, o, now),
            ]
            return out + [.status(status)]
        }
        let someChainServes = !chains.isEmpty && chains.allSatisfy { $0.serving > 0 }
        if !problems.isEmpty {
            return finish(phase: "Degraded", message: "the resource is invalid: " + problems.joined(separator: "; "), available: someChainServes,
                          progressing: false, degraded: true, reason: "InvalidSpec")
        }
        if spec.isPaused {
            return finish(phase: "Paused", message: "spec.paused is true: observing only", available: someChainServes, progressing: false,
                          degraded: chains.contains { !$0.fullyServing }, reason: "Paused")
        }

        // 1. Objects: apply what changed. Storage is never scaled in.
        var notes: [String] = []
        let storageSet = "\(name)-storage"
        let keepStorage = (o.statefulSetReplicas[storageSet] ?? 0) > spec.storageNodes ? o.statefulSetReplicas[storageSet] : nil
        if let keep = keepStorage {
            notes.append("storage is not scaled in (spec.storage.nodes \(spec.storageNodes) < \(keep) running): move data off the nodes first; set spec.storage.nodes back to \(keep)")
        }
        for (i, var a) in annotated.enumerated() {
            if let keep = keepStorage, a.key == "StatefulSet/\(storageSet)" {
                var object = rendered[i]
                object["spec"]?["replicas"] = .int(Int64(keep))
                a = Self.annotate(object)
            }
            if o.appliedHashes[a.key] != a.hash { out.append(.apply(a.object)) }
        }

        // 2. Replace pods that cannot come back by themselves.
        for p in o.pods where !p.terminating && (p.phase == "Failed" || p.nodeLost) {
            out.append(.deletePod(name: p.name, reason: p.nodeLost ? "its node is lost" : "it failed", force: p.nodeLost))
        }

        // 3. Chains for targets of new nodes, once every wanted node is active.
        if let c = o.cluster, c.storageNodesActive >= spec.storageNodes, c.unassignedTargets >= spec.chainReplicas {
            out.append(.createChains(replicas: spec.chainReplicas))
            notes.append("making chains of \(c.unassignedTargets) new targets")
        }

        // 4. Tenants.
        if let have = o.tenants {
            for t in spec.tenantList where !have.contains(t.name) { out.append(.createTenant(t)) }
        }

        // 5. Storage upgrade, one node at a time.
        let outdated = storagePods.filter { $0.image != spec.image && !$0.terminating }
        let degraded = chains.contains { !$0.fullyServing } || o.pods.contains { $0.phase == "Failed" || $0.nodeLost }
        var phase = degraded ? "Degraded" : "Running"
        var progressing = false
        var reason = degraded ? "ChainDegraded" : "Settled"
        if chains.isEmpty || o.cluster == nil {
            phase = "Provisioning"
            progressing = true
            reason = o.cluster == nil ? "ManagerUnreachable" : "NoChains"
            notes.append(o.cluster == nil ? "the cluster manager is not reachable yet" : "waiting for storage nodes to register and chains to be made")
        }
        if (o.statefulSetReplicas[storageSet] ?? 0) < spec.storageNodes || (o.cluster.map { $0.unassignedTargets >= spec.chainReplicas } ?? false) {
            if phase != "Provisioning" { phase = "Scaling" }
            progressing = true
            reason = "Scaling"
        }
        if !outdated.isEmpty {
            phase = "Upgrading"
            progressing = true
            reason = "Upgrading"
            let next = outdated[0]
            let previous = o.previous?.upgrade.flatMap { $0.image == spec.image ? $0 : nil }
            status.upgrade = previous ?? .init(image: spec.image, node: next.name)
            let busy = storagePods.filter { $0.terminating || !$0.ready }.map(\.name)
            let broken = chains.filter { !$0.fullyServing }.map { "chain \($0.id) (\($0.serving)/\($0.replicas) serving)" }
            // The pod deleted last: its chains must show the manager saw it restart.
            var unseen: [String] = []
            if let p = previous, let versions = p.chainVersions, let at = p.deletedAtSeconds, nowSeconds - at < settleSeconds {
                unseen = versions.keys.sorted().filter { c in chains.first { String($0.id) == c }.map { $0.version <= versions[c]! } ?? false }
            }
            if o.cluster == nil {
                notes.append("upgrade waits: the cluster manager is not reachable")
            } else if storagePods.count < spec.storageNodes || !busy.isEmpty {
                notes.append("upgrade waits: storage pods not ready: \(busy.isEmpty ? "some are missing" : busy.joined(separator: ", "))")
            } else if !broken.isEmpty {
                notes.append("upgrade waits: not every replica is SERVING: \(broken.prefix(5).joined(separator: ", "))")
            } else if let p = previous, !unseen.isEmpty {
                notes.append("upgrade waits: the cluster manager has not yet seen \(p.node) restart (chains \(unseen.joined(separator: ", ")) unchanged since its deletion; at most \(Int(settleSeconds)) s)")
            } else {
                var versions: [String: UInt64] = [:]
                for c in chains where c.members.contains(next.name) { versions[String(c.id)] = c.version }
                status.upgrade = .init(image: spec.image, node: next.name, deletedAtSeconds: nowSeconds, chainVersions: versions)
                out.append(.deletePod(name: next.name, reason: "upgrade to \(spec.image)", force: false))
                notes.append("upgrading \(next.name) to \(spec.image) (\(upgraded) of \(storagePods.count) done)")
            }
        } else if storagePods.count >= spec.storageNodes {
            status.image = spec.image
        }
        if notes.isEmpty { notes.append(degraded ? "some chains are not fully serving; the cluster manager is rebuilding them" : "every chain serving") }
        return finish(phase: phase, message: notes.joined(separator: "; "), available: someChainServes, progressing: progressing,
                      degraded: degraded, reason: reason)
    }

    func condition(_ type: String, _ value: Bool, _ reason: String, _ message: String, _ o: Observation, _ now: String) -> ClusterStatus.Condition {
        let s = value ? "True" : "False"
        let since = o.previous?.condition(type).flatMap { $0.status == s ? $0.lastTransitionTime : nil } ?? now
        return .init(type: type, status: s, reason: reason, message: message, lastTransitionTime: since, observedGeneration: o.generation)
    }
}
