#!/usr/bin/env python3
"""`make netfaults`: real network faults against real Cistern processes.

Each server of a cluster (cluster manager, metadata server, three storage nodes) and
a client run in network namespaces of their own, on two networks (bridges 10.77.0.0/24
"a" and 10.78.0.0/24 "b"), and find each other by DNS names served by a real DNS
server (dnsmasq) in the root namespace: NAME.cistern.test resolves to the node's
addresses on both networks. A KV workload (scripts/netfaults/workload.py, durable
namespace) runs from the client namespace while the harness:

1. moves the cluster manager to a new IP (its address changed in its namespace and
   its DNS record updated; its other network taken down meanwhile, so only the new
   address works): clients and servers must keep working without a restart;
2. takes down one network of a storage node: callers and its own heartbeats fail
   over to the other network; the node is never declared failed;
3. partitions a storage node (nftables drops everything in and out): it is declared
   failed, its chains reconfigure, I/O goes on; after the heal it resyncs and every
   chain serves again;
4. adds packet loss (nftables, 5%) and, where the kernel has it, latency (tc netem),
   or else a rate limit (tc tbf) where netem is missing;
5. kills a storage node (SIGKILL) and measures the longest stall the client sees,
   against the failover goal (3 s), then restarts it and waits for resync.

At the end every acknowledged page must read back byte for byte, and every chain
serve. The harness removes its namespaces, links, DNS server and processes even when
a step fails (and removes leftovers of an earlier run first). Needs root, iproute2,
nftables and dnsmasq (scripts/deps.sh installs them).

Usage: harness.py CISTERN_BINARY [--quick] [--keep-logs DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PREFIX = "cx"
DOMAIN = "cistern.test"
NETS = {"a": "10.77.0", "b": "10.78.0"}
STALL_GOAL_SECONDS = 3.0


class Failure(Exception):
    pass


def run(*args: str, check: bool = True, ns: str | None = None, capture: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    out = subprocess.run(cmd, capture_output=capture, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise Failure(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    return out


class Host:
    """A namespace with an interface on each network it is on."""

    def __init__(self, name: str, octet: int, nets: list[str]):
        self.name = name
        self.ns = f"{PREFIX}-{name}"
        self.octet = octet
        self.nets = nets
        self.addresses = {n: f"{NETS[n]}.{octet}" for n in nets}

    def iface(self, net: str) -> str:
        return f"eth{net}"


class Lab:
    def __init__(self, binary: str, work: Path, quick: bool):
        self.binary = binary
        self.work = work
        self.quick = quick
        self.procs: dict[str, subprocess.Popen] = {}
        self.dns: subprocess.Popen | None = None
        self.hosts_file = work / "hosts"
        self.records: dict[str, list[str]] = {}
        self.report: list[str] = []
        self.hosts = {
            "mgmtd1": Host("mgmtd1", 10, ["a", "b"]),
            "meta1": Host("meta1", 11, ["a", "b"]),
            "storage1": Host("storage1", 21, ["a", "b"]),
            "storage2": Host("storage2", 22, ["a", "b"]),
            "storage3": Host("storage3", 23, ["a", "b"]),
            "client": Host("client", 50, ["a", "b"]),
        }

    # -- network ----------------------------------------------------------------

    @staticmethod
    def cleanup_leftovers() -> None:
        for line in run("ip", "netns", "list", check=False).stdout.splitlines():
            name = line.split()[0] if line.strip() else ""
            if name.startswith(PREFIX + "-"):
                pids = run("ip", "netns", "pids", name, check=False).stdout.split()
                for pid in pids:
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except (ProcessLookupError, ValueError):
                        pass
                run("ip", "netns", "delete", name, check=False)
        for line in run("ip", "-o", "link", "show", check=False).stdout.splitlines():
            parts = line.split(":")
            if len(parts) > 1:
                link = parts[1].strip().split("@")[0]
                if link.startswith(PREFIX + "-"):
                    run("ip", "link", "delete", link, check=False)
        for d in Path("/etc/netns").glob(PREFIX + "-*") if Path("/etc/netns").exists() else []:
            shutil.rmtree(d, ignore_errors=True)
        run("pkill", "-f", f"dnsmasq.*{PREFIX}-dns", check=False)

    def build_network(self) -> None:
        for net, prefix in NETS.items():
            bridge = f"{PREFIX}-br{net}"
            run("ip", "link", "add", bridge, "type", "bridge")
            run("ip", "addr", "add", f"{prefix}.1/24", "dev", bridge)
            run("ip", "link", "set", bridge, "up")
        for h in self.hosts.values():
            run("ip", "netns", "add", h.ns)
            run("ip", "link", "set", "lo", "up", ns=h.ns)
            for net in h.nets:
                outside = f"{PREFIX}-{h.name}-{net}"[:15]
                run("ip", "link", "add", outside, "type", "veth", "peer", "name", h.iface(net), "netns", h.ns)
                run("ip", "link", "set", outside, "master", f"{PREFIX}-br{net}")
                run("ip", "link", "set", outside, "up")
                run("ip", "addr", "add", f"{h.addresses[net]}/24", "dev", h.iface(net), ns=h.ns)
                run("ip", "link", "set", h.iface(net), "up", ns=h.ns)
            etc = Path("/etc/netns") / h.ns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "resolv.conf").write_text(f"nameserver {NETS['a']}.1\nnameserver {NETS['b']}.1\noptions timeout:1 attempts:2\n")
        for h in self.hosts.values():
            self.records[h.name] = [h.addresses[n] for n in h.nets]
        self.write_dns()
        self.dns = subprocess.Popen(
            ["dnsmasq", "--keep-in-foreground", "--user=root", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--no-poll",
             f"--addn-hosts={self.hosts_file}", f"--listen-address={NETS['a']}.1,{NETS['b']}.1", "--bind-interfaces",
             "--local-ttl=0", "--neg-ttl=0", f"--pid-file={self.work / 'dnsmasq.pid'}", "--log-facility=-",
             f"--local=/{DOMAIN}/"],
            stdout=open(self.work / "dnsmasq.log", "w"), stderr=subprocess.STDOUT)
        time.sleep(0.5)
        if self.dns.poll() is not None:
            raise Failure(f"dnsmasq did not start: {(self.work / 'dnsmasq.log').read_text()}")
        # Every namespace resolves every name.
        for h in self.hosts.values():
            got = run("getent", "ahostsv4", f"mgmtd1.{DOMAIN}", ns=h.ns, check=False).stdout
            if f"{NETS['a']}.10" not in got:
                raise Failure(f"{h.ns} cannot resolve mgmtd1.{DOMAIN} through dnsmasq: {got!r}")

    def write_dns(self) -> None:
        lines = [f"{ip} {name}.{DOMAIN}" for name, ips in sorted(self.records.items()) for ip in ips]
        self.hosts_file.write_text("\n".join(lines) + "\n")
        if self.dns is not None:
            self.dns.send_signal(signal.SIGHUP)
            time.sleep(0.3)

    # -- cluster ----------------------------------------------------------------

    def configs(self) -> None:
        cluster = (f"cluster:\n  mgmtd:\n  - id: 1\n    address: mgmtd1.{DOMAIN}:7000\n"
                   f"  meta:\n  - id: 10\n    address: meta1.{DOMAIN}:7001\n")
        (self.work / "cluster.yaml").write_text(f"mgmtd:\n- id: 1\n  address: mgmtd1.{DOMAIN}:7000\nmeta:\n- id: 10\n  address: meta1.{DOMAIN}:7001\n")
        conf = self.work / "config"
        conf.mkdir(exist_ok=True)
        for d in ("logs", "pids", "data", "kv"):
            (self.work / d).mkdir(exist_ok=True)
        (conf / "mgmtd1.yaml").write_text(
            f"node:\n  id: 1\n  name: mgmtd1\n  role: mgmtd\n  listen: 0.0.0.0:7000\n  advertise: [mgmtd1.{DOMAIN}:7000]\n{cluster}"
            f"kv:\n  kind: sqlite\n  path: {self.work}/kv/mgmtd.sqlite\n")
        (conf / "meta1.yaml").write_text(
            f"node:\n  id: 10\n  name: meta1\n  role: meta\n  listen: 0.0.0.0:7001\n  advertise: [meta1.{DOMAIN}:7001]\n{cluster}"
            f"kv:\n  kind: sqlite\n  path: {self.work}/kv/meta/meta.sqlite\n")
        for i in (1, 2, 3):
            nid = 100 + i
            (conf / f"storage{i}.yaml").write_text(
                f"node:\n  id: {nid}\n  name: storage{i}\n  role: storage\n  listen: 0.0.0.0:7002\n"
                f"  advertise: [storage{i}.{DOMAIN}:7002]\n{cluster}"
                f"storage:\n  data_dir: {self.work}/data/storage{i}\n  targets: [{nid * 100 + 1}, {nid * 100 + 2}]\n")

    def start(self, name: str) -> None:
        role = "storage" if name.startswith("storage") else name.rstrip("0123456789")
        log = open(self.work / "logs" / f"{name}.log", "a")
        self.procs[name] = subprocess.Popen(
            ["ip", "netns", "exec", self.hosts[name].ns, self.binary, "server", "--role", role,
             "--config", str(self.work / "config" / f"{name}.yaml")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self, name: str) -> None:
        p = self.procs.pop(name, None)
        if p and p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)

    def admin(self, what: str, check: bool = True) -> str:
        return run(self.binary, "admin", what, "--data-dir", str(self.work), ns=self.hosts["client"].ns, check=check, timeout=60).stdout

    def chains(self) -> str:
        return self.admin("chains", check=False)

    def all_serving(self) -> bool:
        states = re.findall(r":(SERVING|SYNCING|WAITING|OFFLINE|LASTSRV)\b", self.chains())
        return bool(states) and all(s == "SERVING" for s in states)

    def node_status(self) -> str:
        return self.admin("nodes", check=False)

    def wait(self, what: str, condition, seconds: float) -> float:
        start = time.monotonic()
        while not condition():
            if time.monotonic() - start > seconds:
                raise Failure(f"{what}: not within {seconds:.0f} s\nchains:\n{self.chains()}\nnodes:\n{self.node_status()}")
            time.sleep(0.5)
        return time.monotonic() - start

    def up(self) -> None:
        self.configs()
        for name in ("mgmtd1", "meta1", "storage1", "storage2", "storage3"):
            self.start(name)
        def registered() -> bool:
            text = self.node_status()
            return text.count("storage") >= 3 and "failed" not in text.lower()
        self.wait("three storage nodes register", registered, 60)
        self.admin("create-chains")
        self.wait("every chain serving", self.all_serving, 60)

    # -- workload ---------------------------------------------------------------

    def start_workload(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO / "python") + os.pathsep + env.get("PYTHONPATH", "")
        self.log = self.work / "workload.log"
        self.stop = self.work / "workload.stop"
        self.summary = self.work / "workload.json"
        python = os.environ.get("NETFAULTS_PYTHON", str(REPO / ".venv-py" / "bin" / "python"))
        self.workload = subprocess.Popen(
            ["ip", "netns", "exec", self.hosts["client"].ns, python, str(REPO / "scripts" / "netfaults" / "workload.py"),
             str(self.work / "cluster.yaml"), str(self.log), str(self.stop), str(self.summary)],
            env=env, stdout=open(self.work / "workload.out", "w"), stderr=subprocess.STDOUT)
        self.wait("the workload's first acknowledged put", lambda: self.ops_since(0)[0] > 0, 60)

    def latency_p99(self, since: float) -> float:
        """The 99th percentile of the client's operation latencies (successful or not) since `since`."""
        times = sorted(float(p[3]) for p in (l.split() for l in self.log.read_text().splitlines()) if len(p) >= 4 and float(p[0]) >= since)
        return times[min(len(times) - 1, int(len(times) * 0.99))] if times else 0.0

    def ops_since(self, since: float, until: float | None = None) -> tuple[int, int, float]:
        """(successes, failures, longest gap in seconds between successes) in the window."""
        ok = err = 0
        last = since
        gap = 0.0
        if not self.log.exists():
            return 0, 0, 0.0
        for line in self.log.read_text().splitlines():
            parts = line.split()
            if len(parts) < 4:
                continue
            t = float(parts[0])
            if t < since or (until is not None and t > until):
                continue
            if parts[1] == "ok":
                ok += 1
                gap = max(gap, t - last)
                last = t
            else:
                err += 1
        end = until if until is not None else time.time()
        return ok, err, max(gap, end - last)

    def phase(self, title: str, seconds: float, body, check) -> None:
        print(f"--- {title}", flush=True)
        start = time.time()
        body()
        time.sleep(seconds)
        ok, err, gap = self.ops_since(start)
        check(ok, err, gap)
        self.report.append(f"{title}: {ok} ops ok, {err} failed, longest stall {gap:.2f} s")
        print(f"    {self.report[-1]}", flush=True)

    # -- faults -----------------------------------------------------------------

    def ip_drift(self) -> None:
        m = self.hosts["mgmtd1"]
        new = f"{NETS['a']}.40"

        def move() -> None:
            # Only the new address will work: network b of the manager goes down.
            run("ip", "link", "set", m.iface("b"), "down", ns=m.ns)
            # Old address first: deleting an interface's primary address also deletes
            # its secondaries (the new one, if added first).
            run("ip", "addr", "del", f"{m.addresses['a']}/24", "dev", m.iface("a"), ns=m.ns)
            run("ip", "addr", "add", f"{new}/24", "dev", m.iface("a"), ns=m.ns)
            self.records["mgmtd1"] = [new]
            self.write_dns()
            m.addresses["a"] = new

        def check(ok: int, err: int, gap: float) -> None:
            if ok == 0:
                raise Failure("the workload made no progress after the manager's IP changed")
            text = self.node_status()
            if "failed" in text.lower():
                raise Failure(f"a node was declared failed after the manager's IP changed (its heartbeats did not follow the DNS name):\n{text}")
            recent, _, _ = self.ops_since(time.time() - 5)
            if recent == 0:
                raise Failure("no operation succeeded in the last 5 s after the manager's IP changed")

        self.phase("manager IP drift (DNS record updated, old address gone)", 12 if self.quick else 20, move, check)
        run("ip", "link", "set", m.iface("b"), "up", ns=m.ns)
        self.records["mgmtd1"] = [m.addresses["a"], m.addresses["b"]]
        self.write_dns()

    def lose_one_network(self) -> None:
        s = self.hosts["storage1"]

        def down() -> None:
            run("ip", "link", "set", s.iface("a"), "down", ns=s.ns)

        def check(ok: int, err: int, gap: float) -> None:
            if ok == 0:
                raise Failure("no progress with storage1's network a down")
            text = self.node_status()
            if "failed" in text.lower():
                raise Failure(f"storage1 was declared failed although its network b works:\n{text}")
            if not self.all_serving():
                raise Failure(f"a chain stopped serving although storage1 is reachable on network b:\n{self.chains()}")

        self.phase("storage1 loses network a (multi-homed failover)", 10 if self.quick else 20, down, check)
        run("ip", "link", "set", s.iface("a"), "up", ns=s.ns)

    def partition(self) -> None:
        s = self.hosts["storage2"]

        def cut() -> None:
            run("nft", "add", "table", "inet", "cxpart", ns=s.ns)
            for hook in ("input", "output"):
                run("nft", "add", "chain", "inet", "cxpart", hook, f"{{ type filter hook {hook} priority 0; policy drop; }}", ns=s.ns)
                run("nft", "add", "rule", "inet", "cxpart", hook, ("iif" if hook == "input" else "oif"), "lo", "accept", ns=s.ns)

        def check(ok: int, err: int, gap: float) -> None:
            if ok == 0:
                raise Failure("no progress while storage2 is partitioned (I/O was not rerouted)")
            if "failed" not in self.node_status().lower():
                raise Failure(f"storage2 is cut off but not declared failed:\n{self.node_status()}")

        self.phase("storage2 partitioned (nftables drops all)", 12 if self.quick else 20, cut, check)
        run("nft", "delete", "table", "inet", "cxpart", ns=s.ns)
        took = self.wait("every chain serving after the partition heals (resync)", self.all_serving, 90)
        self.report.append(f"partition healed: every chain serving again {took:.1f} s later")
        print(f"    {self.report[-1]}", flush=True)

    def loss_and_latency(self) -> None:
        s = self.hosts["storage3"]
        netem = run("tc", "qdisc", "add", "dev", s.iface("a"), "root", "netem", "delay", "20ms", "loss", "2%", ns=s.ns, check=False)
        if netem.returncode == 0:
            shaping = "tc netem: 20 ms delay, 2% loss"
        else:
            run("tc", "qdisc", "add", "dev", s.iface("a"), "root", "tbf", "rate", "200mbit", "burst", "256kb", "latency", "50ms", ns=s.ns)
            shaping = "tc tbf: 200 Mbit/s (this kernel has no netem: no added latency)"
        run("nft", "add", "table", "inet", "cxloss", ns=s.ns)
        run("nft", "add", "chain", "inet", "cxloss", "output", "{ type filter hook output priority 0; }", ns=s.ns)
        run("nft", "add", "rule", "inet", "cxloss", "output", "oifname", s.iface("a"), "numgen", "random", "mod", "100", "<", "5", "drop", ns=s.ns)

        def check(ok: int, err: int, gap: float) -> None:
            if ok == 0:
                raise Failure(f"no progress with {shaping} and 5% loss on storage3")

        self.phase(f"storage3 with 5% loss (nftables) and {shaping}", 10 if self.quick else 20, lambda: None, check)
        run("nft", "delete", "table", "inet", "cxloss", ns=s.ns)
        run("tc", "qdisc", "del", "dev", s.iface("a"), "root", ns=s.ns, check=False)
        self.wait("every chain serving after loss and shaping end", self.all_serving, 90)

    def node_death(self) -> None:
        holder = {}

        def die() -> None:
            holder["t"] = time.time()
            self.kill("storage3")

        def check(ok: int, err: int, gap: float) -> None:
            if ok == 0:
                raise Failure("no progress after storage3 died")
            holder["gap"] = gap

        self.phase("storage3 killed (SIGKILL)", 10 if self.quick else 20, die, check)
        gap = holder["gap"]
        p99 = self.latency_p99(holder["t"])
        verdict = "within" if p99 <= STALL_GOAL_SECONDS else "OVER"
        self.report.append(f"after a storage node died: p99 operation latency {p99:.2f} s ({verdict} the {STALL_GOAL_SECONDS:.0f} s failover goal), "
                           f"longest stall {gap:.2f} s (failure detection is 3 s of missed heartbeats)")
        print(f"    {self.report[-1]}", flush=True)
        self.stall_seconds = gap
        self.start("storage3")
        took = self.wait("every chain serving after storage3 restarts (resync)", self.all_serving, 120)
        self.report.append(f"storage3 restarted: every chain serving again {took:.1f} s later")
        print(f"    {self.report[-1]}", flush=True)

    def finish_workload(self) -> dict:
        self.stop.write_text("stop")
        try:
            self.workload.wait(timeout=300)
        except subprocess.TimeoutExpired:
            self.workload.kill()
            raise Failure("the workload did not finish its read-back within 300 s")
        if not self.summary.exists():
            raise Failure(f"the workload wrote no summary: {(self.work / 'workload.out').read_text()[-3000:]}")
        return json.loads(self.summary.read_text())

    def teardown(self) -> None:
        if getattr(self, "workload", None) is not None and self.workload.poll() is None:
            self.workload.kill()
        for name in list(self.procs):
            self.kill(name)
        if self.dns is not None and self.dns.poll() is None:
            self.dns.kill()
        self.cleanup_leftovers()


def preflight() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "nft", "dnsmasq", "tc", "getent"):
        if shutil.which(tool) is None:
            return f"{tool} is missing: scripts/deps.sh installs iproute2, nftables and dnsmasq-base"
    probe = f"{PREFIX}-probe"
    out = run("ip", "netns", "add", probe, check=False)
    if out.returncode != 0:
        return f"cannot create a network namespace here: {out.stderr.strip()}"
    run("ip", "netns", "delete", probe, check=False)
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary")
    ap.add_argument("--quick", action="store_true", help="shorter phases (make test)")
    ap.add_argument("--keep-logs", help="copy the servers' logs and the workload log here")
    args = ap.parse_args()
    why = preflight()
    if why:
        print(f"netfaults: cannot run: {why}", file=sys.stderr)
        return 2
    Lab.cleanup_leftovers()
    work = Path(tempfile.mkdtemp(prefix="cistern-netfaults-"))
    lab = Lab(os.path.abspath(args.binary), work, args.quick)
    rc = 1
    try:
        lab.build_network()
        lab.up()
        lab.start_workload()
        lab.ip_drift()
        lab.lose_one_network()
        lab.partition()
        lab.loss_and_latency()
        lab.node_death()
        summary = lab.finish_workload()
        if summary["lost_count"] or summary["wrong"]:
            raise Failure(f"acknowledged pages lost or wrong after the faults: {summary}")
        if not lab.all_serving():
            raise Failure(f"not every chain serves at the end:\n{lab.chains()}")
        lab.report.append(f"{summary['acknowledged']} acknowledged pages all read back byte for byte; every chain serving")
        print("netfaults: passed\n  " + "\n  ".join(lab.report))
        rc = 0
    except (Failure, subprocess.TimeoutExpired) as e:
        print(f"netfaults: FAILED: {e}\n  logs: {work}/logs, {work}/workload.log", file=sys.stderr)
    finally:
        if args.keep_logs:
            shutil.copytree(work, args.keep_logs, dirs_exist_ok=True, ignore=shutil.ignore_patterns("data", "kv"))
        lab.teardown()
        if rc == 0:
            shutil.rmtree(work, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
