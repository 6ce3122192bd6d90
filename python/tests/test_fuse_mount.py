"""`cistern mount` end to end: a real local cluster (its own, since one test kills a
storage node and the last one stops it), mounted through the kernel's FUSE, used
by real programs (tar, git, SQLite, fio, Python's file operations) and checked
against POSIX: modes, owners, times, links, rename rules, O_APPEND, O_TRUNC, holes,
truncation and each error a program can meet.

Skipped, with the reason, where the kernel offers no FUSE (/dev/fuse) or the
user may not mount."""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, LocalCluster, cistern_bin


def _fuse_unavailable() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse: the kernel here offers no FUSE"
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as e:
        return f"/dev/fuse cannot be opened ({e}): run with --device /dev/fuse and CAP_SYS_ADMIN"
    if os.geteuid() != 0 and not shutil.which("fusermount3"):
        return "not root and no fusermount3 (apt-get install fuse3)"
    return None


pytestmark = pytest.mark.skipif(_fuse_unavailable() is not None, reason=str(_fuse_unavailable()))


def mount(data_dir: str, mountpoint: str, *extra: str) -> None:
    os.makedirs(mountpoint, exist_ok=True)
    out = subprocess.run([cistern_bin(), "mount", mountpoint, "--data-dir", data_dir, "--log", mountpoint + ".log", *extra],
                         capture_output=True, text=True, timeout=150)
    assert out.returncode == 0, f"mount failed: {out.stdout}{out.stderr}"


def umount(mountpoint: str, lazy: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([cistern_bin(), "umount", mountpoint] + (["--lazy"] if lazy else []), capture_output=True, text=True, timeout=60)


def is_mounted(mountpoint: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == mountpoint and " - fuse.cistern " in line for line in f)


@pytest.fixture(scope="module")
def fuse_cluster():
    c = LocalCluster().up()
    yield c
    c.remove()


@pytest.fixture(scope="module")
def mnt(fuse_cluster):
    root = tempfile.mkdtemp(prefix="cistern-mnt-")
    point = os.path.join(root, "mnt")
    mount(fuse_cluster.data_dir, point)
    yield point
    if is_mounted(point):
        umount(point, lazy=True)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def d(mnt, request):
    """A fresh directory on the mount per test."""
    p = os.path.join(mnt, request.node.name.replace("[", "_").replace("]", "_"))
    os.mkdir(p)
    return p


def expect_errno(code: int, fn, *args) -> None:
    with pytest.raises(OSError) as e:
        fn(*args)
    assert e.value.errno == code, f"expected {errno.errorcode[code]}, got {e.value!r}"


# POSIX semantics


def test_files_read_back_and_stat_reports_type_size_and_links(d):
    p = os.path.join(d, "f")
    with open(p, "wb") as f:
        f.write(b"hello")
    st = os.stat(p)
    assert stat.S_ISREG(st.st_mode) and st.st_size == 5 and st.st_nlink == 1
    assert open(p, "rb").read() == b"hello"
    assert stat.S_ISDIR(os.stat(d).st_mode)
    assert sorted(os.listdir(d)) == ["f"]


def test_modes_and_owners_are_kept_and_enforced(d):
    p = os.path.join(d, "f")
    fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o640)
    os.close(fd)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o640 & ~_umask()
    os.chmod(p, 0o600)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    os.mkdir(os.path.join(d, "sub"), 0o700)
    assert stat.S_IMODE(os.stat(os.path.join(d, "sub")).st_mode) == 0o700 & ~_umask()
    if os.geteuid() == 0:
        os.chown(p, 1234, 4321)
        st = os.stat(p)
        assert (st.st_uid, st.st_gid) == (1234, 4321)
        # The kernel checks permissions (default_permissions): another user may
        # not read a 0600 file owned by someone else.
        os.chown(p, 0, 0)
        code = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat", p],
                              capture_output=True, text=True).returncode
        assert code != 0


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_times_are_set_by_utime_and_by_writing(d):
    p = os.path.join(d, "f")
    open(p, "wb").close()
    os.utime(p, ns=(1_000_000_000_123, 2_000_000_000_456))
    st = os.stat(p)
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_000_123, 2_000_000_000_456)
    before = time.time()
    with open(p, "ab") as f:
        f.write(b"x")
    st = os.stat(p)
    assert st.st_mtime >= before - 2, "a write moves the modification time to now"
    assert st.st_ctime >= before - 2


def test_hard_links_share_contents_and_count(d):
    a, b = os.path.join(d, "a"), os.path.join(d, "b")
    with open(a, "wb") as f:
        f.write(b"shared")
    os.link(a, b)
    assert os.stat(a).st_nlink == 2 and os.stat(a).st_ino == os.stat(b).st_ino
    os.unlink(a)
    assert os.stat(b).st_nlink == 1 and open(b, "rb").read() == b"shared"
    expect_errno(errno.EEXIST, os.link, b, b)


def test_symlinks_resolve_through_the_kernel(d):
    with open(os.path.join(d, "target"), "wb") as f:
        f.write(b"t")
    os.symlink("target", os.path.join(d, "link"))
    assert os.readlink(os.path.join(d, "link")) == "target"
    assert open(os.path.join(d, "link"), "rb").read() == b"t"
    assert stat.S_ISLNK(os.lstat(os.path.join(d, "link")).st_mode)


def test_rename_rules(d):
    j = lambda *p: os.path.join(d, *p)  # noqa: E731
    for name in ("x", "y"):
        with open(j(name), "wb") as f:
            f.write(name.encode())
    os.rename(j("x"), j("y"))  # over an existing file
    assert not os.path.exists(j("x")) and open(j("y"), "rb").read() == b"x"
    os.makedirs(j("a", "deep"))
    os.mkdir(j("b"))
    os.rename(j("y"), j("b", "y"))  # across directories
    assert open(j("b", "y"), "rb").read() == b"x"
    os.mkdir(j("empty"))
    os.rename(j("a"), j("empty"))  # a directory over an empty one
    assert os.path.isdir(j("empty", "deep"))
    expect_errno(errno.ENOTEMPTY, os.rename, j("b"), j("empty"))
    expect_errno(errno.EISDIR, os.rename, j("b", "y"), j("empty"))
    expect_errno(errno.ENOTDIR, os.rename, j("empty"), j("b", "y"))
    expect_errno(errno.EINVAL, os.rename, j("empty"), j("empty", "deep", "inside"))
    # A renamed directory's contents are reachable at once under the new name.
    with open(j("empty", "deep", "f"), "wb") as f:
        f.write(b"deep")
    os.rename(j("empty"), j("moved"))
    assert open(j("moved", "deep", "f"), "rb").read() == b"deep"


def test_append_trunc_holes_and_truncation(d):
    p = os.path.join(d, "f")
    with open(p, "wb") as f:
        f.write(b"abc")
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"def")
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, b"ghi")  # O_APPEND: still at the end
    os.close(fd)
    assert open(p, "rb").read() == b"abcdefghi"
    fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    assert os.stat(p).st_size == 0
    # A hole, across chunks (1 MiB): it reads as zeros.
    with open(p, "r+b") as f:
        f.seek(3 << 20)
        f.write(b"end")
    data = open(p, "rb").read()
    assert len(data) == (3 << 20) + 3 and data[:3 << 20] == bytes(3 << 20) and data[-3:] == b"end"
    # Shrink into a chunk, then grow: the cut-off bytes read as zeros.
    with open(p, "r+b") as f:
        f.seek(1000)
        f.write(b"X" * 5000)
    os.truncate(p, 1500)
    assert os.stat(p).st_size == 1500
    os.truncate(p, 2 << 20)
    data = open(p, "rb").read()
    assert data[1000:1500] == b"X" * 500 and data[1500:] == bytes((2 << 20) - 1500)


def test_errors_name_the_problem(d):
    j = lambda *p: os.path.join(d, *p)  # noqa: E731
    expect_errno(errno.ENOENT, os.stat, j("missing"))
    open(j("f"), "wb").close()
    expect_errno(errno.EEXIST, os.open, j("f"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    expect_errno(errno.EEXIST, os.mkdir, j("f"))
    os.makedirs(j("dir", "child"))
    expect_errno(errno.ENOTEMPTY, os.rmdir, j("dir"))
    expect_errno(errno.EISDIR, os.open, j("dir"), os.O_WRONLY)
    expect_errno(errno.ENOTDIR, os.stat, j("f", "below"))
    expect_errno(errno.ENOTDIR, os.rmdir, j("f"))
    expect_errno(errno.EISDIR, os.unlink, j("dir"))
    expect_errno(errno.ENAMETOOLONG, os.stat, j("n" * 300))


def test_large_directories_list_completely(d):
    names = {f"entry-{k:05d}" for k in range(1500)}
    for n in names:
        open(os.path.join(d, n), "wb").close()
    assert set(os.listdir(d)) == names
    with os.scandir(d) as it:
        assert sum(1 for e in it if e.is_file()) == 1500


def test_statfs_reports_the_clusters_capacity(mnt):
    st = os.statvfs(mnt)
    assert st.f_blocks > 0 and st.f_bsize > 0 and st.f_namemax == 255


# Real programs


def test_tar_extracts_and_diff_finds_no_difference(d, tmp_path):
    src = REPO / "Sources"
    archive = tmp_path / "src.tar"
    subprocess.run(["tar", "-C", str(src), "-cf", str(archive), "."], check=True)
    subprocess.run(["tar", "-C", d, "-xf", str(archive)], check=True)
    out = subprocess.run(["diff", "-r", str(src), d], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:]


def test_git_commits_and_fsck_passes(d):
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    run = lambda *a: subprocess.run(["git", *a], cwd=d, env=env, check=True, capture_output=True, text=True)  # noqa: E731
    run("init", "-q", ".")
    shutil.copytree(REPO / "python" / "cistern", os.path.join(d, "pkg"))
    run("add", ".")
    run("commit", "-qm", "first")
    with open(os.path.join(d, "pkg", "extra.txt"), "w") as f:
        f.write("more\n")
    run("add", ".")
    run("commit", "-qm", "second")
    run("gc", "-q")
    run("fsck", "--full", "--strict")
    assert run("log", "--oneline").stdout.count("\n") == 2


def test_sqlite_under_load_passes_integrity_check(d, tmp_path):
    def workload(path: str) -> list:
        db = sqlite3.connect(path)
        db.execute("create table t (k integer primary key, v blob)")
        for batch in range(20):
            db.executemany("insert into t (v) values (?)", [(bytes([batch]) * (300 + i),) for i in range(200)])
            db.execute("delete from t where k % 7 = ?", (batch % 7,))
            db.commit()
        db.execute("vacuum")
        db.close()
        db = sqlite3.connect(path)
        assert db.execute("pragma integrity_check").fetchone() == ("ok",)
        rows = db.execute("select k, v from t order by k").fetchall()
        db.close()
        return rows

    on_mount = workload(os.path.join(d, "db.sqlite"))
    assert on_mount == workload(str(tmp_path / "db.sqlite")) and len(on_mount) > 0


def test_python_file_operations(d, tmp_path):
    src = REPO / "docs"
    shutil.copytree(src, os.path.join(d, "docs"))
    for root, _, files in os.walk(src):
        for name in files:
            a = Path(root) / name
            b = Path(d) / "docs" / a.relative_to(src)
            assert a.read_bytes() == b.read_bytes()
    shutil.copy2(src / "architecture.md", tmp_path / "back.md")
    assert (tmp_path / "back.md").read_bytes() == (src / "architecture.md").read_bytes()
    shutil.rmtree(os.path.join(d, "docs"))
    assert os.listdir(d) == []


def test_concurrent_writers_to_different_files(d):
    def writer(k: int) -> None:
        with open(os.path.join(d, f"w{k}"), "wb") as f:
            for i in range(64):
                f.write(bytes([k]) * 16384 + i.to_bytes(4, "little"))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(8):
        expected = b"".join(bytes([k]) * 16384 + i.to_bytes(4, "little") for i in range(64))
        assert open(os.path.join(d, f"w{k}"), "rb").read() == expected


def test_rename_and_unlink_while_open(d):
    p, q = os.path.join(d, "a"), os.path.join(d, "b")
    with open(p, "wb") as f:
        f.write(b"0123456789")
    f = open(p, "r+b")
    os.rename(p, q)
    f.seek(10)
    f.write(b"more")
    f.flush()
    os.fsync(f.fileno())
    assert open(q, "rb").read() == b"0123456789more"
    r = open(q, "rb")
    os.unlink(q)
    assert r.read() == b"0123456789more", "an open file stays readable after its name is gone"
    r.close()
    f.close()
    assert not os.path.exists(q)


def fio(directory: str, name: str, rw: str, bs: str, size: str, *extra: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["fio", f"--name={name}", f"--directory={directory}", f"--rw={rw}", f"--bs={bs}", f"--size={size}",
                           "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--ioengine=psync", "--verify_state_save=0", *extra],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(shutil.which("fio") is None, reason="fio is not installed (apt-get install fio)")
def test_fio_sequential_and_random_with_verification(d):
    for rw, bs, size in (("write", "1M", "64M"), ("randwrite", "64k", "16M"), ("randrw", "16k", "8M")):
        out = fio(d, rw, rw, bs, size)
        assert out.returncode == 0 and "verify:" not in out.stderr, out.stdout[-3000:] + out.stderr[-3000:]


def test_read_only_mount_refuses_changes(fuse_cluster, mnt):
    with open(os.path.join(mnt, "ro-visible"), "wb") as f:
        f.write(b"seen")
    point = os.path.join(os.path.dirname(mnt), "ro")
    mount(fuse_cluster.data_dir, point, "--read-only")
    try:
        assert open(os.path.join(point, "ro-visible"), "rb").read() == b"seen"
        expect_errno(errno.EROFS, open, os.path.join(point, "new"), "wb")
        expect_errno(errno.EROFS, os.unlink, os.path.join(point, "ro-visible"))
    finally:
        assert umount(point).returncode == 0


def test_a_second_mount_sees_the_first_ones_files(fuse_cluster, mnt):
    point = os.path.join(os.path.dirname(mnt), "second")
    mount(fuse_cluster.data_dir, point, "--cache-seconds", "0")
    try:
        with open(os.path.join(mnt, "shared"), "wb") as f:
            f.write(b"from the first mount")
        assert open(os.path.join(point, "shared"), "rb").read() == b"from the first mount"
    finally:
        assert umount(point).returncode == 0


def test_a_tenant_mount_sees_only_its_own_tree(fuse_cluster, mnt, tmp_path):
    import json
    import urllib.request
    import uuid

    def call(method: str, path: str, body: dict) -> dict:
        req = urllib.request.Request(fuse_cluster.master_url() + path, data=json.dumps(body).encode(), method=method)
        req.add_header("Authorization", "Bearer " + fuse_cluster.admin_token())
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"{}")

    tenant = "fuse" + uuid.uuid4().hex[:8]
    call("POST", "/v1/tenants", {"name": tenant, "quotaBytes": 1 << 30, "quotaPages": 1 << 16})
    token_file = tmp_path / "token"
    token_file.write_text(call("POST", f"/v1/tenants/{tenant}/tokens", {})["token"])
    point = os.path.join(os.path.dirname(mnt), "tenant")
    # Without --root the tenant is told to name its own tree.
    os.makedirs(point, exist_ok=True)
    out = subprocess.run([cistern_bin(), "mount", point, "--data-dir", fuse_cluster.data_dir, "--token-file", str(token_file),
                          "--log", point + ".log"], capture_output=True, text=True, timeout=150)
    assert out.returncode != 0 and f"--root /tenants/TENANT" in out.stderr, out.stderr
    mount(fuse_cluster.data_dir, point, "--token-file", str(token_file), "--root", f"/tenants/{tenant}")
    try:
        with open(os.path.join(point, "mine"), "wb") as f:
            f.write(b"tenant data")
        os.mkdir(os.path.join(point, "dir"))
        # The admin's mount sees it under the tenant's tree; the tenant sees nothing else.
        assert open(os.path.join(mnt, "tenants", tenant, "mine"), "rb").read() == b"tenant data"
        assert sorted(os.listdir(point)) == ["dir", "mine"]
        assert os.path.realpath(os.path.join(point, "..")) != os.path.join(mnt, "tenants")
    finally:
        assert umount(point).returncode == 0


# Failures


@pytest.mark.skipif(shutil.which("fio") is None, reason="fio is not installed (apt-get install fio)")
def test_kill_9_of_a_storage_node_during_fio_loses_nothing(fuse_cluster, d):
    job = subprocess.Popen(["fio", "--name=kill", f"--directory={d}", "--rw=write", "--bs=256k", "--size=96M",
                            "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--ioengine=psync", "--verify_state_save=0"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    pid = int(Path(fuse_cluster.data_dir, "pids", "storage2.pid").read_text().strip())
    os.kill(pid, signal.SIGKILL)
    out, err = job.communicate(timeout=600)
    assert job.returncode == 0 and "verify:" not in err, out[-3000:] + err[-3000:]


def test_a_vanished_cluster_gives_eio_within_the_timeout_and_umount_works(fuse_cluster, mnt):
    point = os.path.join(os.path.dirname(mnt), "doomed")
    mount(fuse_cluster.data_dir, point, "--timeout-seconds", "5", "--cache-seconds", "0")
    with open(os.path.join(point, "before"), "wb") as f:
        f.write(b"x")
    fuse_cluster.down()
    started = time.monotonic()
    expect_errno(errno.EIO, os.stat, os.path.join(point, "after-the-cluster-went"))
    assert time.monotonic() - started < 30
    assert umount(point, lazy=True).returncode == 0
    deadline = time.monotonic() + 30
    while is_mounted(point) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not is_mounted(point)
