/// The `spec` of a `CisternCluster` resource (group cistern.io, version v1alpha1),
/// as `deploy/kubernetes/crd/cisternclusters.yaml` defines it. Every field the CRD
/// defaults is optional here with the same default, so a resource decodes alike
/// whether or not an API server applied the defaults. `problems` repeats the CRD's
/// cross-field rules, so `cistern operator render` and the operator refuse a bad
/// resource with the same words even where no API server checked it.
public struct ClusterSpec: Codable, Sendable, Equatable {
    public struct SecretKeyRef: Codable, Sendable, Equatable {
        public var name: String
        public var key: String
        public init(name: String, key: String) {
            self.name = name
            self.key = key
        }
    }

    public struct KV: Codable, Sendable, Equatable {
        public var kind: String?
        public var conninfoSecretRef: SecretKeyRef?
        public var isPostgres: Bool { kind == "postgres" }
        public init(kind: String? = nil, conninfoSecretRef: SecretKeyRef? = nil) {
            self.kind = kind
            self.conninfoSecretRef = conninfoSecretRef
        }
    }

    public struct Volume: Codable, Sendable, Equatable {
        public var size: String?
        public var storageClassName: String?
        public init(size: String? = nil, storageClassName: String? = nil) {
            self.size = size
            self.storageClassName = storageClassName
        }
    }

    /// The managers or the metadata servers.
    public struct Replicated: Codable, Sendable, Equatable {
        public var replicas: Int?
        public var kv: KV?
        public var resources: JSONValue?
        public var volume: Volume?
        public init(replicas: Int? = nil, kv: KV? = nil, resources: JSONValue? = nil, volume: Volume? = nil) {
            self.replicas = replicas
            self.kv = kv
            self.resources = resources
            self.volume = volume
        }
    }

    public struct Master: Codable, Sendable, Equatable {
        public var replicas: Int?
        public var port: Int?
        public var adminTokenSecretRef: SecretKeyRef?
        public var resources: JSONValue?
        public init(replicas: Int? = nil, port: Int? = nil, adminTokenSecretRef: SecretKeyRef? = nil, resources: JSONValue? = nil) {
            self.replicas = replicas
            self.port = port
            self.adminTokenSecretRef = adminTokenSecretRef
            self.resources = resources
        }
    }

    public struct Storage: Codable, Sendable, Equatable {
        public var nodes: Int?
        public var targetsPerNode: Int?
        public var memoryCacheMiB: Int?
        public var volume: Volume?
        public var resources: JSONValue?
        public init(nodes: Int? = nil, targetsPerNode: Int? = nil, memoryCacheMiB: Int? = nil, volume: Volume? = nil, resources: JSONValue? = nil) {
            self.nodes = nodes
            self.targetsPerNode = targetsPerNode
            self.memoryCacheMiB = memoryCacheMiB
            self.volume = volume
            self.resources = resources
        }
    }

    public struct Chains: Codable, Sendable, Equatable {
        public var replicas: Int?
        public init(replicas: Int? = nil) {
            self.replicas = replicas
        }
    }

    public struct Auth: Codable, Sendable, Equatable {
        public var clusterKeySecretRef: SecretKeyRef?
        public init(clusterKeySecretRef: SecretKeyRef? = nil) {
            self.clusterKeySecretRef = clusterKeySecretRef
        }
    }

    public struct Tenant: Codable, Sendable, Equatable {
        public var name: String
        /// Bytes and pages the tenant's namespaces may claim (the master refuses more,
        /// and refuses quotas that together exceed the cluster's capacity).
        public var quotaBytes: Int64
        public var quotaPages: Int64
        public var tokenSecretRef: SecretKeyRef
        public init(name: String, quotaBytes: Int64, quotaPages: Int64, tokenSecretRef: SecretKeyRef) {
            self.name = name
            self.quotaBytes = quotaBytes
            self.quotaPages = quotaPages
            self.tokenSecretRef = tokenSecretRef
        }
    }

    public var image: String
    public var imagePullPolicy: String?
    public var mgmtd: Replicated?
    public var meta: Replicated?
    public var master: Master?
    public var storage: Storage?
    public var chains: Chains?
    public var auth: Auth?
    public var tenants: [Tenant]?
    public var paused: Bool?

    public init(image: String, storageNodes: Int = 3) {
        self.image = image
        self.storage = Storage(nodes: storageNodes)
    }

    // Defaults, as the CRD states them.
    public var mgmtdReplicas: Int { mgmtd?.replicas ?? 1 }
    public var metaReplicas: Int { meta?.replicas ?? 1 }
    public var masterReplicas: Int { master?.replicas ?? 1 }
    public var masterPort: Int { master?.port ?? 8080 }
    public var storageNodes: Int { storage?.nodes ?? 3 }
    public var targetsPerNode: Int { storage?.targetsPerNode ?? 2 }
    public var chainReplicas: Int { chains?.replicas ?? 3 }
    public var pullPolicy: String { imagePullPolicy ?? "IfNotPresent" }
    public var isPaused: Bool { paused ?? false }
    public var tenantList: [Tenant] { tenants ?? [] }

    /// Every rule the resource breaks, each naming the field and the fix; empty when
    /// it can be provisioned.
    public var problems: [String] {
        var out: [String] = []
        func range(_ name: String, _ v: Int, _ r: ClosedRange<Int>) {
            if !r.contains(v) { out.append("spec.\(name) is \(v); it must be within \(r.lowerBound)...\(r.upperBound)") }
        }
        if image.isEmpty { out.append("spec.image is empty; name the cistern image, e.g. ghcr.io/cistern/cistern:0.9.0") }
        if !["Always", "IfNotPresent", "Never"].contains(pullPolicy) { out.append("spec.imagePullPolicy is '\(pullPolicy)'; use Always, IfNotPresent or Never") }
        range("mgmtd.replicas", mgmtdReplicas, 1...7)
        range("meta.replicas", metaReplicas, 1...32)
        range("master.replicas", masterReplicas, 0...16)
        range("master.port", masterPort, 1...65_535)
        range("storage.nodes", storageNodes, 1...1_024)
        range("storage.targetsPerNode", targetsPerNode, 1...99)
        range("chains.replicas", chainReplicas, 1...5)
        for (name, part) in [("mgmtd", mgmtd), ("meta", meta)] {
            let kind = part?.kv?.kind ?? "sqlite"
            let replicas = name == "mgmtd" ? mgmtdReplicas : metaReplicas
            if kind != "sqlite" && kind != "postgres" { out.append("spec.\(name).kv.kind is '\(kind)'; use sqlite or postgres") }
            if kind == "sqlite" && replicas != 1 { out.append("spec.\(name).replicas is \(replicas) with kv.kind sqlite, which serves one replica; use kv.kind postgres for more than one replica") }
            if kind == "postgres" && part?.kv?.conninfoSecretRef == nil { out.append("spec.\(name).kv.conninfoSecretRef is missing; kv.kind postgres needs a Secret holding the libpq connection string") }
        }
        if chainReplicas > storageNodes { out.append("spec.chains.replicas is \(chainReplicas) but spec.storage.nodes is \(storageNodes); a chain keeps each replica on its own node, so use at most \(storageNodes) replicas or more nodes") }
        if masterReplicas > 0 && master?.adminTokenSecretRef == nil { out.append("spec.master.adminTokenSecretRef is missing; the master service needs the admin token (a Secret) when master.replicas > 0") }
        if !tenantList.isEmpty {
            if masterReplicas == 0 { out.append("spec.tenants needs the master service (master.replicas > 0): tenants are made through it") }
            if auth?.clusterKeySecretRef == nil { out.append("spec.tenants needs spec.auth.clusterKeySecretRef (a Secret holding a key from `cistern keygen`): without a cluster key nothing checks tenants") }
        }
        var seen: Set<String> = []
        for t in tenantList {
            if !Self.isDNSLabel(t.name) || t.name.count > 32 || t.name == "admin" { out.append("spec.tenants name '\(t.name)' is not a tenant name; use up to 32 lowercase letters, digits and '-', not 'admin'") }
            if !seen.insert(t.name).inserted { out.append("spec.tenants names '\(t.name)' twice; name each tenant once") }
            if t.quotaBytes < 0 || t.quotaPages < 0 { out.append("spec.tenants '\(t.name)' has a negative quota; quotaBytes and quotaPages are at least 0") }
        }
        return out
    }

    static func isDNSLabel(_ s: String) -> Bool {
        guard let first = s.first, let last = s.last, s.count <= 63 else { return false }
        let ok = s.allSatisfy { ($0 >= "a" && $0 <= "z") || ($0 >= "0" && $0 <= "9") || $0 == "-" }
        return ok && first != "-" && last != "-"
    }
}
