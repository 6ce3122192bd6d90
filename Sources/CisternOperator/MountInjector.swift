import Foundation

/// The mutating admission webhook's decision (pure): a pod labelled
/// `cistern.io/inject-mount: "true"` gets the Cistern FUSE mount as a native sidecar
/// (an init container that keeps running, so the mount is up before the app starts
/// and outlives it), and every app container sees the mount at the path its
/// annotations ask for. Annotations:
/// - `cistern.io/cluster` (required): the CisternCluster's name, in the pod's namespace.
/// - `cistern.io/mount` (required): absolute path where app containers see the mount.
/// - `cistern.io/token-secret` (optional): a Secret whose key `token` holds a tenant token.
/// - `cistern.io/root` (optional): the cluster directory shown as the mount's root.
/// A pod that asks for the mount with bad annotations is refused with a message naming
/// the annotation and the fix; a pod already injected is left alone.
public struct MountInjector: Sendable {
    public let image: String
    public static let sidecarName = "cistern-mount"
    public static let sidecarPath = "/mnt/cistern"
    public static let injectedAnnotation = "cistern.io/injected"

    public init(image: String) { self.image = image }

    public enum Outcome: Equatable, Sendable {
        case allow(patch: [JSONValue])
        case deny(String)
    }

    /// The JSON Patch operations for `pod`, or why it is refused.
    public func decide(pod: JSONValue) -> Outcome {
        let annotations = pod.at("metadata.annotations")?.object ?? [:]
        if annotations[Self.injectedAnnotation]?.string == "true" { return .allow(patch: []) }
        guard let cluster = annotations["cistern.io/cluster"]?.string, ClusterSpec.isDNSLabel(cluster) else {
            return .deny("annotation cistern.io/cluster is missing or not a name: set it to the CisternCluster's name (in this pod's namespace)")
        }
        guard let mount = annotations["cistern.io/mount"]?.string, mount.hasPrefix("/"), mount.count > 1, !mount.contains(".."), !mount.contains(":") else {
            return .deny("annotation cistern.io/mount is missing or not an absolute path: set it to where the app containers should see the mount, e.g. /mnt/cistern")
        }
        let tokenSecret = annotations["cistern.io/token-secret"]?.string
        if let t = tokenSecret, !ClusterSpec.isDNSLabel(t) && !t.split(separator: ".").allSatisfy({ ClusterSpec.isDNSLabel(String($0)) }) {
            return .deny("annotation cistern.io/token-secret '\(t)' is not a Secret name")
        }
        let root = annotations["cistern.io/root"]?.string
        if let r = root, !r.hasPrefix("/") || r.contains("..") {
            return .deny("annotation cistern.io/root '\(r)' is not an absolute path without '..'")
        }
        let spec = pod["spec"] ?? [:]
        let containers = spec["containers"]?.array ?? []
        let taken = Set(containers.compactMap { $0["name"]?.string } + (spec["initContainers"]?.array ?? []).compactMap { $0["name"]?.string })
        if taken.contains(Self.sidecarName) { return .deny("the pod already has a container named \(Self.sidecarName); rename it or drop the cistern.io/inject-mount label") }
        let volumes = Set((spec["volumes"]?.array ?? []).compactMap { $0["name"]?.string })
        for v in ["cistern-mount", "cistern-client", "cistern-token", "cistern-dev-fuse"] where volumes.contains(v) {
            return .deny("the pod already has a volume named \(v); rename it")
        }

        var patch: [JSONValue] = []
        func add(_ path: String, _ value: JSONValue) { patch.append(["op": "add", "path": .string(path), "value": value]) }
        func append(to field: String, exists: Bool, _ items: [JSONValue]) {
            if exists { for i in items { add("/spec/\(field)/-", i) } } else { add("/spec/\(field)", .array(items)) }
        }
        var newVolumes: [JSONValue] = [
            ["name": "cistern-mount", "emptyDir": [:]],
            ["name": "cistern-client", "configMap": ["name": .string("\(cluster)-client")]],
            ["name": "cistern-dev-fuse", "hostPath": ["path": "/dev/fuse", "type": "CharDevice"]],
        ]
        var args: [JSONValue] = ["mount", .string(Self.sidecarPath), "--config", "/etc/cistern/client/cluster.yaml", "--foreground", "--allow-other"]
        var mounts: [JSONValue] = [
            ["name": "cistern-mount", "mountPath": .string(Self.sidecarPath), "mountPropagation": "Bidirectional"],
            ["name": "cistern-client", "mountPath": "/etc/cistern/client", "readOnly": true],
            ["name": "cistern-dev-fuse", "mountPath": "/dev/fuse"],
        ]
        if let t = tokenSecret {
            newVolumes.append(["name": "cistern-token", "secret": ["secretName": .string(t), "items": [["key": "token", "path": "token"]]]])
            mounts.append(["name": "cistern-token", "mountPath": "/etc/cistern/token", "readOnly": true])
            args += ["--token-file", "/etc/cistern/token/token"]
        }
        if let r = root { args += ["--root", .string(r)] }
        let sidecar: JSONValue = [
            "name": .string(Self.sidecarName), "image": .string(image), "args": .array(args),
            // A native sidecar (Kubernetes 1.29+): started before the app, stopped after it.
            "restartPolicy": "Always",
            "securityContext": ["privileged": true],
            "volumeMounts": .array(mounts),
            "startupProbe": ["exec": ["command": ["grep", "-q", .string(" \(Self.sidecarPath) fuse"), "/proc/mounts"]], "periodSeconds": 1, "failureThreshold": 60],
            "lifecycle": ["preStop": ["exec": ["command": ["cistern", "umount", "--lazy", .string(Self.sidecarPath)]]]],
            "resources": ["requests": ["cpu": "100m", "memory": "128Mi"]],
        ]
        append(to: "volumes", exists: spec["volumes"] != nil, newVolumes)
        if let inits = spec["initContainers"]?.array {
            // First, so init containers after it can use the mount.
            if inits.isEmpty { add("/spec/initContainers", [sidecar]) } else { add("/spec/initContainers/0", sidecar) }
        } else {
            add("/spec/initContainers", [sidecar])
        }
        for (i, c) in containers.enumerated() {
            let m: JSONValue = ["name": "cistern-mount", "mountPath": .string(mount), "mountPropagation": "HostToContainer"]
            if c["volumeMounts"] != nil { add("/spec/containers/\(i)/volumeMounts/-", m) } else { add("/spec/containers/\(i)/volumeMounts", [m]) }
        }
        if pod.at("metadata.annotations") != nil {
            add("/metadata/annotations/cistern.io~1injected", "true")
        } else {
            add("/metadata/annotations", [Self.injectedAnnotation: "true"])
        }
        return .allow(patch: patch)
    }

    /// The AdmissionReview answer to an AdmissionReview request (admission.k8s.io/v1).
    public func review(_ request: JSONValue) -> JSONValue {
        let uid = request.at("request.uid") ?? ""
        var response: JSONValue = ["uid": uid, "allowed": true]
        if request.at("request.kind.kind")?.string != "Pod" {
            response["allowed"] = true
        } else if let pod = request.at("request.object") {
            switch decide(pod: pod) {
            case .allow(let patch):
                if !patch.isEmpty {
                    response["patchType"] = "JSONPatch"
                    response["patch"] = .string(Data(JSONValue.array(patch).encoded()).base64EncodedString())
                }
            case .deny(let why):
                response["allowed"] = false
                response["status"] = ["code": 400, "reason": "BadRequest", "message": .string("cistern mount injection: \(why)")]
            }
        }
        return ["apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response]
    }
}
