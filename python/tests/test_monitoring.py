"""Monitoring against a real local cluster: the alert rules pass `promtool test rules`,
and a real Prometheus (Debian's `prometheus`, installed by scripts/deps.sh) scraping
every server of the cluster under a KV workload answers every query of the committed
Grafana dashboard with data, with every alert rule loaded and healthy."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "deploy" / "monitoring"
sys.path.insert(0, str(MONITORING))
import cluster_targets  # noqa: E402

PAGE = 64 << 10


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: scripts/deps.sh installs Debian's prometheus package (prometheus, promtool)")
    return path


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((MONITORING / "grafana" / "cistern-dashboard.json").read_text())
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]


def test_alert_rules_pass_their_promtool_tests():
    check = subprocess.run([tool("promtool"), "check", "rules", "cistern-alerts.yml"], cwd=MONITORING, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run([tool("promtool"), "test", "rules", "cistern-alerts.test.yml"], cwd=MONITORING, capture_output=True, text=True)
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr


def test_the_example_prometheus_config_is_valid(tmp_path):
    shutil.copy(MONITORING / "prometheus.example.yml", tmp_path)
    shutil.copy(MONITORING / "cistern-alerts.yml", tmp_path)
    (tmp_path / "targets.json").write_text("[]")
    out = subprocess.run([tool("promtool"), "check", "config", "prometheus.example.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(base: str, expr: str) -> list:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_every_dashboard_query_returns_data_from_a_real_cluster(cluster, store):
    targets = cluster_targets.targets(cluster.data_dir)
    roles = {g["labels"]["role"] for g in targets}
    assert roles == {"mgmtd", "meta", "storage", "master"}, targets
    work = Path(tempfile.mkdtemp(prefix="cistern-prom-"))
    (work / "targets.json").write_text(json.dumps(targets))
    (work / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{MONITORING / 'cistern-alerts.yml'}']\n"
        "scrape_configs:\n"
        "  - job_name: cistern\n"
        "    file_sd_configs: [{files: ['targets.json'], refresh_interval: 1s}]\n")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(work / "prometheus.log", "w")
    prom = subprocess.Popen([tool("prometheus"), "--config.file=prometheus.yml", f"--storage.tsdb.path={work / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], cwd=work, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                up = query(base, 'up{job="cistern"}')
                if len(up) == sum(len(g["targets"]) for g in targets) and all(r["value"][1] == "1" for r in up):
                    break
            except OSError:
                pass
            assert prom.poll() is None, (work / "prometheus.log").read_text()[-2000:]
            assert time.monotonic() < deadline, f"Prometheus did not scrape every server within 60 s: {(work / 'prometheus.log').read_text()[-2000:]}"
            time.sleep(0.5)

        # A workload: puts, hits, misses, exists, for about 12 s of scrapes.
        rng = np.random.default_rng(7)
        src = rng.integers(0, 256, size=(32, PAGE), dtype=np.uint8)
        dst = np.zeros_like(src)
        end = time.monotonic() + 12
        round_ = 0
        while time.monotonic() < end:
            keys = [f"mon-{round_}-{i}" for i in range(32)]
            assert store.batch_put_from(keys, [src[i].ctypes.data for i in range(32)], [PAGE] * 32) == [0] * 32
            got = store.batch_get_into(keys[:16] + [f"absent-{round_}-{i}" for i in range(16)],
                                       [dst[i].ctypes.data for i in range(32)], [PAGE] * 32)
            assert got[:16] == [PAGE] * 16 and all(g < 0 for g in got[16:]), got
            store.batch_is_exist(keys[:4])
            round_ += 1

        empty = []
        for title, expr in dashboard_queries():
            deadline = time.monotonic() + 30
            while not query(base, expr):
                if time.monotonic() > deadline:
                    empty.append(f"{title}: {expr}")
                    break
                time.sleep(1)
        assert not empty, "dashboard queries with no data:\n" + "\n".join(empty)

        # Figures the workload must show, not only exist.
        assert float(query(base, "sum(cistern_storage_write_bytes_total)")[0]["value"][1]) >= 3 * 32 * PAGE
        hits = float(query(base, "sum(cistern_kv_lookup_hits_total)")[0]["value"][1])
        keys_looked_up = float(query(base, "sum(cistern_kv_lookup_keys_total)")[0]["value"][1])
        assert 0 < hits < keys_looked_up, (hits, keys_looked_up)
        assert float(query(base, 'max(cistern_chain_targets{state="SERVING"})')[0]["value"][1]) > 0

        with urllib.request.urlopen(f"{base}/api/v1/rules", timeout=10) as r:
            groups = json.load(r)["data"]["groups"]
        rules = {rule["name"]: rule for g in groups for rule in g["rules"]}
        expected = {"CisternServerDown", "CisternNodeFailed", "CisternChainDegraded", "CisternChainNoServingReplica",
                    "CisternTargetOutOfService", "CisternDiskNearlyFull", "CisternResyncStuck", "CisternStorageErrorRate",
                    "CisternKVIndexUnavailable", "CisternTenantQuotaNearlyFull"}
        assert set(rules) == expected, sorted(rules)
        assert all(rule["health"] == "ok" for rule in rules.values()), {n: r.get("lastError") for n, r in rules.items()}
        firing = [r["name"] for r in rules.values() if r["state"] == "firing"]
        assert not firing, f"alerts firing on a healthy cluster: {firing}"
    finally:
        prom.terminate()
        try:
            prom.wait(timeout=20)
        except subprocess.TimeoutExpired:
            prom.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)
