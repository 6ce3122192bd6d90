import CisternOperator
import Foundation
import Testing

/// An AdmissionReview as the API server sends it (admission.k8s.io/v1).
func review(annotations: [String: JSONValue], containers: JSONValue = [["name": "app", "image": "python:3.12"]], extra: [String: JSONValue] = [:]) -> JSONValue {
    var spec: JSONValue = ["containers": containers]
    for (k, v) in extra { spec[k] = v }
    return ["apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": [
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "kind": ["group": "", "version": "v1", "kind": "Pod"],
        "resource": ["group": "", "version": "v1", "resource": "pods"], "namespace": "inference", "operation": "CREATE",
        "userInfo": ["username": "system:serviceaccount:kube-system:replicaset-controller"],
        "object": ["apiVersion": "v1", "kind": "Pod",
                   "metadata": ["generateName": "sglang-", "labels": ["cistern.io/inject-mount": "true"], "annotations": .object(annotations)],
                   "spec": spec],
        "dryRun": false,
    ]]
}

/// Applies JSON Patch `add` operations (the only kind the injector makes).
func applyPatch(_ doc: JSONValue, _ ops: [JSONValue]) throws -> JSONValue {
    func add(_ v: JSONValue, _ path: ArraySlice<String>, _ value: JSONValue) throws -> JSONValue {
        guard let head = path.first else { return value }
        let rest = path.dropFirst()
        switch v {
        case .object(var o):
            o[head] = rest.isEmpty ? value : try add(o[head] ?? .null, rest, value)
            return .object(o)
        case .array(var a):
            if rest.isEmpty {
                if head == "-" { a.append(value) } else { a.insert(value, at: Int(head)!) }
            } else {
                a[Int(head)!] = try add(a[Int(head)!], rest, value)
            }
            return .array(a)
        default:
            throw KubernetesError.malformed("cannot add under \(head)")
        }
    }
    var out = doc
    for op in ops {
        #expect(op["op"]?.string == "add")
        let path = op["path"]!.string!.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map { $0.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~") }
        out = try add(out, path[...], op["value"]!)
    }
    return out
}

@Suite struct MountInjectorTests {
    let injector = MountInjector(image: "ghcr.io/cistern/cistern:0.9.1")

    @Test func aPodThatAsksGetsTheSidecarAndTheMount() throws {
        let request = review(annotations: ["cistern.io/cluster": "kv", "cistern.io/mount": "/models/cache", "cistern.io/token-secret": "alice-token", "cistern.io/root": "/tenants/alice"],
                             containers: [["name": "app", "image": "python:3.12", "volumeMounts": [["name": "x", "mountPath": "/x"]]], ["name": "metrics", "image": "busybox"]],
                             extra: ["volumes": [["name": "x", "emptyDir": [:]]]])
        let answer = injector.review(request)
        #expect(answer.at("response.uid")?.string == "705ab4f5-6393-11e8-b7cc-42010a800002")
        #expect(answer.at("response.allowed")?.bool == true)
        #expect(answer.at("response.patchType")?.string == "JSONPatch")
        let ops = try JSONValue.decode(Data(base64Encoded: answer.at("response.patch")!.string!)!).array!
        let pod = try applyPatch(request.at("request.object")!, ops)
        let sidecar = pod.at("spec.initContainers")!.array![0]
        #expect(sidecar["name"]?.string == "cistern-mount")
        #expect(sidecar["restartPolicy"]?.string == "Always")
        #expect(sidecar.at("securityContext.privileged")?.bool == true)
        #expect(sidecar["args"]?.array?.compactMap(\.string) == ["mount", "/mnt/cistern", "--config", "/etc/cistern/client/cluster.yaml", "--foreground", "--allow-other",
                                                                  "--token-file", "/etc/cistern/token/token", "--root", "/tenants/alice"])
        #expect(sidecar["volumeMounts"]?.array?.first?["mountPropagation"]?.string == "Bidirectional")
        let volumes = pod.at("spec.volumes")!.array!.compactMap { $0["name"]?.string }
        #expect(volumes == ["x", "cistern-mount", "cistern-client", "cistern-dev-fuse", "cistern-token"])
        #expect(pod.at("spec.volumes")!.array!.first { $0["name"]?.string == "cistern-client" }?.at("configMap.name")?.string == "kv-client")
        for c in pod.at("spec.containers")!.array! {
            let m = c["volumeMounts"]!.array!.last!
            #expect(m["mountPath"]?.string == "/models/cache" && m["mountPropagation"]?.string == "HostToContainer")
        }
        #expect(pod.at("metadata.annotations")?["cistern.io/injected"]?.string == "true")
        // Injected once: a second pass changes nothing.
        if case .allow(let again) = injector.decide(pod: pod) { #expect(again.isEmpty) } else { Issue.record("an injected pod must be allowed") }
    }

    @Test func existingInitContainersRunAfterTheMount() throws {
        let request = review(annotations: ["cistern.io/cluster": "kv", "cistern.io/mount": "/cache"], extra: ["initContainers": [["name": "warm", "image": "busybox"]]])
        let ops = try JSONValue.decode(Data(base64Encoded: injector.review(request).at("response.patch")!.string!)!).array!
        let pod = try applyPatch(request.at("request.object")!, ops)
        #expect(pod.at("spec.initContainers")?.array?.compactMap { $0["name"]?.string } == ["cistern-mount", "warm"])
        #expect(!(pod.at("spec.initContainers")!.array![0]["args"]!.array!.contains("--token-file")))
    }

    @Test func badAnnotationsAreRefusedNamingTheFix() {
        let cases: [([String: JSONValue], String)] = [
            ([:], "annotation cistern.io/cluster is missing"),
            (["cistern.io/cluster": "Bad_Name", "cistern.io/mount": "/m"], "cistern.io/cluster is missing or not a name"),
            (["cistern.io/cluster": "kv"], "annotation cistern.io/mount is missing"),
            (["cistern.io/cluster": "kv", "cistern.io/mount": "relative/path"], "not an absolute path"),
            (["cistern.io/cluster": "kv", "cistern.io/mount": "/m/../etc"], "not an absolute path"),
            (["cistern.io/cluster": "kv", "cistern.io/mount": "/m", "cistern.io/root": "tenants"], "cistern.io/root 'tenants'"),
            (["cistern.io/cluster": "kv", "cistern.io/mount": "/m", "cistern.io/token-secret": "no/slash"], "not a Secret name"),
        ]
        for (annotations, expected) in cases {
            let answer = injector.review(review(annotations: annotations))
            #expect(answer.at("response.allowed")?.bool == false)
            #expect(answer.at("response.status.message")?.string?.contains(expected) == true, "\(annotations): \(answer.at("response.status.message")?.string ?? "")")
            #expect(answer.at("response.patch") == nil)
        }
        let clash = review(annotations: ["cistern.io/cluster": "kv", "cistern.io/mount": "/m"], containers: [["name": "cistern-mount", "image": "x"]])
        #expect(injector.review(clash).at("response.status.message")?.string?.contains("already has a container named cistern-mount") == true)
    }

    @Test func otherKindsPassUntouched() {
        var r = review(annotations: [:])
        r["request"]?["kind"] = ["group": "apps", "version": "v1", "kind": "Deployment"]
        let answer = injector.review(r)
        #expect(answer.at("response.allowed")?.bool == true && answer.at("response.patch") == nil)
    }
}
