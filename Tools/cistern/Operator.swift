import ArgumentParser
import Cistern
import CisternAuth
import CisternConnect
import CisternOperator
import CisternOperatorHTTP
import CisternRouting
import Foundation
import Yams

struct Operator: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "operator",
        abstract: "Run the Kubernetes operator for CisternCluster resources, or render one resource's objects.",
        discussion: """
        With --render FILE: prints the Kubernetes objects a CisternCluster (YAML) wants, \
        as a YAML stream, without any API server (exits 1 naming each problem of an \
        invalid resource). Otherwise: every --interval-seconds, for each CisternCluster, \
        observes its pods and StatefulSets (API) and chains (the cluster manager), \
        decides (OperatorPlanner) and acts: applies objects, replaces failed pods, \
        upgrades storage one node at a time, makes chains and tenants, writes status. \
        The API is reached over plain HTTP through `kubectl proxy` (a sidecar in \
        deploy/kubernetes/operator), which adds TLS and the service account's token.
        """)
    @Option(help: "The Kubernetes API (through kubectl proxy)") var apiServer = "http://127.0.0.1:8001"
    @Option(help: "Watch only this namespace (default: every namespace)") var namespace: String?
    @Option(help: "Seconds between reconciliations") var intervalSeconds: Double = 10
    @Flag(help: "Reconcile once and exit") var once = false
    @Option(help: "Serve GET /healthz here (empty: no health endpoint)") var healthListen = "0.0.0.0:8081"
    @Option(help: "Print the objects of the CisternCluster in this YAML file and exit") var render: String?
    @Option(help: "Reach the cluster's servers with this client config (cluster.yaml) instead of their pods' DNS names (an operator outside the cluster)") var clusterConfig: String?
    @Option(help: "Reach the master service at this URL instead of NAME-api.NAMESPACE.svc") var masterURL: String?

    func run() async throws {
        if let render { return try Self.render(render) }
        guard intervalSeconds >= 1 && intervalSeconds <= 3_600 else { throw ValidationError("--interval-seconds must be within 1...3600") }
        let api = KubernetesAPI(http: try NIOHTTPExchange(url: apiServer))
        var reach = Reach(master: masterURL)
        if let file = clusterConfig {
            do { reach.cluster = try ServerConfig.Cluster.locate(file) } catch { throw ValidationError("--cluster-config \(file): \(error)") }
        }
        if !healthListen.isEmpty {
            let parts = healthListen.split(separator: ":")
            guard parts.count == 2, let port = Int(parts[1]) else { throw ValidationError("--health-listen must be HOST:PORT") }
            let host = String(parts[0])
            Task { try? await WebhookServer.health(host: host, port: port) }
        }
        while true {
            do {
                for c in try await api.clusters(namespace: namespace) {
                    do {
                        try await Self.reconcile(c, api: api, reach: reach)
                    } catch {
                        Self.log("\(c.namespace)/\(c.name): \(error)")
                    }
                }
            } catch {
                Self.log("\(error)")
                if once { throw ExitCode.failure }
            }
            if once { return }
            try await Task.sleep(nanoseconds: UInt64(intervalSeconds * 1e9))
        }
    }

    static func log(_ line: String) {
        FileHandle.standardError.write(Data("cistern operator: \(line)\n".utf8))
    }

    static func render(_ file: String) throws {
        let text: String
        do { text = try String(contentsOfFile: file, encoding: .utf8) } catch { throw ValidationError("cannot read \(file): \(error)") }
        guard let any = try Yams.load(yaml: text) else { throw ValidationError("\(file) is empty") }
        let json = try JSONValue.decode(JSONSerialization.data(withJSONObject: any))
        guard json["kind"]?.string == "CisternCluster", let name = json.at("metadata.name")?.string else {
            throw ValidationError("\(file) is not a CisternCluster (kind and metadata.name)")
        }
        let spec: ClusterSpec
        do { spec = try (json["spec"] ?? .null).decode(as: ClusterSpec.self) } catch { throw ValidationError("\(file): spec: \(error)") }
        if !spec.problems.isEmpty {
            for p in spec.problems { log("\(file): \(p)") }
            throw ExitCode.failure
        }
        let renderer = ClusterRenderer(name: name, namespace: json.at("metadata.namespace")?.string ?? "default", spec: spec)
        for object in renderer.objects() {
            print("---")
            print(try Yams.dump(object: native(object), sortKeys: true), terminator: "")
        }
    }

    /// Swift values Yams writes as YAML (Foundation numbers would come out as floats).
    static func native(_ v: JSONValue) -> Any? {
        switch v {
        case .null: return nil
        case .bool(let b): return b
        case .int(let i): return Int(i)
        case .double(let d): return d
        case .string(let s): return s
        case .array(let a): return a.map { native($0) as Any }
        case .object(let o): return o.mapValues { native($0) as Any }
        }
    }

    /// How the operator reaches a cluster's servers: by default their in-cluster names.
    struct Reach {
        var master: String?
        var cluster: ServerConfig.Cluster?
    }

    /// One pass for one cluster: observe, plan, act.
    static func reconcile(_ c: ClusterResource, api: KubernetesAPI, reach: Reach) async throws {
        guard let spec = c.spec else {
            log("\(c.namespace)/\(c.name): spec does not decode: \(c.specError ?? "?")")
            return
        }
        let planner = OperatorPlanner(name: c.name, namespace: c.namespace, spec: spec)
        let renderer = ClusterRenderer(name: c.name, namespace: c.namespace, spec: spec)
        let (pods, replicas, hashes) = try await api.observe(namespace: c.namespace, cluster: c.name)
        var observation = Observation(generation: c.generation, pods: pods, statefulSetReplicas: replicas, appliedHashes: hashes, previous: c.status)
        var key: CapabilityKey?
        if let ref = spec.auth?.clusterKeySecretRef, let hex = try await api.secretValue(namespace: c.namespace, name: ref.name, key: ref.key) {
            key = try? CapabilityKey(hex: hex)
        }
        // The cluster manager, once a manager pod runs.
        var session: ClientSession?
        if pods.contains(where: { $0.role == .mgmtd && $0.ready }) {
            session = try? await ClientSession.connect(reach.cluster ?? renderer.clusterConfig, name: "operator", clusterKey: key)
            if let s = session {
                await s.client.mgmtd.refreshRouting()
                if let r = await s.client.mgmtd.routing { observation.cluster = ClusterObservation.from(r) }
            }
        }
        defer { if let session { Task { await session.close() } } }
        // The master's tenants, once a master pod is ready.
        let master = reach.master ?? masterEndpoint(renderer)
        var adminToken: String?
        if let ref = spec.master?.adminTokenSecretRef { adminToken = try? await api.secretValue(namespace: c.namespace, name: ref.name, key: ref.key) }
        if !spec.tenantList.isEmpty, pods.contains(where: { $0.role == .master && $0.ready }), let token = adminToken, let http = try? NIOHTTPExchange(url: master, timeoutSeconds: 10) {
            if let r = try? await http.send(HTTPRequest(method: "GET", path: "/v1/tenants", authorization: "Bearer \(token)")), r.status == 200,
               let list = try? JSONValue.decode(r.body)["tenants"]?.array {
                observation.tenants = Set(list.compactMap { $0["name"]?.string })
            }
        }
        let now = ISO8601DateFormatter().string(from: Date())
        for d in planner.plan(observation, now: now, nowSeconds: Date().timeIntervalSince1970) {
            switch d {
            case .apply(let object):
                try await api.apply(object)
                log("\(c.namespace)/\(c.name): applied \(OperatorPlanner.key(object))")
            case .deletePod(let name, let reason, let force):
                try await api.deletePod(namespace: c.namespace, name: name, force: force)
                log("\(c.namespace)/\(c.name): deleted pod \(name): \(reason)")
            case .createChains(let replicas):
                guard let s = session else { continue }
                let reply = try await s.client.mgmtd.call(.createChains(replicas: replicas))
                log("\(c.namespace)/\(c.name): create chains of \(replicas): \(reply)")
            case .createTenant(let t):
                guard let token = adminToken else { continue }
                try await createTenant(t, cluster: c, master: master, adminToken: token, api: api, labels: renderer.labels(nil))
            case .status(let status):
                try await api.patchStatus(namespace: c.namespace, name: c.name, status)
            }
        }
    }

    static func masterEndpoint(_ r: ClusterRenderer) -> String {
        "http://\(r.apiServiceName).\(r.namespace).svc:\(r.spec.masterPort)"
    }

    /// Makes a tenant through the master, issues a token and stores it in the tenant's
    /// Secret. A tenant whose Secret exists already gets no new token.
    static func createTenant(_ t: ClusterSpec.Tenant, cluster c: ClusterResource, master: String, adminToken: String, api: KubernetesAPI, labels: JSONValue) async throws {
        let http = try NIOHTTPExchange(url: master, timeoutSeconds: 10)
        let auth = "Bearer \(adminToken)"
        let body: JSONValue = ["name": .string(t.name), "quotaBytes": .int(t.quotaBytes), "quotaPages": .int(t.quotaPages)]
        let made = try await http.send(HTTPRequest(method: "POST", path: "/v1/tenants", contentType: "application/json", body: body.encoded(), authorization: auth))
        guard made.status == 201 || made.status == 409 else {
            throw KubernetesError.malformed("the master refused tenant \(t.name): \(made.status) \(String(decoding: made.body.prefix(300), as: UTF8.self))")
        }
        if try await api.secretValue(namespace: c.namespace, name: t.tokenSecretRef.name, key: t.tokenSecretRef.key) != nil { return }
        let issued = try await http.send(HTTPRequest(method: "POST", path: "/v1/tenants/\(t.name)/tokens", contentType: "application/json",
                                                     body: Array("{\"id\":\"operator\"}".utf8), authorization: auth))
        guard issued.status == 201, let token = try JSONValue.decode(issued.body)["token"]?.string else {
            throw KubernetesError.malformed("the master issued no token for \(t.name): \(issued.status)")
        }
        try await api.createSecret(namespace: c.namespace, name: t.tokenSecretRef.name, key: t.tokenSecretRef.key, value: token, labels: labels)
        log("\(c.namespace)/\(c.name): made tenant \(t.name); its token is in Secret \(t.tokenSecretRef.name)")
    }
}

struct Webhook: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the admission webhook that injects the Cistern FUSE mount into pods that ask for it.",
        discussion: """
        Pods labelled cistern.io/inject-mount: "true" get a privileged native sidecar \
        running `cistern mount`, and every container sees the mount at the path in \
        the cistern.io/mount annotation (see deploy/kubernetes/README.md). POST /mutate \
        takes an AdmissionReview; GET /healthz. The API server needs HTTPS: give \
        --tls-cert and --tls-key (plain HTTP without them, for tests).
        """)
    @Option(help: "HOST:PORT to listen on") var listen = "0.0.0.0:8443"
    @Option(help: "PEM certificate chain") var tlsCert: String?
    @Option(help: "PEM private key") var tlsKey: String?
    @Option(help: "The image of the injected sidecar (it runs `cistern mount`)") var image = "ghcr.io/cistern/cistern:0.9.0"

    func run() async throws {
        let parts = listen.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]), (0...65_535).contains(port) else { throw ValidationError("--listen must be HOST:PORT") }
        let server = WebhookServer(injector: MountInjector(image: image), host: String(parts[0]), port: port, tlsCertificate: tlsCert, tlsKey: tlsKey)
        try await server.run { port in
            FileHandle.standardError.write(Data("cistern webhook: serving on \(parts[0]):\(port)\(tlsCert == nil ? " (plain HTTP)" : "")\n".utf8))
        }
    }
}
