"""A real local cluster (`cistern up`, separate processes on loopback) for the tests.

The cistern binary comes from $CISTERN_BIN or the repository's debug build; the
library from $CISTERN_LIBRARY or the repository's builds (see cistern._native)."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def cistern_bin() -> str:
    explicit = os.environ.get("CISTERN_BIN")
    if explicit:
        return explicit
    for p in (REPO / ".build" / "debug" / "cistern", REPO / ".build-release" / "release" / "cistern"):
        if p.exists():
            return str(p)
    raise RuntimeError("no cistern binary: run `swift build` first or set CISTERN_BIN")


class LocalCluster:
    def __init__(self, storage_nodes: int = 3):
        self.data_dir = tempfile.mkdtemp(prefix="cistern-py-")
        self.storage_nodes = storage_nodes
        self.running = False

    def up(self) -> "LocalCluster":
        out = subprocess.run([cistern_bin(), "up", "--data-dir", self.data_dir, "--storage-nodes", str(self.storage_nodes)],
                             capture_output=True, text=True, timeout=180)
        if out.returncode != 0:
            raise RuntimeError(f"cistern up failed: {out.stdout}\n{out.stderr}")
        self.running = True
        # If this test process dies without its teardown (a crash, a kill), a watchdog
        # stops the cluster so no servers are left behind.
        subprocess.Popen(["sh", "-c", f'while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; '
                                      f'"{cistern_bin()}" down --data-dir "{self.data_dir}" >/dev/null 2>&1; rm -rf "{self.data_dir}"'],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        return self

    def master_url(self) -> str:
        """The master HTTP service `cistern up` started (config/master1.yaml)."""
        import yaml

        with open(os.path.join(self.data_dir, "config", "master1.yaml")) as f:
            return "http://" + yaml.safe_load(f)["node"]["listen"]

    def admin_token(self) -> str:
        with open(os.path.join(self.data_dir, "admin.token")) as f:
            return f.read().strip()

    def down(self) -> None:
        if self.running:
            subprocess.run([cistern_bin(), "down", "--data-dir", self.data_dir], capture_output=True, timeout=60)
            self.running = False

    def remove(self) -> None:
        self.down()
        shutil.rmtree(self.data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster():
    c = LocalCluster().up()
    try:
        yield c
    finally:
        c.remove()


@pytest.fixture
def ns_name() -> str:
    """A fresh namespace name per test."""
    return "t-" + uuid.uuid4().hex[:12]


@pytest.fixture
def store(cluster, ns_name):
    from cistern import Store

    s = Store(cluster.data_dir, ns_name, page_bytes=64 << 10, capacity_pages=4096)
    s.connect()
    yield s
    s.close()
