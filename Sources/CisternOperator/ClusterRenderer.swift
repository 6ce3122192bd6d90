import CisternConnect
import Yams

/// The Kubernetes objects a `CisternCluster` wants (a pure function of its name,
/// namespace and spec): one ConfigMap of server configs (one per pod, made with the
/// servers' own `ServerConfig`, so each parses by construction), one of client
/// configuration, headless Services, a StatefulSet per role and a Service for the
/// master's HTTP API. Server `N-storage` uses `OnDelete` updates: its pods change
/// image only when the operator deletes them, one at a time (`OperatorPlanner`).
public struct ClusterRenderer: Sendable {
    public let name: String
    public let namespace: String
    public let spec: ClusterSpec

    /// Port every server listens on for the cluster's RPC, and for Prometheus.
    public static let rpcPort = 9000
    public static let metricsPort = 9100
    public static let dataPath = "/var/lib/cistern"
    public static let configPath = "/etc/cistern/config"

    public enum Role: String, CaseIterable, Sendable {
        case mgmtd, meta, storage, master
    }

    public init(name: String, namespace: String, spec: ClusterSpec) {
        self.name = name
        self.namespace = namespace
        self.spec = spec
    }

    public func statefulSetName(_ role: Role) -> String { "\(name)-\(role.rawValue)" }
    public func podName(_ role: Role, _ ordinal: Int) -> String { "\(statefulSetName(role))-\(ordinal)" }
    public var configMapName: String { "\(name)-config" }
    public var clientConfigMapName: String { "\(name)-client" }
    public var apiServiceName: String { "\(name)-api" }

    public func replicas(_ role: Role) -> Int {
        switch role {
        case .mgmtd: return spec.mgmtdReplicas
        case .meta: return spec.metaReplicas
        case .storage: return spec.storageNodes
        case .master: return spec.masterReplicas
        }
    }

    /// A pod's stable DNS name through its StatefulSet's headless Service.
    public func host(_ role: Role, _ ordinal: Int) -> String {
        "\(podName(role, ordinal)).\(statefulSetName(role)).\(namespace).svc"
    }

    /// Node ids: managers 1..., metadata servers 10..., masters 90..., storage nodes
    /// 1000... (their targets are id x 100 + 1...targetsPerNode).
    public static func nodeID(_ role: Role, _ ordinal: Int) -> UInt32 {
        switch role {
        case .mgmtd: return UInt32(1 + ordinal)
        case .meta: return UInt32(10 + ordinal)
        case .master: return UInt32(90 + ordinal)
        case .storage: return UInt32(1_000 + ordinal)
        }
    }

    public func labels(_ role: Role?) -> JSONValue {
        var l: JSONValue = ["app.kubernetes.io/name": "cistern", "app.kubernetes.io/instance": .string(name),
                            "app.kubernetes.io/managed-by": "cistern-operator", "cistern.io/cluster": .string(name)]
        if let role { l["app.kubernetes.io/component"] = .string(role.rawValue) }
        return l
    }

    var cluster: ServerConfig.Cluster {
        ServerConfig.Cluster(mgmtd: (0..<spec.mgmtdReplicas).map { .init(id: Self.nodeID(.mgmtd, $0), address: "\(host(.mgmtd, $0)):\(Self.rpcPort)") },
                             meta: (0..<spec.metaReplicas).map { .init(id: Self.nodeID(.meta, $0), address: "\(host(.meta, $0)):\(Self.rpcPort)") })
    }

    static func secretPath(_ kind: String, _ ref: ClusterSpec.SecretKeyRef) -> String { "/etc/cistern/\(kind)/\(ref.key)" }

    /// The configuration of one server pod.
    public func serverConfig(_ role: Role, _ ordinal: Int) -> ServerConfig {
        let id = Self.nodeID(role, ordinal)
        let listen = role == .master ? "0.0.0.0:\(spec.masterPort)" : "0.0.0.0:\(Self.rpcPort)"
        let advertise = role == .master ? nil : ["\(host(role, ordinal)):\(Self.rpcPort)"]
        var c = ServerConfig(node: .init(id: id, name: podName(role, ordinal), role: ServerConfig.Role(rawValue: role.rawValue)!, listen: listen, advertise: advertise),
                             cluster: cluster)
        if role != .master { c.metrics = .init(listen: "0.0.0.0:\(Self.metricsPort)") }
        let key = spec.auth?.clusterKeySecretRef.map { Self.secretPath("auth", $0) }
        let admin = spec.master?.adminTokenSecretRef.map { Self.secretPath("admin", $0) }
        switch role {
        case .mgmtd, .meta:
            let kv = (role == .mgmtd ? spec.mgmtd : spec.meta)?.kv
            if kv?.isPostgres == true, let ref = kv?.conninfoSecretRef {
                c.kv = .init(kind: "postgres", conninfoFile: Self.secretPath("kv", ref))
            } else {
                c.kv = .init(kind: "sqlite", path: "\(Self.dataPath)/kv/\(role.rawValue).sqlite")
            }
            if let key { c.auth = .init(clusterKeyFile: key, adminTokenFile: role == .meta ? admin : nil) }
        case .storage:
            c.storage = .init(dataDir: "\(Self.dataPath)/data", targets: (1...spec.targetsPerNode).map { UInt64(id) * 100 + UInt64($0) },
                              memoryCacheMiB: spec.storage?.memoryCacheMiB)
            if let key { c.auth = .init(clusterKeyFile: key) }
        case .master:
            c.master = .init(adminTokenFile: admin ?? "/etc/cistern/admin/token")
        }
        return c
    }

    static func yaml<T: Encodable>(_ value: T) -> String {
        (try? YAMLEncoder().encode(value)) ?? ""
    }

    func metadata(_ objectName: String, _ role: Role?) -> JSONValue {
        ["name": .string(objectName), "namespace": .string(namespace), "labels": labels(role)]
    }

    /// Every object, in the order they are applied.
    public func objects() -> [JSONValue] {
        var configs: JSONValue = [:]
        for role in Role.allCases {
            for i in 0..<replicas(role) { configs["\(podName(role, i)).yaml"] = .string(Self.yaml(serverConfig(role, i))) }
        }
        var out: [JSONValue] = [
            ["apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(configMapName, nil), "data": configs],
            ["apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(clientConfigMapName, nil), "data": ["cluster.yaml": .string(Self.yaml(cluster))]],
        ]
        for role in Role.allCases where replicas(role) > 0 || role != .master {
            out.append(headlessService(role))
            out.append(statefulSet(role))
        }
        if spec.masterReplicas > 0 {
            out.append(["apiVersion": "v1", "kind": "Service", "metadata": metadata(apiServiceName, .master),
                        "spec": ["selector": selector(.master), "ports": [["name": "http", "port": .int(Int64(spec.masterPort)), "targetPort": "http"]]]])
        }
        return out
    }

    func selector(_ role: Role) -> JSONValue {
        ["app.kubernetes.io/instance": .string(name), "app.kubernetes.io/component": .string(role.rawValue)]
    }

    func headlessService(_ role: Role) -> JSONValue {
        let port: JSONValue = role == .master
            ? ["name": "http", "port": .int(Int64(spec.masterPort)), "targetPort": "http"]
            : ["name": "rpc", "port": .int(Int64(Self.rpcPort)), "targetPort": "rpc"]
        return ["apiVersion": "v1", "kind": "Service", "metadata": metadata(statefulSetName(role), role),
                "spec": ["clusterIP": "None", "publishNotReadyAddresses": true, "selector": selector(role), "ports": [port]]]
    }

    func statefulSet(_ role: Role) -> JSONValue {
        var mounts: [JSONValue] = [["name": "config", "mountPath": .string(Self.configPath), "readOnly": true]]
        var volumes: [JSONValue] = [["name": "config", "configMap": ["name": .string(configMapName)]]]
        func secret(_ kind: String, _ ref: ClusterSpec.SecretKeyRef?) {
            guard let ref else { return }
            mounts.append(["name": .string(kind), "mountPath": .string("/etc/cistern/\(kind)"), "readOnly": true])
            volumes.append(["name": .string(kind), "secret": ["secretName": .string(ref.name), "items": [["key": .string(ref.key), "path": .string(ref.key)]]]])
        }
        let part: ClusterSpec.Replicated? = role == .mgmtd ? spec.mgmtd : role == .meta ? spec.meta : nil
        if role != .master { secret("auth", spec.auth?.clusterKeySecretRef) }
        if role == .meta || role == .master { secret("admin", spec.master?.adminTokenSecretRef) }
        if let p = part, p.kv?.isPostgres == true { secret("kv", p.kv?.conninfoSecretRef) }
        let stateful = role != .master
        if stateful { mounts.append(["name": "data", "mountPath": .string(Self.dataPath)]) }
        var ports: [JSONValue] = role == .master
            ? [["name": "http", "containerPort": .int(Int64(spec.masterPort))]]
            : [["name": "rpc", "containerPort": .int(Int64(Self.rpcPort))], ["name": "metrics", "containerPort": .int(Int64(Self.metricsPort))]]
        ports = ports.map { p in var q = p; q["protocol"] = "TCP"; return q }
        let resources: JSONValue? = switch role {
        case .mgmtd: spec.mgmtd?.resources
        case .meta: spec.meta?.resources
        case .storage: spec.storage?.resources
        case .master: spec.master?.resources
        }
        var container: JSONValue = [
            "name": "server", "image": .string(spec.image), "imagePullPolicy": .string(spec.pullPolicy),
            "args": ["server", "--role", .string(role.rawValue), "--config", .string("\(Self.configPath)/$(POD_NAME).yaml")],
            "env": [["name": "POD_NAME", "valueFrom": ["fieldRef": ["fieldPath": "metadata.name"]]]],
            "ports": .array(ports), "volumeMounts": .array(mounts),
            "readinessProbe": ["tcpSocket": ["port": role == .master ? "http" : "rpc"], "periodSeconds": 5],
        ]
        if let resources { container["resources"] = resources }
        var podSpec: JSONValue = ["containers": [container], "volumes": .array(volumes),
                                  "terminationGracePeriodSeconds": role == .storage ? 60 : 30]
        if role == .storage {
            // Replicas of a chain on different machines where the scheduler can.
            podSpec["affinity"] = ["podAntiAffinity": ["preferredDuringSchedulingIgnoredDuringExecution": [[
                "weight": 100, "podAffinityTerm": ["topologyKey": "kubernetes.io/hostname", "labelSelector": ["matchLabels": selector(.storage)]],
            ]]]]
        }
        var setSpec: JSONValue = [
            "serviceName": .string(statefulSetName(role)), "replicas": .int(Int64(replicas(role))),
            "podManagementPolicy": "Parallel", "selector": ["matchLabels": selector(role)],
            "updateStrategy": role == .storage ? ["type": "OnDelete"] : ["type": "RollingUpdate"],
            "template": ["metadata": ["labels": labels(role)], "spec": podSpec],
        ]
        if stateful {
            let volume = role == .storage ? spec.storage?.volume : part?.volume
            var claim: JSONValue = ["accessModes": ["ReadWriteOnce"],
                                    "resources": ["requests": ["storage": .string(volume?.size ?? (role == .storage ? "100Gi" : "1Gi"))]]]
            if let c = volume?.storageClassName { claim["storageClassName"] = .string(c) }
            setSpec["volumeClaimTemplates"] = [["metadata": ["name": "data"], "spec": claim]]
        }
        return ["apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": metadata(statefulSetName(role), role), "spec": setSpec]
    }
}
