"""The master HTTP service fuzzed with schemathesis against the OpenAPI document it
serves, on a real local cluster: every operation gets generated valid and invalid
requests (bodies, paths, queries, headers), and every answer must be no server
error, a documented status with a documented content type and a body matching its
schema. Afterwards the cluster still serves and the other tenant's data is intact."""
from __future__ import annotations

import json
import urllib.request

import pytest
import yaml
import schemathesis
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

# Generated data is bounded: a few dozen examples per operation, no huge bodies.
EXAMPLES = 25
# Every check runs but the two that need the document to state every server-side
# rule (a path component's byte length, a namespace's files <= capacity) as schema.
EXCLUDED = [positive_data_acceptance, negative_data_rejection]


def _call(url: str, method: str = "GET", token: str | None = None, body: bytes | None = None, content_type: str = "application/json"):
    req = urllib.request.Request(url, method=method, data=body)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def master(cluster):
    """A tenant with a quota and a namespace holding a page, plus a bystander tenant
    whose page must survive the fuzzing."""
    url, admin = cluster.master_url(), cluster.admin_token()
    tokens = {}
    for name in ("fuzz", "bystander"):
        status, body = _call(f"{url}/v1/tenants", "POST", admin, json.dumps({"name": name, "quotaBytes": 1 << 30, "quotaPages": 1 << 16}).encode())
        assert status in (201, 409), body
        status, body = _call(f"{url}/v1/tenants/{name}/tokens", "POST", admin, b"{}")
        assert status == 201, body
        tokens[name] = json.loads(body)["token"]
        status, body = _call(f"{url}/v1/namespaces", "POST", tokens[name], json.dumps({"name": "kv", "pageBytes": 4096, "capacityPages": 64}).encode())
        assert status == 201, body
    status, body = _call(f"{url}/v1/namespaces/kv/pages/keep", "PUT", tokens["bystander"], b"bystander's page", "application/octet-stream")
    assert status == 201, body
    return {"url": url, "token": tokens["fuzz"], "bystander": tokens["bystander"]}


def test_every_operation_conforms_to_the_document(master):
    status, document = _call(master["url"] + "/openapi.yaml")
    assert status == 200
    schema = schemathesis.openapi.from_dict(yaml.safe_load(document))
    headers = {"Authorization": f"Bearer {master['token']}"}
    operations, failures = 0, []
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        # Valid requests, then requests that break the document (wrong types, missing
        # fields, bad paths and queries): neither may get a server error or an
        # undocumented answer.
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def run(case):
                case.call_and_validate(base_url=master["url"], headers=headers, timeout=60, excluded_checks=EXCLUDED)

            try:
                run()
            except Unsatisfiable:
                assert mode == GenerationMode.NEGATIVE  # an operation without inputs has no invalid request
            except Exception as e:  # collect every operation's failure, then report them all
                failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {e}")
    assert not failures, "\n\n".join(failures)
    assert operations == 29, f"the document names {operations} operations"


def test_the_cluster_still_serves_and_the_bystander_is_intact(master):
    status, body = _call(master["url"] + "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, body = _call(master["url"] + "/v1/namespaces/kv/pages/keep", token=master["bystander"])
    assert status == 200 and body == b"bystander's page"
