#!/usr/bin/env python3
"""Prints Prometheus file-based service discovery targets for the servers of a
cluster whose configs are in DATA_DIR/config (as `cistern up` writes them), each with
the label `role`. Usage: cluster_targets.py DATA_DIR > targets.json

Each server scrapes at `metrics.listen` of its config; the master serves /metrics on
its HTTP port (`node.listen`). Standard library only."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def server(path: Path) -> tuple[str, str] | None:
    """(role, host:port to scrape) of one server config, or None without metrics."""
    role = listen = metrics = None
    section = None
    for line in path.read_text().splitlines():
        top = re.match(r"^([a-z_]+):\s*$", line)
        if top:
            section = top.group(1)
            continue
        field = re.match(r"^\s+([a-z_]+):\s*(\S+)\s*$", line)
        if not field:
            continue
        key, value = field.groups()
        if section == "node" and key == "role":
            role = value
        elif section == "node" and key == "listen":
            listen = value
        elif section == "metrics" and key == "listen":
            metrics = value
    if role is None:
        return None
    if role == "master":
        return (role, listen) if listen else None
    return (role, metrics) if metrics else None


def targets(data_dir: str) -> list[dict]:
    groups: dict[str, list[str]] = {}
    for path in sorted(Path(data_dir, "config").glob("*.yaml")):
        found = server(path)
        if found:
            groups.setdefault(found[0], []).append(found[1])
    return [{"targets": addresses, "labels": {"role": role}} for role, addresses in sorted(groups.items())]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: cluster_targets.py DATA_DIR > targets.json")
    if not Path(sys.argv[1], "config").is_dir():
        sys.exit(f"{sys.argv[1]}/config is not a folder: give the data directory `cistern up --data-dir` used")
    json.dump(targets(sys.argv[1]), sys.stdout, indent=2)
    print()
