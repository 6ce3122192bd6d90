"""The Kubernetes manifests in deploy/kubernetes, validated offline (no API server).

- What `kubectl kustomize deploy/kubernetes` renders validates, document by document,
  against the Kubernetes 1.32 schemas in strict mode (unknown fields are errors), and
  says what the operator and the mount injector need (RBAC, images, args, probes,
  security, the webhook's wiring).
- The CisternCluster CRD's schema is structural (a type everywhere, a description on
  every field, defaults that validate and are pruned), and every sample validates
  against it, converted to JSON Schema with unknown fields rejected (the API server
  would prune them silently; here a typo is an error). Its CEL rules are checked
  through Python mirrors of each rule, pinned to the rules' text.
- Broken resources are rejected, each with a message naming the field.
"""
from __future__ import annotations

import copy
import datetime
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KUBE = REPO / "deploy" / "kubernetes"
CRD_FILE = KUBE / "crd" / "cisternclusters.yaml"
SAMPLES = KUBE / "samples"
K8S_VERSION = "1.32.0"
NAMESPACE = "cistern-system"
IMAGE = "ghcr.io/cistern/cistern:0.9.0"
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
                  "MutatingWebhookConfiguration"}


# ---------------------------------------------------------------- rendering

def kustomize(directory: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: rendering deploy/kubernetes needs `kubectl kustomize`")
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"kubectl kustomize {directory} failed:\n{out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d is not None]


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return kustomize(KUBE)


def find(docs: list[dict], kind: str, name: str) -> dict:
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"expected one {kind}/{name}, found {len(hits)}"
    return hits[0]


def container(deployment: dict, name: str) -> dict:
    hits = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    assert len(hits) == 1, f"expected one container {name} in {deployment['metadata']['name']}"
    return hits[0]


def port_number(c: dict, port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = [p["containerPort"] for p in c.get("ports", []) if p.get("name") == port]
    assert named, f"container {c['name']} has no port named {port}"
    return named[0]


# ---------------------------------------------------------------- (a) rendered manifests

def test_rendered_objects_are_the_expected_ones(rendered):
    assert sorted((d["kind"], d["metadata"]["name"]) for d in rendered) == sorted([
        ("Namespace", NAMESPACE),
        ("CustomResourceDefinition", "cisternclusters.cistern.io"),
        ("ServiceAccount", "cistern-operator"),
        ("ClusterRole", "cistern-operator"),
        ("ClusterRoleBinding", "cistern-operator"),
        ("Deployment", "cistern-operator"),
        ("Deployment", "cistern-mount-injector"),
        ("Service", "cistern-mount-injector"),
        ("MutatingWebhookConfiguration", "cistern-mount-injector"),
    ])


def test_every_rendered_document_validates_strictly_against_kubernetes_1_32(rendered):
    failures = []
    for doc in rendered:
        what = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == "1.32", what
        except kubernetes_validate.ValidationError as e:
            failures.append(f"{what}: {'.'.join(str(p) for p in e.path)}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            failures.append(f"{what}: no schema, so not validated: {e.message}")
    assert not failures, "\n".join(failures)


def test_strict_validation_is_not_vacuous(rendered):
    # The same validator rejects a one-letter typo in a container, and an unknown field
    # in the CRD's schema: strict mode really forbids unknown fields.
    deployment = copy.deepcopy(find(rendered, "Deployment", "cistern-operator"))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError) as e:
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    assert "imagePullPolicyy" in e.value.message
    crd = copy.deepcopy(find(rendered, "CustomResourceDefinition", "cisternclusters.cistern.io"))
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["image"]["minLenght"] = 1
    with pytest.raises(kubernetes_validate.ValidationError) as e:
        kubernetes_validate.validate(crd, K8S_VERSION, strict=True)
    assert "minLenght" in e.value.message


def test_labels_and_namespaces(rendered):
    for doc in rendered:
        what = f"{doc['kind']}/{doc['metadata']['name']}"
        assert doc["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "cistern", what
        if doc["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in doc["metadata"], f"{what} is cluster-scoped"
        else:
            assert doc["metadata"].get("namespace") == NAMESPACE, what
        if doc["kind"] == "Deployment":
            spec = doc["spec"]
            template_labels = spec["template"]["metadata"]["labels"]
            assert template_labels.get("app.kubernetes.io/part-of") == "cistern", what
            # Selectors stay as written (they are immutable) and select the pod template.
            assert "app.kubernetes.io/part-of" not in spec["selector"]["matchLabels"], what
            assert spec["selector"]["matchLabels"].items() <= template_labels.items(), what


def test_each_directory_renders_on_its_own():
    for sub, kinds in (("operator", {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment"}),
                       ("webhook", {"Deployment", "Service", "MutatingWebhookConfiguration"})):
        docs = kustomize(KUBE / sub)
        assert {d["kind"] for d in docs} == kinds, sub
        assert all(d["metadata"].get("namespace") == NAMESPACE for d in docs if d["kind"] not in CLUSTER_SCOPED), sub


def rbac_triples(rules: list[dict]) -> set[tuple[str, str, str]]:
    out = set()
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, f"unexpected rule fields: {rule}"
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                for v in rule["verbs"]:
                    out.add((g, r, v))
    return out


def test_operator_rbac_is_exactly_what_it_needs(rendered):
    crud = ["get", "list", "watch", "create", "update", "patch", "delete"]
    expected = set()
    expected |= {("cistern.io", r, v) for r in ("cisternclusters", "cisternclusters/status")
                 for v in ("get", "list", "watch", "update", "patch")}
    expected |= {("", "pods", v) for v in ("get", "list", "watch", "delete")}
    expected |= {("apps", "statefulsets", v) for v in crud}
    expected |= {("", r, v) for r in ("services", "configmaps") for v in crud}
    expected |= {("", "secrets", v) for v in ("get", "list", "watch", "create", "update", "patch")}
    expected |= {("", "persistentvolumeclaims", v) for v in ("get", "list", "watch")}
    expected |= {("", "events", v) for v in ("create", "patch")}
    role = find(rendered, "ClusterRole", "cistern-operator")
    assert rbac_triples(role["rules"]) == expected
    assert not any("*" in t for t in rbac_triples(role["rules"]))
    binding = find(rendered, "ClusterRoleBinding", "cistern-operator")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cistern-operator"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "cistern-operator", "namespace": NAMESPACE}]


def assert_locked_down(deployment: dict) -> None:
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert sc.get("privileged") is not True, c["name"]
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][part]), f"{c['name']} resources.{part}"


def test_operator_deployment(rendered):
    d = find(rendered, "Deployment", "cistern-operator")
    assert d["spec"]["replicas"] == 1
    pod = d["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "cistern-operator"
    assert [c["name"] for c in pod["containers"]] == ["operator", "kubectl-proxy"]
    op = container(d, "operator")
    assert op["image"] == IMAGE
    assert op["args"] == ["operator", "--api-server", "http://127.0.0.1:8001"]
    for probe in ("livenessProbe", "readinessProbe"):
        get = op[probe]["httpGet"]
        assert get["path"] == "/healthz", probe
        assert port_number(op, get["port"]) == 8081, probe
    proxy = container(d, "kubectl-proxy")
    assert proxy["image"] == "registry.k8s.io/kubectl:v1.32.4"
    assert proxy["args"] == ["proxy", "--port=8001", "--address=127.0.0.1"]
    assert "ports" not in proxy, "the API proxy must stay inside the pod"
    assert_locked_down(d)


def test_webhook_wiring(rendered):
    d = find(rendered, "Deployment", "cistern-mount-injector")
    c = container(d, "webhook")
    assert c["image"] == IMAGE
    assert c["args"] == ["webhook", "--listen", "0.0.0.0:8443", "--tls-cert", "/etc/cistern/tls/tls.crt",
                         "--tls-key", "/etc/cistern/tls/tls.key"]
    assert_locked_down(d)
    pod = d["spec"]["template"]["spec"]
    # The certificate files are in the mounted TLS Secret.
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = [m for m in c["volumeMounts"] if m["mountPath"] == "/etc/cistern/tls"]
    assert len(mounts) == 1 and mounts[0].get("readOnly") is True
    assert volumes[mounts[0]["name"]]["secret"]["secretName"] == "cistern-mount-injector-tls"
    # The Service reaches the listening port from 443 and selects these pods.
    svc = find(rendered, "Service", "cistern-mount-injector")
    [sp] = svc["spec"]["ports"]
    assert sp["port"] == 443 and port_number(c, sp["targetPort"]) == 8443
    assert svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
    # The webhook configuration.
    mwc = find(rendered, "MutatingWebhookConfiguration", "cistern-mount-injector")
    assert mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/cistern-mount-injector"
    [hook] = mwc["webhooks"]
    assert hook["name"] == "mount.cistern.io"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["sideEffects"] == "None"
    assert hook["failurePolicy"] == "Ignore"
    assert hook["timeoutSeconds"] == 5
    assert hook["reinvocationPolicy"] == "Never"
    assert "caBundle" not in hook["clientConfig"], "cert-manager injects the CA bundle"
    assert hook["clientConfig"]["service"] == {"name": svc["metadata"]["name"], "namespace": svc["metadata"]["namespace"],
                                               "path": "/mutate", "port": sp["port"]}
    [rule] = hook["rules"]
    assert rule["operations"] == ["CREATE"] and rule["resources"] == ["pods"]
    assert rule["apiGroups"] == [""] and rule["apiVersions"] == ["v1"]
    assert hook["objectSelector"] == {"matchLabels": {"cistern.io/inject-mount": "true"}}
    assert {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [NAMESPACE]} in \
        hook["namespaceSelector"]["matchExpressions"]


# ---------------------------------------------------------------- the CRD as JSON Schema

@pytest.fixture(scope="module")
def crd() -> dict:
    return yaml.safe_load(CRD_FILE.read_text())


def openapi_schema(crd: dict) -> dict:
    [version] = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def dig(value: Any, *path: str, default: Any = None) -> Any:
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return default
        value = value[key]
    return value


# Python mirrors of the CRD's CEL rules (x-kubernetes-validations), keyed by the rule's
# exact text: a rule changed or added in the CRD without its mirror here fails the
# tests. Each treats an absent field as its schema default, as the rule does.
def _kv_kind(s: dict, part: str) -> str:
    return dig(s, part, "kv", "kind", default="sqlite")


def _no_tenants(s: dict) -> bool:
    return not dig(s, "tenants", default=[])


CEL_MIRRORS: dict[str, Callable[[dict], bool]] = {
    **{f"(has(self.{part}) && has(self.{part}.kv) && has(self.{part}.kv.kind) ? self.{part}.kv.kind : 'sqlite') "
       f"!= 'sqlite' || (has(self.{part}) && has(self.{part}.replicas) ? self.{part}.replicas : 1) == 1":
       (lambda part: lambda s: _kv_kind(s, part) != "sqlite" or dig(s, part, "replicas", default=1) == 1)(part)
       for part in ("mgmtd", "meta")},
    **{f"(has(self.{part}) && has(self.{part}.kv) && has(self.{part}.kv.kind) ? self.{part}.kv.kind : 'sqlite') "
       f"!= 'postgres' || has(self.{part}.kv.conninfoSecretRef)":
       (lambda part: lambda s: _kv_kind(s, part) != "postgres" or dig(s, part, "kv", "conninfoSecretRef") is not None)(part)
       for part in ("mgmtd", "meta")},
    "(has(self.master) && has(self.master.replicas) ? self.master.replicas : 1) == 0 || "
    "(has(self.master) && has(self.master.adminTokenSecretRef))":
        lambda s: dig(s, "master", "replicas", default=1) == 0 or dig(s, "master", "adminTokenSecretRef") is not None,
    "(has(self.chains) && has(self.chains.replicas) ? self.chains.replicas : 3) <= "
    "(has(self.storage.nodes) ? self.storage.nodes : 3)":
        lambda s: dig(s, "chains", "replicas", default=3) <= dig(s, "storage", "nodes", default=3),
    "!has(self.tenants) || size(self.tenants) == 0 || "
    "(has(self.master) && has(self.master.replicas) ? self.master.replicas : 1) > 0":
        lambda s: _no_tenants(s) or dig(s, "master", "replicas", default=1) > 0,
    "!has(self.tenants) || size(self.tenants) == 0 || (has(self.auth) && has(self.auth.clusterKeySecretRef))":
        lambda s: _no_tenants(s) or dig(s, "auth", "clusterKeySecretRef") is not None,
}


def _list_map_keys(validator, keys, instance, schema) -> Iterator[jsonschema.ValidationError]:
    if not validator.is_type(instance, "array"):
        return
    seen: dict[tuple, int] = {}
    for i, item in enumerate(instance):
        if not isinstance(item, dict):
            continue
        key = tuple(item.get(k) for k in keys)
        if key in seen:
            yield jsonschema.ValidationError(
                f"duplicate entry: items {seen[key]} and {i} have the same {', '.join(keys)} {key}")
        seen.setdefault(key, i)


def _cel_rules(validator, rules, instance, schema) -> Iterator[jsonschema.ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for rule in rules:
        mirror = CEL_MIRRORS.get(rule["rule"])
        if mirror is None:
            yield jsonschema.ValidationError(f"no Python mirror for the CEL rule {rule['rule']!r}: add one to CEL_MIRRORS")
        elif not mirror(instance):
            yield jsonschema.ValidationError(rule["message"])


# Draft 4 is what apiextensions' JSONSchemaProps follows; the two x-kubernetes
# keywords that constrain values are implemented, the others only shape the
# conversion (preserve-unknown-fields) or concern merging (list-type).
CRDValidator = jsonschema.validators.extend(jsonschema.Draft4Validator, {
    "x-kubernetes-list-map-keys": _list_map_keys,
    "x-kubernetes-validations": _cel_rules,
})

FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("int32")
def _int32(value: object) -> bool:
    return not isinstance(value, int) or -(1 << 31) <= value < (1 << 31)


@FORMATS.checks("int64")
def _int64(value: object) -> bool:
    return not isinstance(value, int) or -(1 << 63) <= value < (1 << 63)


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    # RFC 3339: a date, a time and an offset (Z or +hh:mm).
    return not isinstance(value, str) or ("T" in value and datetime.datetime.fromisoformat(value).tzinfo is not None)


KEPT_X_KEYS = {"x-kubernetes-list-map-keys", "x-kubernetes-validations"}
SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf")


def to_json_schema(node: dict) -> dict:
    """An OpenAPI v3 schema of a CRD as JSON Schema (draft 4) that rejects unknown
    fields: every object with properties, and without
    x-kubernetes-preserve-unknown-fields, gets additionalProperties: false."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") and key not in KEPT_X_KEYS:
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(prop) for name, prop in value.items()}
        elif key in ("items", "not") or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = to_json_schema(value)
        elif key in SUBSCHEMA_LISTS:
            out[key] = [to_json_schema(s) for s in value]
        else:
            out[key] = copy.deepcopy(value)
    if node.get("nullable"):
        out.pop("nullable")
        out["type"] = [out["type"], "null"]
    if out.get("type") == "object" and "properties" in out and not node.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    return out


def validator_for(node: dict) -> jsonschema.protocols.Validator:
    schema = to_json_schema(node)
    CRDValidator.check_schema(schema)
    return CRDValidator(schema, format_checker=FORMATS)


@pytest.fixture(scope="module")
def resource_validator(crd) -> jsonschema.protocols.Validator:
    return validator_for(openapi_schema(crd))


def apply_defaults(value: Any, schema: dict) -> Any:
    """What the API server does before validating: an absent property with a default
    gets a copy of it, and defaulting goes on inside what was just set."""
    if isinstance(value, dict):
        for name, prop in schema.get("properties", {}).items():
            if name not in value and "default" in prop:
                value[name] = copy.deepcopy(prop["default"])
            if name in value:
                apply_defaults(value[name], prop)
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            apply_defaults(item, schema["items"])
    return value


def errors(validator, instance: dict) -> list[str]:
    return sorted(f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
                  for e in validator.iter_errors(instance))


def sample(name: str) -> dict:
    [doc] = [d for d in yaml.safe_load_all((SAMPLES / name).read_text()) if d is not None]
    return doc


SAMPLE_FILES = ["small.yaml", "postgres-meta.yaml", "minimal.yaml"]


# ---------------------------------------------------------------- (b) samples

def test_the_samples_are_all_there():
    assert sorted(p.name for p in SAMPLES.iterdir()) == sorted(SAMPLE_FILES)


@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_sample_validates_against_the_crd(name, crd, resource_validator):
    doc = sample(name)
    assert doc["apiVersion"] == f"{crd['spec']['group']}/v1alpha1"
    assert doc["kind"] == crd["spec"]["names"]["kind"]
    assert doc["metadata"]["name"] and "namespace" not in doc["metadata"]
    assert errors(resource_validator, doc) == []
    defaulted = apply_defaults(copy.deepcopy(doc), openapi_schema(crd))
    assert errors(resource_validator, defaulted) == []


def test_the_minimal_sample_has_only_required_fields_and_gets_every_default(crd, resource_validator):
    doc = sample("minimal.yaml")
    spec = doc["spec"]
    # image and storage (empty: every default) are required; the admin token because
    # master.replicas defaults to 1.
    assert spec == {"image": spec["image"], "storage": {},
                    "master": {"adminTokenSecretRef": spec["master"]["adminTokenSecretRef"]}}
    for drop in (("image",), ("storage",), ("master",)):
        broken = copy.deepcopy(doc)
        del broken["spec"][drop[0]]
        assert errors(resource_validator, apply_defaults(broken, openapi_schema(crd))), f"without spec.{drop[0]}"
    spec = apply_defaults(copy.deepcopy(doc), openapi_schema(crd))["spec"]
    assert spec["imagePullPolicy"] == "IfNotPresent" and spec["paused"] is False
    for part in ("mgmtd", "meta"):
        assert spec[part] == {"replicas": 1, "kv": {"kind": "sqlite"}, "volume": {"size": "1Gi"}}, part
    assert spec["master"]["replicas"] == 1 and spec["master"]["port"] == 8080
    assert spec["storage"] == {"nodes": 3, "targetsPerNode": 2, "volume": {"size": "100Gi"}}
    assert spec["chains"] == {"replicas": 3}
    assert "auth" not in spec and "tenants" not in spec


def test_the_small_sample_is_what_it_says():
    spec = sample("small.yaml")["spec"]
    assert spec["storage"]["nodes"] == 3 and spec["storage"]["targetsPerNode"] == 2
    assert spec["storage"]["volume"]["size"] == "50Gi"
    assert spec["chains"]["replicas"] == 3 and spec["master"]["replicas"] == 1
    assert set(spec["master"]["adminTokenSecretRef"]) == {"name", "key"}
    assert set(spec["auth"]["clusterKeySecretRef"]) == {"name", "key"}
    assert len(spec["tenants"]) == 2
    for tenant in spec["tenants"]:
        assert {"quotaBytes", "quotaPages", "tokenSecretRef"} <= set(tenant), tenant["name"]
        # key token: the Secret the operator writes is usable as cistern.io/token-secret.
        assert tenant["tokenSecretRef"]["key"] == "token", tenant["name"]
    assert len({t["tokenSecretRef"]["name"] for t in spec["tenants"]}) == 2, "one Secret per tenant"


def test_the_postgres_sample_uses_postgres_for_several_managers_and_metadata_servers():
    spec = sample("postgres-meta.yaml")["spec"]
    assert (spec["mgmtd"]["replicas"], spec["meta"]["replicas"]) == (3, 2)
    refs = []
    for part in ("mgmtd", "meta"):
        kv = spec[part]["kv"]
        assert kv["kind"] == "postgres" and set(kv["conninfoSecretRef"]) == {"name", "key"}, part
        refs.append((kv["conninfoSecretRef"]["name"], kv["conninfoSecretRef"]["key"]))
    assert refs[0] != refs[1], "cluster managers and metadata servers keep a database each"


# ---------------------------------------------------------------- (c) rejected resources

def set_path(doc: dict, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node: Any = doc
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def delete_path(doc: dict, path: str) -> None:
    *parents, last = path.split(".")
    node: Any = doc
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    del node[int(last) if isinstance(node, list) else last]


BAD = [
    # (what, mutation of small.yaml, text every rejection must contain)
    ("no storage nodes", lambda d: set_path(d, "spec.storage.nodes", 0), "spec.storage.nodes: 0 is less than the minimum of 1"),
    ("bad imagePullPolicy", lambda d: set_path(d, "spec.imagePullPolicy", "Sometimes"), "spec.imagePullPolicy: 'Sometimes' is not one of"),
    ("unknown field under spec", lambda d: set_path(d, "spec.storge", {"nodes": 3}), "spec: Additional properties are not allowed ('storge' was unexpected)"),
    ("tenant without tokenSecretRef", lambda d: delete_path(d, "spec.tenants.1.tokenSecretRef"), "spec.tenants.1: 'tokenSecretRef' is a required property"),
    ("unknown field in the storage volume", lambda d: set_path(d, "spec.storage.volume.sise", "1Gi"), "spec.storage.volume: Additional properties are not allowed ('sise' was unexpected)"),
    ("storage disks are gone", lambda d: set_path(d, "spec.storage.disks", [{"name": "data", "size": "1Gi"}]), "spec.storage: Additional properties are not allowed ('disks' was unexpected)"),
    ("no image", lambda d: delete_path(d, "spec.image"), "spec: 'image' is a required property"),
    ("storage volume size not a quantity", lambda d: set_path(d, "spec.storage.volume.size", "100GB"), "spec.storage.volume.size: '100GB' does not match"),
    ("too many targets per node", lambda d: set_path(d, "spec.storage.targetsPerNode", 100), "spec.storage.targetsPerNode: 100 is greater than the maximum of 99"),
    ("no targets", lambda d: set_path(d, "spec.storage.targetsPerNode", 0), "spec.storage.targetsPerNode: 0 is less than the minimum of 1"),
    ("two tenants of one name", lambda d: set_path(d, "spec.tenants.1.name", "inference"), "spec.tenants: duplicate entry"),
    ("a tenant named admin", lambda d: set_path(d, "spec.tenants.0.name", "admin"), "spec.tenants.0.name: 'admin' should not be valid"),
    ("no byte quota", lambda d: d["spec"]["tenants"][0].pop("quotaBytes"), "'quotaBytes' is a required property"),
    ("no page quota", lambda d: d["spec"]["tenants"][0].pop("quotaPages"), "'quotaPages' is a required property"),
    ("negative quota", lambda d: set_path(d, "spec.tenants.0.quotaBytes", -1), "spec.tenants.0.quotaBytes: -1 is less than the minimum of 0"),
    ("negative page quota", lambda d: set_path(d, "spec.tenants.0.quotaPages", -1), "spec.tenants.0.quotaPages: -1 is less than the minimum of 0"),
    ("page quota beyond int64", lambda d: set_path(d, "spec.tenants.0.quotaPages", 1 << 63), "spec.tenants.0.quotaPages: 9223372036854775808 is not a 'int64'"),
    ("quota not an integer", lambda d: set_path(d, "spec.tenants.0.quotaBytes", "10Gi"), "spec.tenants.0.quotaBytes: '10Gi' is not of type 'integer'"),
    ("too many mgmtd replicas", lambda d: set_path(d, "spec.mgmtd.replicas", 8), "spec.mgmtd.replicas: 8 is greater than the maximum of 7"),
    ("master port 0", lambda d: set_path(d, "spec.master.port", 0), "spec.master.port: 0 is less than the minimum of 1"),
    ("memory tier too large", lambda d: set_path(d, "spec.storage.memoryCacheMiB", 4194305), "spec.storage.memoryCacheMiB: 4194305 is greater than the maximum of 4194304"),
    ("unknown kv kind", lambda d: set_path(d, "spec.meta.kv.kind", "etcd"), "spec.meta.kv.kind: 'etcd' is not one of"),
    ("unknown mgmtd kv kind", lambda d: set_path(d, "spec.mgmtd.kv.kind", "etcd"), "spec.mgmtd.kv.kind: 'etcd' is not one of"),
    ("too many meta replicas", lambda d: set_path(d, "spec.meta", {"replicas": 33, "kv": {"kind": "postgres", "conninfoSecretRef": {"name": "pg", "key": "meta"}}}), "spec.meta.replicas: 33 is greater than the maximum of 32"),
    ("unknown field in the cluster key ref", lambda d: set_path(d, "spec.auth.clusterKeySecretRef.namespace", "other"), "spec.auth.clusterKeySecretRef: Additional properties are not allowed ('namespace' was unexpected)"),
    ("secret ref without key", lambda d: delete_path(d, "spec.master.adminTokenSecretRef.key"), "spec.master.adminTokenSecretRef: 'key' is a required property"),
    ("paused not a boolean", lambda d: set_path(d, "spec.paused", "yes"), "spec.paused: 'yes' is not of type 'boolean'"),
    ("more chain replicas than storage nodes", lambda d: set_path(d, "spec.chains.replicas", 4), "spec: chains.replicas must not exceed storage.nodes"),
    ("master without admin token", lambda d: delete_path(d, "spec.master.adminTokenSecretRef"), "spec: master.adminTokenSecretRef is required"),
    ("postgres without conninfo", lambda d: set_path(d, "spec.meta.kv.kind", "postgres"), "spec: meta.kv.conninfoSecretRef is required"),
    ("mgmtd postgres without conninfo", lambda d: set_path(d, "spec.mgmtd.kv.kind", "postgres"), "spec: mgmtd.kv.conninfoSecretRef is required"),
    ("several managers on sqlite", lambda d: set_path(d, "spec.mgmtd.replicas", 3), "spec: mgmtd.replicas must be 1 when mgmtd.kv.kind is sqlite"),
    ("several metadata servers on sqlite", lambda d: set_path(d, "spec.meta.replicas", 2), "spec: meta.replicas must be 1 when meta.kv.kind is sqlite"),
    ("several managers on the default kv", lambda d: set_path(d, "spec.mgmtd", {"replicas": 3}), "use kv.kind postgres for more than one replica"),
    ("several metadata servers on the default kv", lambda d: set_path(d, "spec.meta", {"replicas": 2}), "use kv.kind postgres for more than one replica"),
    ("tenants without a master", lambda d: set_path(d, "spec.master", {"replicas": 0}), "spec: tenants require master.replicas greater than 0"),
    ("tenants without auth", lambda d: delete_path(d, "spec.auth"), "spec: auth.clusterKeySecretRef is required when tenants are listed"),
    ("tenants with auth but no cluster key", lambda d: set_path(d, "spec.auth", {}), "spec: auth.clusterKeySecretRef is required when tenants are listed"),
    ("negative upgraded count", lambda d: set_path(d, "status", {"storage": {"nodes": 3, "ready": 3, "upgraded": -1}}), "status.storage.upgraded: -1 is less than the minimum of 0"),
    ("message not a string", lambda d: set_path(d, "status", {"message": 42}), "status.message: 42 is not of type 'string'"),
    ("bad condition status", lambda d: set_path(d, "status", {"conditions": [{"type": "Available", "status": "Yes", "reason": "Ok", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}), "status.conditions.0.status: 'Yes' is not one of"),
    ("condition time without offset", lambda d: set_path(d, "status", {"conditions": [{"type": "Available", "status": "True", "reason": "Ok", "message": "", "lastTransitionTime": "2026-01-01T00:00:00"}]}), "status.conditions.0.lastTransitionTime: '2026-01-01T00:00:00' is not a 'date-time'"),
    ("unknown phase", lambda d: set_path(d, "status", {"phase": "Happy"}), "status.phase: 'Happy' is not one of"),
]


@pytest.mark.parametrize("what,mutate,expected", BAD, ids=[b[0] for b in BAD])
def test_broken_resources_are_rejected_naming_the_field(what, mutate, expected, crd, resource_validator):
    doc = sample("small.yaml")
    assert errors(resource_validator, doc) == [], "the base sample must be valid"
    mutate(doc)
    found = errors(resource_validator, apply_defaults(doc, openapi_schema(crd)))
    assert found, f"{what}: accepted"
    assert any(expected in e for e in found), f"{what}: expected {expected!r} in {found}"


def test_the_cross_field_rules_allow_what_they_should(crd, resource_validator):
    def ok(doc: dict) -> None:
        assert errors(resource_validator, apply_defaults(copy.deepcopy(doc), openapi_schema(crd))) == []

    doc = sample("small.yaml")
    doc["spec"]["chains"]["replicas"] = doc["spec"]["storage"]["nodes"]
    doc["spec"]["tenants"] = []                                # no tenants: neither master nor auth needed
    del doc["spec"]["auth"]
    doc["spec"]["master"] = {"replicas": 0}                   # no master, no admin token
    ok(doc)
    del doc["spec"]["tenants"]
    ok(doc)
    # PostgreSQL serves any number of replicas, up to each maximum; SQLite exactly one.
    for part, most in (("mgmtd", 7), ("meta", 32)):
        doc["spec"][part] = {"replicas": most, "kv": {"kind": "postgres",
                                                      "conninfoSecretRef": {"name": "pg", "key": part}}}
    ok(doc)
    doc["spec"]["mgmtd"] = {"replicas": 1, "kv": {"kind": "postgres", "conninfoSecretRef": {"name": "pg", "key": "m"}}}
    doc["spec"]["meta"] = {"replicas": 1}
    ok(doc)
    doc = sample("small.yaml")
    doc["spec"]["storage"] = {"targetsPerNode": 99}            # the new maximum
    doc["spec"]["tenants"][0]["quotaPages"] = 0
    ok(doc)
    status = {"observedGeneration": 4, "phase": "Upgrading", "image": IMAGE,
              "message": "restarting small-storage-1 on the new image: every chain is SERVING",
              "storage": {"nodes": 3, "ready": 3, "upgraded": 1},
              "chains": {"total": 6, "serving": 6}, "upgrade": {"image": IMAGE, "node": "small-storage-1"},
              "conditions": [{"type": t, "status": s, "reason": "AllServing", "message": "", "observedGeneration": 4,
                              "lastTransitionTime": "2026-01-01T00:00:00Z"}
                             for t, s in (("Available", "True"), ("Progressing", "False"), ("Degraded", "False"))]}
    doc["status"] = status
    assert errors(resource_validator, doc) == []


# ---------------------------------------------------------------- (d) the CRD is structural

def schema_nodes(node: dict, path: str = "") -> Iterator[tuple[str, dict]]:
    """Every schema of a field or list item, with its path (not the value-only
    schemas under not/allOf/anyOf/oneOf)."""
    yield path or "<root>", node
    for name, prop in node.get("properties", {}).items():
        yield from schema_nodes(prop, f"{path}.{name}")
    if "items" in node:
        yield from schema_nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from schema_nodes(node["additionalProperties"], f"{path}{{}}")


def test_crd_names_and_version(crd):
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "cisternclusters.cistern.io"
    assert spec["group"] == "cistern.io" and spec["scope"] == "Namespaced"
    names = spec["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == ("CisternCluster", "cisternclusters", ["cc"])
    [version] = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] is True and version["storage"] is True
    assert version["subresources"] == {"status": {}}


def test_printer_columns_point_at_fields_of_their_type(crd):
    [version] = crd["spec"]["versions"]
    columns = version["additionalPrinterColumns"]
    assert [c["name"] for c in columns] == ["Phase", "Image", "Storage ready", "Chains serving", "Age"]
    root = openapi_schema(crd)
    for c in columns:
        if c["jsonPath"] == ".metadata.creationTimestamp":
            assert c["type"] == "date"
            continue
        node = root
        for part in c["jsonPath"].lstrip(".").split("."):
            node = node["properties"][part]
        assert node["type"] == c["type"], c["name"]


def test_every_schema_node_is_typed_and_described(crd):
    problems = []
    for path, node in schema_nodes(openapi_schema(crd)):
        if node.get("type") not in ("object", "array", "string", "integer", "number", "boolean"):
            problems.append(f"{path}: no type")
        if not str(node.get("description", "")).strip():
            problems.append(f"{path}: no description")
        if "$ref" in node or "additionalProperties" in node and "properties" in node:
            problems.append(f"{path}: $ref, or properties with additionalProperties")
        # (metadata is the API server's: a CRD may not describe it beyond name.)
        if node.get("type") == "object" and path != ".metadata" and \
                not ("properties" in node or "additionalProperties" in node or node.get("x-kubernetes-preserve-unknown-fields")):
            problems.append(f"{path}: an object without properties would be pruned empty")
        if node.get("type") == "array" and "items" not in node:
            problems.append(f"{path}: an array without items")
        if not set(node.get("required", [])) <= set(node.get("properties", {})):
            problems.append(f"{path}: requires fields it does not define")
        if node.get("type") == "integer" and node.get("format") not in ("int32", "int64"):
            problems.append(f"{path}: an integer without format int32 or int64")
        for key in node.get("x-kubernetes-list-map-keys", []):
            item = node["items"]
            if key not in item.get("required", []) and "default" not in item["properties"].get(key, {}):
                problems.append(f"{path}: map key {key} is neither required nor defaulted")
        # Value-only schemas under not/allOf/anyOf/oneOf: no type, description or default.
        for junctor in [node.get("not")] + [s for k in SUBSCHEMA_LISTS for s in node.get(k, [])]:
            if junctor is not None and {"type", "description", "default", "additionalProperties", "nullable"} & set(junctor):
                problems.append(f"{path}: a structural-only keyword under not/allOf/anyOf/oneOf")
    assert not problems, "\n".join(problems)


def test_every_default_is_pruned_and_validates_against_its_schema(crd):
    defaults = [(path, node) for path, node in schema_nodes(openapi_schema(crd)) if "default" in node]
    assert len(defaults) >= 15, "defaults went missing"
    for path, node in defaults:
        value = copy.deepcopy(node["default"])
        if isinstance(value, dict):
            assert set(value) <= set(node.get("properties", {})), f"{path}: default has unknown fields"
        assert errors(validator_for(node), value) == [], f"{path}: default as written"
        assert errors(validator_for(node), apply_defaults(value, node)) == [], f"{path}: default with nested defaults"


def test_every_cel_rule_has_a_mirror_and_a_field_path_that_exists(crd):
    rules = [(path, rule) for path, node in schema_nodes(openapi_schema(crd))
             for rule in node.get("x-kubernetes-validations", [])]
    assert sorted(r["rule"] for _, r in rules) == sorted(CEL_MIRRORS)
    root = openapi_schema(crd)
    for path, rule in rules:
        assert rule["message"] and rule["reason"] in ("FieldValueRequired", "FieldValueInvalid"), rule["rule"]
        node = root
        for part in path.lstrip(".").split("."):
            node = node["properties"][part]
        for part in rule["fieldPath"].lstrip(".").split("."):
            assert part in node.get("properties", {}), f"{rule['fieldPath']} is not a field of {path}"
            node = node["properties"][part]


def test_spec_fields_have_the_operator_contract(crd):
    # The operator in Swift decodes these names; renaming one breaks it.
    spec = openapi_schema(crd)["properties"]["spec"]
    assert spec["required"] == ["image", "storage"]
    assert set(spec["properties"]) == {"image", "imagePullPolicy", "mgmtd", "meta", "master", "storage", "chains",
                                       "auth", "tenants", "paused"}
    p = spec["properties"]
    secret_ref = {"name", "key"}
    for part in ("mgmtd", "meta"):
        assert set(p[part]["properties"]) == {"replicas", "kv", "resources", "volume"}, part
        kv = p[part]["properties"]["kv"]
        assert set(kv["properties"]) == {"kind", "conninfoSecretRef"}, part
        assert kv["properties"]["kind"]["enum"] == ["sqlite", "postgres"] and kv["properties"]["kind"]["default"] == "sqlite"
        assert set(kv["properties"]["conninfoSecretRef"]["properties"]) == secret_ref
        assert set(p[part]["properties"]["volume"]["properties"]) == {"size", "storageClassName"}
    assert set(p["master"]["properties"]) == {"replicas", "port", "adminTokenSecretRef", "resources"}
    assert set(p["master"]["properties"]["adminTokenSecretRef"]["properties"]) == secret_ref
    assert set(p["storage"]["properties"]) == {"nodes", "targetsPerNode", "memoryCacheMiB", "volume", "resources"}
    assert "required" not in p["storage"], "storage: {} takes every default"
    volume = p["storage"]["properties"]["volume"]
    assert set(volume["properties"]) == {"size", "storageClassName"} and volume["properties"]["size"]["default"] == "100Gi"
    assert "one data directory" in " ".join(volume["description"].split())
    assert set(p["chains"]["properties"]) == {"replicas"}
    assert set(p["auth"]["properties"]) == {"clusterKeySecretRef"} and "default" not in p["auth"]
    assert set(p["auth"]["properties"]["clusterKeySecretRef"]["properties"]) == secret_ref
    tenant = p["tenants"]["items"]
    assert set(tenant["properties"]) == {"name", "quotaBytes", "quotaPages", "tokenSecretRef"}
    assert tenant["required"] == ["name", "quotaBytes", "quotaPages", "tokenSecretRef"]
    assert set(tenant["properties"]["tokenSecretRef"]["properties"]) == secret_ref
    for quota in ("quotaBytes", "quotaPages"):
        assert (tenant["properties"][quota]["format"], tenant["properties"][quota]["minimum"]) == ("int64", 0), quota
    limits = {(name, field): (node["minimum"], node.get("maximum"), node.get("default"))
              for name, field, node in [
                  ("mgmtd", "replicas", p["mgmtd"]["properties"]["replicas"]),
                  ("meta", "replicas", p["meta"]["properties"]["replicas"]),
                  ("master", "replicas", p["master"]["properties"]["replicas"]),
                  ("master", "port", p["master"]["properties"]["port"]),
                  ("storage", "nodes", p["storage"]["properties"]["nodes"]),
                  ("storage", "targetsPerNode", p["storage"]["properties"]["targetsPerNode"]),
                  ("storage", "memoryCacheMiB", p["storage"]["properties"]["memoryCacheMiB"]),
                  ("chains", "replicas", p["chains"]["properties"]["replicas"])]}
    assert limits == {("mgmtd", "replicas"): (1, 7, 1), ("meta", "replicas"): (1, 32, 1),
                      ("master", "replicas"): (0, 16, 1), ("master", "port"): (1, 65535, 8080),
                      ("storage", "nodes"): (1, 1024, 3), ("storage", "targetsPerNode"): (1, 99, 2),
                      ("storage", "memoryCacheMiB"): (0, 4194304, None), ("chains", "replicas"): (1, 5, 3)}
    status = openapi_schema(crd)["properties"]["status"]
    s = status["properties"]
    assert set(s) == {"observedGeneration", "phase", "image", "message", "storage", "chains", "upgrade", "conditions"}
    assert set(s["storage"]["properties"]) == {"nodes", "ready", "upgraded"}
    assert set(s["chains"]["properties"]) == {"total", "serving"}
    assert set(s["upgrade"]["properties"]) == {"image", "node", "deletedAtSeconds", "chainVersions"}
    assert s["message"]["type"] == "string"
    assert status["properties"]["phase"]["enum"] == ["Provisioning", "Running", "Upgrading", "Scaling", "Degraded", "Paused"]
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map" and conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_the_readme_states_the_webhook_contract_and_the_operators_objects():
    text = (KUBE / "README.md").read_text()
    for heading in ("## The webhook's contract", "## Objects the operator makes for a CisternCluster NAME"):
        assert heading in text, heading
    contract = text.split("## The webhook's contract")[1].split("\n## ")[0]
    for word in ('cistern.io/inject-mount: "true"', "`cistern.io/cluster`", "`cistern.io/mount`",
                 "`cistern.io/token-secret`", "`cistern.io/root`", "privileged", "/dev/fuse", "CAP_SYS_ADMIN",
                 "emptyDir", "`Bidirectional`", "`HostToContainer`"):
        assert word in contract, word
    objects = text.split("## Objects the operator makes for a CisternCluster NAME")[1].split("\n## ")[0]
    for word in ("`NAME-mgmtd`", "`NAME-meta`", "`NAME-storage`", "`NAME-master`", "`OnDelete`", "SERVING",
                 "`NAME-config`", "`POD.yaml`", "`NAME-client`", "`cluster.yaml`"):
        assert word in objects, word
