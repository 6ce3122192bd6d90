"""The operator and the webhook as real processes, without a Kubernetes API server
(none can run on these machines): `cistern operator --render` on every sample, each
object validated strictly against Kubernetes 1.32; `cistern operator --once` against
an HTTP server answering with recorded API responses, checking every request it makes;
and `cistern webhook` over TLS answering real AdmissionReview documents, the patched
pod validated strictly."""
from __future__ import annotations

import base64
import copy
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from conftest import REPO, cistern_bin

K8S_VERSION = "1.32.0"
SAMPLES = REPO / "deploy" / "kubernetes" / "samples"


def render(sample: Path) -> list[dict]:
    out = subprocess.run([cistern_bin(), "operator", "--render", str(sample)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.glob("*.yaml")))
def test_rendered_cluster_objects_validate_strictly(sample):
    docs = render(SAMPLES / sample)
    name = yaml.safe_load((SAMPLES / sample).read_text())["metadata"]["name"]
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
    for role in ("mgmtd", "meta", "storage"):
        assert f"StatefulSet/{name}-{role}" in kinds and f"Service/{name}-{role}" in kinds, kinds
    assert f"ConfigMap/{name}-config" in kinds and f"ConfigMap/{name}-client" in kinds
    for d in docs:
        assert kubernetes_validate.validate(d, K8S_VERSION, strict=True) == "1.32", d["metadata"]["name"]
        assert d["metadata"]["labels"]["cistern.io/cluster"] == name
    storage = next(d for d in docs if d["metadata"]["name"] == f"{name}-storage" and d["kind"] == "StatefulSet")
    assert storage["spec"]["updateStrategy"] == {"type": "OnDelete"}
    configs = next(d for d in docs if d["metadata"]["name"] == f"{name}-config")["data"]
    pods = [f"{name}-storage-{i}.yaml" for i in range(storage["spec"]["replicas"])]
    assert set(pods) <= set(configs), "one server config per pod"
    # Each config is a server config the server itself reads (run `cistern server` on
    # one with an unreadable key: it must get past parsing to the file it names).
    cfg = yaml.safe_load(configs[pods[0]])
    assert cfg["node"]["role"] == "storage" and cfg["node"]["listen"] == "0.0.0.0:9000"


def test_render_refuses_an_invalid_resource_naming_the_field(tmp_path):
    doc = yaml.safe_load((SAMPLES / "small.yaml").read_text())
    doc["spec"]["chains"] = {"replicas": 5}
    doc["spec"]["meta"] = {"replicas": 2}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    out = subprocess.run([cistern_bin(), "operator", "--render", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "spec.chains.replicas is 5 but spec.storage.nodes is 3" in out.stderr
    assert "spec.meta.replicas is 2 with kv.kind sqlite" in out.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RecordedAPI(ThreadingHTTPServer):
    """Answers the operator's requests as the API server would (recorded shapes), and
    keeps every request."""

    def __init__(self, cluster: dict):
        self.cluster = cluster
        self.requests: list[tuple[str, str, str, bytes]] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(BaseHTTPRequestHandler):
    server: RecordedAPI

    def log_message(self, *args):  # quiet
        pass

    def answer(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with self.server.lock:
            self.server.requests.append((self.command, self.path, self.headers.get("Content-Type") or "", body))
        path = self.path.split("?")[0]
        if self.command == "GET" and path.endswith("/cisternclusters"):
            return self.answer(200, {"apiVersion": "cistern.io/v1alpha1", "kind": "CisternClusterList", "metadata": {"resourceVersion": "1"},
                                     "items": [self.server.cluster]})
        if self.command == "GET" and path.split("/")[-1] in ("pods", "configmaps", "services", "statefulsets"):
            return self.answer(200, {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "2"}, "items": []})
        if self.command == "GET" and "/secrets/" in path:
            return self.answer(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                                     "message": f'secrets "{path.split("/")[-1]}" not found', "code": 404})
        if self.command == "PATCH":
            return self.answer(200, json.loads(body) if body.startswith(b"{") else {})
        return self.answer(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "message": "no such path", "code": 404})

    do_GET = do_PATCH = do_POST = do_DELETE = handle_any


def test_operator_once_provisions_a_new_cluster_through_the_api():
    cluster = yaml.safe_load((SAMPLES / "small.yaml").read_text())
    cluster["metadata"].update({"namespace": "inference", "generation": 1, "uid": "u1"})
    api = RecordedAPI(cluster)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    try:
        out = subprocess.run([cistern_bin(), "operator", "--once", "--namespace", "inference", "--health-listen", "",
                              "--api-server", f"http://127.0.0.1:{api.server_address[1]}"], capture_output=True, text=True, timeout=60)
    finally:
        api.shutdown()
    assert out.returncode == 0, out.stderr
    name = cluster["metadata"]["name"]
    applies = [(p, ct, json.loads(b)) for m, p, ct, b in api.requests if m == "PATCH" and not p.split("?")[0].endswith("/status")]
    assert applies, api.requests
    for path, content_type, obj in applies:
        assert content_type == "application/apply-patch+yaml"
        assert path.endswith(f"/{obj['metadata']['name']}?fieldManager=cistern-operator&force=true")
        assert obj["metadata"]["namespace"] == "inference"
        assert len(obj["metadata"]["annotations"]["cistern.io/spec-hash"]) == 16
        assert kubernetes_validate.validate(obj, K8S_VERSION, strict=True) == "1.32"
    kinds = {f"{o['kind']}/{o['metadata']['name']}" for _, _, o in applies}
    assert {f"StatefulSet/{name}-storage", f"ConfigMap/{name}-config", f"Service/{name}-api"} <= kinds
    statuses = [json.loads(b) for m, p, ct, b in api.requests if m == "PATCH" and p.endswith(f"/cisternclusters/{name}/status")]
    assert len(statuses) == 1
    status = statuses[0]["status"]
    assert status["phase"] == "Provisioning" and status["observedGeneration"] == 1
    assert {c["type"]: c["status"] for c in status["conditions"]} == {"Available": "False", "Progressing": "True", "Degraded": "False"}
    assert "cluster manager is not reachable yet" in status["message"]
    # Nothing was deleted, and no tenant made: no pod and no master is up yet.
    assert not [r for r in api.requests if r[0] in ("DELETE", "POST")]


def test_operator_says_what_is_wrong_when_the_api_refuses():
    class Refusing(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            data = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                               "message": 'cisternclusters.cistern.io is forbidden: User "system:serviceaccount:cistern-system:default" cannot list resource'}).encode()
            self.send_response(403)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        out = subprocess.run([cistern_bin(), "operator", "--once", "--health-listen", "", "--api-server", f"http://127.0.0.1:{server.server_address[1]}"],
                             capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
    assert out.returncode != 0
    assert "403 Forbidden" in out.stderr and "rbac.yaml" in out.stderr, out.stderr
    bad = subprocess.run([cistern_bin(), "operator", "--once", "--api-server", "https://kubernetes.default.svc"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "kubectl proxy" in bad.stderr
    # Nothing listening: a clear error and exit 1, not a crash (a leaked NIO promise
    # trapped here once).
    down = subprocess.run([cistern_bin(), "operator", "--once", "--health-listen", "", "--api-server", f"http://127.0.0.1:{free_port()}"],
                          capture_output=True, text=True, timeout=60)
    assert down.returncode == 1, down.stderr[-2000:]
    assert "cannot connect to 127.0.0.1" in down.stderr and "Fatal error" not in down.stderr


@pytest.fixture(scope="module")
def webhook(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (apt-get install openssl)")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=cistern-mount-injector",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:cistern-mount-injector.cistern-system.svc",
                    "-keyout", str(d / "tls.key"), "-out", str(d / "tls.crt")], check=True, capture_output=True)
    port = free_port()
    proc = subprocess.Popen([cistern_bin(), "webhook", "--listen", f"127.0.0.1:{port}", "--tls-cert", str(d / "tls.crt"), "--tls-key", str(d / "tls.key"),
                             "--image", "ghcr.io/cistern/cistern:0.9.1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    context = ssl.create_default_context(cafile=str(d / "tls.crt"))
    url = f"https://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/healthz", context=context, timeout=2).read()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"the webhook did not start: {proc.stderr.read().decode()}")
    yield url, context
    proc.terminate()
    proc.wait(timeout=10)


def admission_review(annotations: dict, containers: list | None = None) -> dict:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "b3f1c1c2-6b5e-4f7e-9a1c-2f1d3e4a5b6c", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "inference", "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "groups": ["system:serviceaccounts"]},
        "object": {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"generateName": "sglang-7d9f-", "namespace": "inference", "labels": {"app": "sglang", "cistern.io/inject-mount": "true"},
                                "annotations": annotations},
                   "spec": {"containers": containers or [{"name": "sglang", "image": "lmsysorg/sglang:v0.5.3", "args": ["python3", "-m", "sglang.launch_server"],
                                                          "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
                            "restartPolicy": "Always"}},
        "oldObject": None, "dryRun": False, "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}}}


def post(url: str, context, doc: dict) -> dict:
    req = urllib.request.Request(url + "/mutate", data=json.dumps(doc).encode(), headers={"Content-Type": "application/json"}, method="POST")
    return json.loads(urllib.request.urlopen(req, context=context, timeout=10).read())


def apply_patch(doc: dict, ops: list[dict]) -> dict:
    out = copy.deepcopy(doc)
    for op in ops:
        assert op["op"] == "add", op
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        target = out
        for p in parts[:-1]:
            target = target[int(p)] if isinstance(target, list) else target[p]
        last = parts[-1]
        if isinstance(target, list):
            target.append(op["value"]) if last == "-" else target.insert(int(last), op["value"])
        else:
            target[last] = op["value"]
    return out


def test_webhook_injects_the_mount_over_tls(webhook):
    url, context = webhook
    review = admission_review({"cistern.io/cluster": "small", "cistern.io/mount": "/kvcache", "cistern.io/token-secret": "small-alice-token",
                               "cistern.io/root": "/tenants/alice"})
    answer = post(url, context, review)
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == review["request"]["uid"] and response["allowed"] is True and response["patchType"] == "JSONPatch"
    pod = apply_patch(review["request"]["object"], json.loads(base64.b64decode(response["patch"])))
    pod["metadata"]["name"] = "sglang-7d9f-abcde"
    assert kubernetes_validate.validate(pod, K8S_VERSION, strict=True) == "1.32"
    sidecar = pod["spec"]["initContainers"][0]
    assert sidecar["name"] == "cistern-mount" and sidecar["restartPolicy"] == "Always" and sidecar["securityContext"]["privileged"]
    assert sidecar["args"][:2] == ["mount", "/mnt/cistern"] and "--foreground" in sidecar["args"]
    assert sidecar["args"][-4:] == ["--token-file", "/etc/cistern/token/token", "--root", "/tenants/alice"]
    app = pod["spec"]["containers"][0]
    assert {"name": "cistern-mount", "mountPath": "/kvcache", "mountPropagation": "HostToContainer"} in app["volumeMounts"]
    assert {v["name"] for v in pod["spec"]["volumes"]} == {"cistern-mount", "cistern-client", "cistern-dev-fuse", "cistern-token"}
    # The webhook is idempotent: the patched pod passes through unchanged.
    again = post(url, context, {**review, "request": {**review["request"], "object": pod}})["response"]
    assert again["allowed"] is True and "patch" not in again


def test_webhook_refuses_a_pod_with_bad_annotations(webhook):
    url, context = webhook
    response = post(url, context, admission_review({"cistern.io/cluster": "small"}))["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 400
    assert "annotation cistern.io/mount is missing" in response["status"]["message"]
    req = urllib.request.Request(url + "/mutate", data=b"not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, context=context, timeout=10)
    assert e.value.code == 400


def test_operator_once_against_a_real_cluster(cluster):
    """The operator outside the cluster (--cluster-config, --master-url) with the API
    answered from recorded shapes, but the cluster manager and the master real: it
    reads the real chains, decides an upgrade step, makes a tenant in the real master
    and stores its real token in a Secret."""
    data = Path(cluster.data_dir)
    key = (data / "cluster.key").read_text().strip()
    resource = {"apiVersion": "cistern.io/v1alpha1", "kind": "CisternCluster",
                "metadata": {"name": "kv", "namespace": "inference", "generation": 2, "uid": "u2"},
                "spec": {"image": "ghcr.io/cistern/cistern:0.9.1", "storage": {"nodes": 3, "targetsPerNode": 2}, "chains": {"replicas": 3},
                         "master": {"replicas": 1, "adminTokenSecretRef": {"name": "kv-admin", "key": "token"}},
                         "auth": {"clusterKeySecretRef": {"name": "kv-key", "key": "key"}},
                         "tenants": [{"name": "alice", "quotaBytes": 1 << 30, "quotaPages": 1000, "tokenSecretRef": {"name": "alice-token", "key": "token"}}]}}
    secrets = {"kv-admin": {"token": cluster.admin_token()}, "kv-key": {"key": key}}
    made: dict[str, dict] = {}

    def pod(name: str, component: str, image: str) -> dict:
        return {"metadata": {"name": name, "namespace": "inference", "labels": {"app.kubernetes.io/component": component, "cistern.io/cluster": "kv"}},
                "spec": {"containers": [{"name": "server", "image": image}]},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}

    pods = [pod("kv-mgmtd-0", "mgmtd", "ghcr.io/cistern/cistern:0.9.1"), pod("kv-meta-0", "meta", "ghcr.io/cistern/cistern:0.9.1"),
            pod("kv-master-0", "master", "ghcr.io/cistern/cistern:0.9.1")] + \
           [pod(f"kv-storage-{i}", "storage", "ghcr.io/cistern/cistern:0.9.0") for i in range(3)]

    class API(BaseHTTPRequestHandler):
        requests: list = []

        def log_message(self, *args):
            pass

        def answer(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def handle_any(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            API.requests.append((self.command, self.path, body))
            path = self.path.split("?")[0]
            last = path.split("/")[-1]
            if self.command == "GET" and last == "cisternclusters":
                return self.answer(200, {"kind": "CisternClusterList", "apiVersion": "cistern.io/v1alpha1", "metadata": {}, "items": [resource]})
            if self.command == "GET" and last == "pods":
                return self.answer(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods})
            if self.command == "GET" and last == "statefulsets":
                return self.answer(200, {"kind": "StatefulSetList", "apiVersion": "apps/v1", "metadata": {},
                                         "items": [{"metadata": {"name": f"kv-{r}"}, "spec": {"replicas": 3 if r == "storage" else 1}} for r in ("mgmtd", "meta", "storage", "master")]})
            if self.command == "GET" and last in ("configmaps", "services"):
                return self.answer(200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": []})
            if self.command == "GET" and "/secrets/" in path:
                s = secrets.get(last) or made.get(last)
                if s is None:
                    return self.answer(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": f'secrets "{last}" not found'})
                return self.answer(200, {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": last},
                                         "data": {k: base64.b64encode(v.encode()).decode() for k, v in s.items()}})
            if self.command == "POST" and last == "secrets":
                doc = json.loads(body)
                made[doc["metadata"]["name"]] = {k: base64.b64decode(v).decode() for k, v in doc["data"].items()}
                return self.answer(201, doc)
            if self.command in ("PATCH", "DELETE"):
                return self.answer(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
            return self.answer(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "no such path"})

        do_GET = do_PATCH = do_POST = do_DELETE = handle_any

    server = ThreadingHTTPServer(("127.0.0.1", 0), API)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        out = subprocess.run([cistern_bin(), "operator", "--once", "--health-listen", "", "--api-server", f"http://127.0.0.1:{server.server_address[1]}",
                              "--cluster-config", str(data / "cluster.yaml"), "--master-url", cluster.master_url()],
                             capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
    assert out.returncode == 0, out.stderr
    status = next(json.loads(b)["status"] for m, p, b in API.requests if m == "PATCH" and p.endswith("/cisternclusters/kv/status"))
    # The real chains: 3 nodes of 2 targets make 2 chains of 3, all serving.
    assert status["chains"] == {"total": 2, "serving": 2}, status
    assert status["phase"] == "Upgrading" and status["upgrade"]["node"] == "kv-storage-0", status
    assert status["storage"] == {"nodes": 3, "ready": 3, "upgraded": 0}
    deleted = [p for m, p, b in API.requests if m == "DELETE"]
    assert deleted == ["/api/v1/namespaces/inference/pods/kv-storage-0"], deleted
    # The tenant is real: its token, stored in the Secret, is accepted by the master as alice.
    token = made["alice-token"]["token"]
    req = urllib.request.Request(cluster.master_url() + "/v1/whoami", headers={"Authorization": f"Bearer {token}"})
    assert json.loads(urllib.request.urlopen(req, timeout=10).read())["tenant"] == "alice"
    tenants = json.loads(urllib.request.urlopen(urllib.request.Request(cluster.master_url() + "/v1/tenants",
                                                                       headers={"Authorization": f"Bearer {cluster.admin_token()}"}), timeout=10).read())
    alice = next(t for t in tenants["tenants"] if t["name"] == "alice")
    assert (alice["quotaBytes"], alice["quotaPages"]) == (1 << 30, 1000)
