import CisternOperator
import CisternOperatorHTTP
import Foundation
import Testing

/// Answers requests from recorded API responses (in the API server's own shapes:
/// lists with `items`, a `Status` object for errors) and records what was sent.
final class RecordedAPI: HTTPExchange, @unchecked Sendable {
    let lock = NSLock()
    var answers: [String: (Int, String)] = [:]
    var sent: [HTTPRequest] = []
    func send(_ request: HTTPRequest) async throws -> HTTPResponse {
        let key = "\(request.method) \(request.path.split(separator: "?").first.map(String.init) ?? request.path)"
        let answer = lock.withLock {
            sent.append(request)
            return answers[key]
        }
        guard let (status, body) = answer else {
            return HTTPResponse(status: 404, body: Array(notFound(request.path).utf8))
        }
        return HTTPResponse(status: status, body: Array(body.utf8))
    }
}

func notFound(_ path: String) -> String {
    #"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","details":{},"code":404}"#
}

let clusterList = #"""
{"apiVersion":"cistern.io/v1alpha1","kind":"CisternClusterList","metadata":{"continue":"","resourceVersion":"81234"},
 "items":[{"apiVersion":"cistern.io/v1alpha1","kind":"CisternCluster",
   "metadata":{"name":"kv","namespace":"inference","generation":4,"uid":"4b1c","resourceVersion":"81200","creationTimestamp":"2026-12-01T10:00:00Z"},
   "spec":{"image":"ghcr.io/cistern/cistern:0.9.1","imagePullPolicy":"IfNotPresent","mgmtd":{"replicas":1,"kv":{"kind":"sqlite"},"volume":{"size":"1Gi"}},
           "meta":{"replicas":1,"kv":{"kind":"sqlite"},"volume":{"size":"1Gi"}},"master":{"replicas":1,"port":8080,"adminTokenSecretRef":{"name":"kv-admin","key":"token"}},
           "storage":{"nodes":3,"targetsPerNode":2,"volume":{"size":"100Gi"}},"chains":{"replicas":3},"paused":false},
   "status":{"observedGeneration":3,"phase":"Running","image":"ghcr.io/cistern/cistern:0.9.0","storage":{"nodes":3,"ready":3,"upgraded":3},
             "chains":{"total":3,"serving":3},"message":"every chain serving",
             "conditions":[{"type":"Available","status":"True","reason":"ChainsServing","message":"every chain serving","lastTransitionTime":"2026-12-01T10:05:00Z","observedGeneration":3}]}},
  {"apiVersion":"cistern.io/v1alpha1","kind":"CisternCluster","metadata":{"name":"broken","namespace":"inference","generation":1},
   "spec":{"image":"x","storage":{"nodes":"three"}}}]}
"""#

let podList = #"""
{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"81240"},"items":[
 {"metadata":{"name":"kv-storage-0","namespace":"inference","labels":{"app.kubernetes.io/component":"storage","cistern.io/cluster":"kv"}},
  "spec":{"containers":[{"name":"server","image":"ghcr.io/cistern/cistern:0.9.0"}]},
  "status":{"phase":"Running","conditions":[{"type":"Initialized","status":"True"},{"type":"Ready","status":"True"},{"type":"ContainersReady","status":"True"}]}},
 {"metadata":{"name":"kv-storage-1","namespace":"inference","deletionTimestamp":"2026-12-08T01:00:00Z","labels":{"app.kubernetes.io/component":"storage","cistern.io/cluster":"kv"}},
  "spec":{"containers":[{"name":"server","image":"ghcr.io/cistern/cistern:0.9.0"}]},
  "status":{"phase":"Running","conditions":[{"type":"Ready","status":"False"}]}},
 {"metadata":{"name":"kv-storage-2","namespace":"inference","labels":{"app.kubernetes.io/component":"storage","cistern.io/cluster":"kv"}},
  "spec":{"containers":[{"name":"server","image":"ghcr.io/cistern/cistern:0.9.1"}]},
  "status":{"phase":"Running","reason":"NodeLost","message":"Node node-7 which was running pod kv-storage-2 is unresponsive","conditions":[{"type":"Ready","status":"False"}]}},
 {"metadata":{"name":"kv-mgmtd-0","namespace":"inference","labels":{"app.kubernetes.io/component":"mgmtd","cistern.io/cluster":"kv"}},
  "spec":{"containers":[{"name":"server","image":"ghcr.io/cistern/cistern:0.9.1"}]},
  "status":{"phase":"Failed","conditions":[{"type":"Ready","status":"False"}]}}]}
"""#

let statefulSetList = #"""
{"kind":"StatefulSetList","apiVersion":"apps/v1","metadata":{"resourceVersion":"81241"},"items":[
 {"metadata":{"name":"kv-storage","namespace":"inference","annotations":{"cistern.io/spec-hash":"00000000deadbeef"}},"spec":{"replicas":3,"serviceName":"kv-storage"},"status":{"replicas":3,"readyReplicas":2}},
 {"metadata":{"name":"kv-mgmtd","namespace":"inference"},"spec":{"replicas":1},"status":{"replicas":1}}]}
"""#

let emptyList = #"{"kind":"List","apiVersion":"v1","metadata":{"resourceVersion":"81242"},"items":[]}"#
let forbidden = #"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"cisternclusters.cistern.io is forbidden: User \"system:serviceaccount:cistern-system:default\" cannot list resource \"cisternclusters\" in API group \"cistern.io\" at the cluster scope","reason":"Forbidden","details":{"group":"cistern.io","kind":"cisternclusters"},"code":403}"#
let conflict = #"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"secrets \"alice-token\" already exists","reason":"AlreadyExists","details":{"name":"alice-token","kind":"secrets"},"code":409}"#

@Suite struct KubernetesAPITests {
    @Test func clustersDecodeAndABadSpecIsReportedNotFatal() async throws {
        let http = RecordedAPI()
        http.answers["GET /apis/cistern.io/v1alpha1/namespaces/inference/cisternclusters"] = (200, clusterList)
        let clusters = try await KubernetesAPI(http: http).clusters(namespace: "inference")
        #expect(clusters.count == 2)
        #expect(clusters[0].name == "kv" && clusters[0].generation == 4)
        #expect(clusters[0].spec?.storageNodes == 3)
        #expect(clusters[0].status?.image == "ghcr.io/cistern/cistern:0.9.0")
        #expect(clusters[0].status?.condition("Available")?.lastTransitionTime == "2026-12-01T10:05:00Z")
        #expect(clusters[1].spec == nil)
        #expect(clusters[1].specError?.contains("nodes") == true)
    }

    @Test func podsAndStatefulSetsBecomeTheObservation() async throws {
        let http = RecordedAPI()
        http.answers["GET /api/v1/namespaces/inference/pods"] = (200, podList)
        http.answers["GET /apis/apps/v1/namespaces/inference/statefulsets"] = (200, statefulSetList)
        http.answers["GET /api/v1/namespaces/inference/configmaps"] = (200, emptyList)
        http.answers["GET /api/v1/namespaces/inference/services"] = (200, emptyList)
        let (pods, replicas, hashes) = try await KubernetesAPI(http: http).observe(namespace: "inference", cluster: "kv")
        #expect(http.sent.allSatisfy { $0.path.hasSuffix("?labelSelector=cistern.io%2Fcluster%3Dkv") })
        #expect(pods.map(\.name) == ["kv-storage-0", "kv-storage-1", "kv-storage-2", "kv-mgmtd-0"])
        #expect(pods[0] == Observation.Pod(name: "kv-storage-0", role: .storage, ordinal: 0, image: "ghcr.io/cistern/cistern:0.9.0", phase: "Running", ready: true))
        #expect(pods[1].terminating && !pods[1].ready)
        #expect(pods[2].nodeLost && pods[2].ordinal == 2)
        #expect(pods[3].role == .mgmtd && pods[3].phase == "Failed")
        #expect(replicas == ["kv-storage": 3, "kv-mgmtd": 1])
        #expect(hashes == ["StatefulSet/kv-storage": "00000000deadbeef"])
    }

    @Test func applyDeleteStatusAndSecretsSendWhatTheAPIExpects() async throws {
        let http = RecordedAPI()
        http.answers["PATCH /api/v1/namespaces/inference/configmaps/kv-config"] = (200, #"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"kv-config"}}"#)
        http.answers["DELETE /api/v1/namespaces/inference/pods/kv-storage-0"] = (200, #"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"kv-storage-0"}}"#)
        http.answers["PATCH /apis/cistern.io/v1alpha1/namespaces/inference/cisternclusters/kv/status"] = (200, #"{"kind":"CisternCluster"}"#)
        http.answers["POST /api/v1/namespaces/inference/secrets"] = (409, conflict)
        http.answers["GET /api/v1/namespaces/inference/secrets/kv-admin"] = (200, #"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"kv-admin"},"type":"Opaque","data":{"token":"c2VjcmV0LXRva2VuCg=="}}"#)
        let api = KubernetesAPI(http: http)
        let renderer = ClusterRenderer(name: "kv", namespace: "inference", spec: ClusterSpec(image: "i"))
        try await api.apply(renderer.objects()[0])
        #expect(http.sent[0].method == "PATCH")
        #expect(http.sent[0].path == "/api/v1/namespaces/inference/configmaps/kv-config?fieldManager=cistern-operator&force=true")
        #expect(http.sent[0].contentType == "application/apply-patch+yaml")
        #expect(try JSONValue.decode(http.sent[0].body).at("metadata.name")?.string == "kv-config")
        try await api.deletePod(namespace: "inference", name: "kv-storage-0", force: true)
        #expect(try JSONValue.decode(http.sent[1].body)["gracePeriodSeconds"]?.int == 0)
        try await api.deletePod(namespace: "inference", name: "gone", force: false)  // 404: already gone, fine
        let status = ClusterStatus(observedGeneration: 4, phase: "Upgrading", image: nil, storage: .init(nodes: 3, ready: 3, upgraded: 1),
                                   chains: .init(total: 3, serving: 3), upgrade: .init(image: "i", node: "kv-storage-1"), message: "m", conditions: [])
        try await api.patchStatus(namespace: "inference", name: "kv", status)
        #expect(http.sent[3].contentType == "application/merge-patch+json")
        #expect(try JSONValue.decode(http.sent[3].body).at("status.upgrade.node")?.string == "kv-storage-1")
        #expect(try await api.secretValue(namespace: "inference", name: "kv-admin", key: "token") == "secret-token")
        #expect(try await api.secretValue(namespace: "inference", name: "missing", key: "token") == nil)
        let created = try await api.createSecret(namespace: "inference", name: "alice-token", key: "token", value: "t", labels: [:])
        #expect(!created, "an existing Secret is left alone")
    }

    @Test func errorsNameTheRequestAndTheFix() async throws {
        let http = RecordedAPI()
        http.answers["GET /apis/cistern.io/v1alpha1/cisternclusters"] = (403, forbidden)
        do {
            _ = try await KubernetesAPI(http: http).clusters(namespace: nil)
            Issue.record("a 403 must throw")
        } catch {
            let text = "\(error)"
            #expect(text.contains("403 Forbidden"))
            #expect(text.contains("GET /apis/cistern.io/v1alpha1/cisternclusters"))
            #expect(text.contains("rbac.yaml"))
        }
        do {
            _ = try await KubernetesAPI(http: http).clusters(namespace: "x")
            Issue.record("a 404 must throw")
        } catch {
            #expect("\(error)".contains("is the CRD installed?"))
        }
        #expect(throws: KubernetesError.self) { try NIOHTTPExchange(url: "https://kubernetes.default.svc") }
    }
}
