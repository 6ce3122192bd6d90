import Foundation

/// One HTTP request to the Kubernetes API server (through `kubectl proxy`, which adds
/// the service account's credentials and TLS) and its answer: the seam between the
/// operator and the network, so tests replay recorded API responses.
public struct HTTPRequest: Sendable, Equatable {
    public var method: String
    /// Path and query, e.g. `/api/v1/namespaces/ns/pods?labelSelector=...`.
    public var path: String
    public var contentType: String?
    public var body: [UInt8]
    /// An `Authorization` header (the master's bearer token; the API's comes from the proxy).
    public var authorization: String?
    public init(method: String, path: String, contentType: String? = nil, body: [UInt8] = [], authorization: String? = nil) {
        self.method = method
        self.path = path
        self.contentType = contentType
        self.body = body
        self.authorization = authorization
    }
}

public struct HTTPResponse: Sendable, Equatable {
    public var status: Int
    public var body: [UInt8]
    public init(status: Int, body: [UInt8]) {
        self.status = status
        self.body = body
    }
}

public protocol HTTPExchange: Sendable {
    func send(_ request: HTTPRequest) async throws -> HTTPResponse
}

public enum KubernetesError: Error, Equatable, CustomStringConvertible {
    /// The API answered with an error status (its `Status` object's reason and message).
    case status(code: Int, reason: String, message: String, request: String)
    /// The answer was not the JSON expected.
    case malformed(String)
    /// Nothing answered at the address.
    case unreachable(String)

    public var description: String {
        switch self {
        case .status(let code, let reason, let message, let request):
            let hint: String = switch code {
            case 401, 403: "; check the operator's ServiceAccount and ClusterRole (deploy/kubernetes/operator/rbac.yaml)"
            case 404 where request.contains("cisternclusters"): "; is the CRD installed? kubectl apply -f deploy/kubernetes/crd/"
            default: ""
            }
            return "Kubernetes API \(request): \(code) \(reason): \(message)\(hint)"
        case .malformed(let why): return "Kubernetes API answer not understood: \(why)"
        case .unreachable(let why): return "\(why); is the API (kubectl proxy beside the operator, --api-server) or the service running?"
        }
    }
}

/// A `CisternCluster` as listed.
public struct ClusterResource: Sendable, Equatable {
    public var name: String
    public var namespace: String
    public var generation: Int64
    public var spec: ClusterSpec?
    /// Why the spec did not decode (a field of the wrong type), when it did not.
    public var specError: String?
    public var status: ClusterStatus?
}

/// The calls the operator makes, each one request.
public struct KubernetesAPI: Sendable {
    public let http: any HTTPExchange
    public static let fieldManager = "cistern-operator"

    public init(http: any HTTPExchange) { self.http = http }

    static func escape(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? s
    }

    func call(_ request: HTTPRequest, allow404: Bool = false) async throws -> JSONValue? {
        let response = try await http.send(request)
        if allow404 && response.status == 404 { return nil }
        guard (200..<300).contains(response.status) else {
            let status = try? JSONValue.decode(response.body)
            throw KubernetesError.status(code: response.status, reason: status?["reason"]?.string ?? "Unknown",
                                         message: status?["message"]?.string ?? String(decoding: response.body.prefix(300), as: UTF8.self),
                                         request: "\(request.method) \(request.path)")
        }
        do { return try JSONValue.decode(response.body) } catch { throw KubernetesError.malformed("\(request.method) \(request.path): \(error)") }
    }

    /// `CisternCluster`s in `namespace`, or in every namespace.
    public func clusters(namespace: String?) async throws -> [ClusterResource] {
        let path = namespace.map { "/apis/cistern.io/v1alpha1/namespaces/\($0)/cisternclusters" } ?? "/apis/cistern.io/v1alpha1/cisternclusters"
        guard let list = try await call(HTTPRequest(method: "GET", path: path))?["items"]?.array else { throw KubernetesError.malformed("no items in \(path)") }
        return list.map { item in
            var r = ClusterResource(name: item.at("metadata.name")?.string ?? "", namespace: item.at("metadata.namespace")?.string ?? "",
                                    generation: item.at("metadata.generation")?.int ?? 0)
            do { r.spec = try (item["spec"] ?? .null).decode(as: ClusterSpec.self) } catch { r.specError = "\(error)" }
            r.status = try? item["status"]?.decode(as: ClusterStatus.self)
            return r
        }
    }

    static func collection(kind: String, namespace: String) throws -> String {
        switch kind {
        case "ConfigMap": return "/api/v1/namespaces/\(namespace)/configmaps"
        case "Service": return "/api/v1/namespaces/\(namespace)/services"
        case "Secret": return "/api/v1/namespaces/\(namespace)/secrets"
        case "Pod": return "/api/v1/namespaces/\(namespace)/pods"
        case "StatefulSet": return "/apis/apps/v1/namespaces/\(namespace)/statefulsets"
        default: throw KubernetesError.malformed("the operator does not manage kind \(kind)")
        }
    }

    /// Objects of `kind` labelled as part of cluster `name`.
    public func list(kind: String, namespace: String, cluster name: String) async throws -> [JSONValue] {
        let path = try Self.collection(kind: kind, namespace: namespace) + "?labelSelector=" + Self.escape("cistern.io/cluster=\(name)")
        guard let items = try await call(HTTPRequest(method: "GET", path: path))?["items"]?.array else { throw KubernetesError.malformed("no items in \(path)") }
        return items
    }

    /// Creates or updates `object` with server-side apply (this operator owns the fields it sets).
    public func apply(_ object: JSONValue) async throws {
        guard let kind = object["kind"]?.string, let name = object.at("metadata.name")?.string, let ns = object.at("metadata.namespace")?.string else {
            throw KubernetesError.malformed("an object to apply needs kind, metadata.name and metadata.namespace")
        }
        let path = try Self.collection(kind: kind, namespace: ns) + "/\(name)?fieldManager=\(Self.fieldManager)&force=true"
        _ = try await call(HTTPRequest(method: "PATCH", path: path, contentType: "application/apply-patch+yaml", body: object.encoded()))
    }

    public func deletePod(namespace: String, name: String, force: Bool) async throws {
        let body: JSONValue = force ? ["apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0] : ["apiVersion": "v1", "kind": "DeleteOptions"]
        _ = try await call(HTTPRequest(method: "DELETE", path: "/api/v1/namespaces/\(namespace)/pods/\(name)", contentType: "application/json", body: body.encoded()),
                           allow404: true)
    }

    public func patchStatus(namespace: String, name: String, _ status: ClusterStatus) async throws {
        let body: JSONValue = ["status": try JSONValue(encoding: status)]
        _ = try await call(HTTPRequest(method: "PATCH", path: "/apis/cistern.io/v1alpha1/namespaces/\(namespace)/cisternclusters/\(name)/status",
                                       contentType: "application/merge-patch+json", body: body.encoded()))
    }

    /// The decoded value of `key` in Secret `name`, nil when the Secret or key is missing.
    public func secretValue(namespace: String, name: String, key: String) async throws -> String? {
        guard let secret = try await call(HTTPRequest(method: "GET", path: "/api/v1/namespaces/\(namespace)/secrets/\(name)"), allow404: true) else { return nil }
        guard let encoded = secret["data"]?[key]?.string, let data = Data(base64Encoded: encoded) else { return nil }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Creates Secret `name` holding `value` at `key`; an existing Secret is left alone
    /// (false), so a token is never overwritten.
    @discardableResult
    public func createSecret(namespace: String, name: String, key: String, value: String, labels: JSONValue) async throws -> Bool {
        let secret: JSONValue = ["apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                                 "metadata": ["name": .string(name), "namespace": .string(namespace), "labels": labels],
                                 "data": [key: .string(Data(value.utf8).base64EncodedString())]]
        let response = try await http.send(HTTPRequest(method: "POST", path: "/api/v1/namespaces/\(namespace)/secrets", contentType: "application/json", body: secret.encoded()))
        if response.status == 409 { return false }
        guard (200..<300).contains(response.status) else {
            let status = try? JSONValue.decode(response.body)
            throw KubernetesError.status(code: response.status, reason: status?["reason"]?.string ?? "Unknown", message: status?["message"]?.string ?? "",
                                         request: "POST /api/v1/namespaces/\(namespace)/secrets")
        }
        return true
    }

    /// What the planner needs from the API: pods, StatefulSet sizes, applied hashes.
    public func observe(namespace: String, cluster name: String) async throws -> (pods: [Observation.Pod], replicas: [String: Int], hashes: [String: String]) {
        var hashes: [String: String] = [:]
        var replicas: [String: Int] = [:]
        for kind in ["ConfigMap", "Service", "StatefulSet"] {
            for item in try await list(kind: kind, namespace: namespace, cluster: name) {
                let key = "\(kind)/\(item.at("metadata.name")?.string ?? "")"
                if let h = item.at("metadata.annotations")?[OperatorPlanner.hashAnnotation]?.string { hashes[key] = h }
                if kind == "StatefulSet", let r = item.at("spec.replicas")?.int { replicas[item.at("metadata.name")?.string ?? ""] = Int(r) }
            }
        }
        let pods = try await list(kind: "Pod", namespace: namespace, cluster: name).compactMap { Self.pod($0, cluster: name) }
        return (pods, replicas, hashes)
    }

    /// A pod's observation: role from its component label, ordinal from its name.
    static func pod(_ item: JSONValue, cluster: String) -> Observation.Pod? {
        guard let name = item.at("metadata.name")?.string else { return nil }
        let role = item.at("metadata.labels")?["app.kubernetes.io/component"]?.string.flatMap(ClusterRenderer.Role.init(rawValue:))
        let ordinal = name.split(separator: "-").last.flatMap { Int($0) } ?? 0
        let image = item.at("spec.containers")?.array?.first(where: { $0["name"]?.string == "server" })?["image"]?.string
            ?? item.at("spec.containers")?.array?.first?["image"]?.string ?? ""
        let phase = item.at("status.phase")?.string ?? "Pending"
        let ready = item.at("status.conditions")?.array?.contains { $0["type"]?.string == "Ready" && $0["status"]?.string == "True" } ?? false
        let terminating = item.at("metadata.deletionTimestamp") != nil
        let nodeLost = item.at("status.reason")?.string == "NodeLost" || phase == "Unknown"
        return Observation.Pod(name: name, role: role, ordinal: ordinal, image: image, phase: phase, ready: ready, terminating: terminating, nodeLost: nodeLost)
    }
}
