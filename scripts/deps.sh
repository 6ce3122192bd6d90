#!/usr/bin/env bash
# Installs what building Cistern needs, if it is missing: the system libraries the
# package links (SQLite, liburing, libibverbs, libpq) and pkg-config, the
# PostgreSQL server the PostgresKV tests start (scripts/postgres-test-server.sh; the
# package's own cluster is not used), and Prometheus with promtool, which the
# monitoring tests run (python/tests/test_monitoring.py; its service is not started),
# nftables and dnsmasq for the network-fault harness (scripts/netfaults), and libfuse3
# (the mount links it) with fuse3, fio, sqlite3 and git, which the mount tests run
# (python/tests/test_fuse_mount.py), and openssl and (best effort: it comes from
# the Kubernetes apt repository on some systems) kubectl, which the Kubernetes tests
# run offline (python/tests/test_kubernetes_*.py skip the kustomize checks without
# it, saying so). Idempotent and quick when everything is present.
# Swift itself must already be installed (swift.org).
set -euo pipefail

packages=(libsqlite3-dev liburing-dev libibverbs-dev libpq-dev libfuse3-dev fuse3 fio sqlite3 git postgresql pkg-config prometheus nftables dnsmasq-base iproute2 openssl)
# `scripts/deps.sh --bench` also installs what the benchmarks compare with.
if [[ "${1:-}" == "--bench" ]]; then packages+=(redis-server); fi

if ! command -v swift >/dev/null 2>&1; then
    echo "error: swift is not on PATH. Install Swift 6.1 or newer (https://www.swift.org/install/) and run this again." >&2
    exit 1
fi

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
    for p in "${packages[@]}"; do
        status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        [[ "$status" == "install ok installed" ]] || missing+=("$p")
    done
else
    # Not Debian-like: check for the headers and tools directly.
    [[ -f /usr/include/sqlite3.h ]] || missing+=(libsqlite3-dev)
    [[ -f /usr/include/liburing.h ]] || missing+=(liburing-dev)
    [[ -f /usr/include/infiniband/verbs.h ]] || missing+=(libibverbs-dev)
    [[ -f /usr/include/postgresql/libpq-fe.h || -f /usr/include/libpq-fe.h ]] || missing+=(libpq-dev)
    [[ -f /usr/include/fuse3/fuse_lowlevel.h ]] || missing+=(libfuse3-dev)
    command -v fusermount3 >/dev/null 2>&1 || missing+=(fuse3)
    command -v fio >/dev/null 2>&1 || missing+=(fio)
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1 || missing+=(postgresql)
    command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
    command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
    command -v nft >/dev/null 2>&1 || missing+=(nftables)
    command -v dnsmasq >/dev/null 2>&1 || missing+=(dnsmasq-base)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    if [[ "${1:-}" == "--bench" ]]; then command -v redis-server >/dev/null 2>&1 || missing+=(redis-server); fi
fi

# `--bench`: Mooncake Store (CPU wheel, TCP transport) into .venv-bench, for
# `cistern bench kv` to measure beside Cistern and redis. Best effort: without PyPI
# the benchmark leaves Mooncake out and says so.
bench_venv() {
    [[ "${1:-}" == "--bench" ]] || return 0
    local root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    if [[ -x "$root/.venv-bench/bin/python" ]] && "$root/.venv-bench/bin/python" -c "import mooncake.store, numpy" 2>/dev/null; then return 0; fi
    echo "installing Mooncake Store for the benchmark into .venv-bench" >&2
    if ! { python3 -m venv "$root/.venv-bench" && "$root/.venv-bench/bin/pip" install -q "mooncake-transfer-engine-non-cuda==0.3.13.post1" numpy; } >&2; then
        echo "warning: could not install mooncake-transfer-engine-non-cuda; cistern bench kv will run without Mooncake Store" >&2
    fi
}

# kubectl: best effort, never a reason to fail.
optional_kubectl() {
    command -v kubectl >/dev/null 2>&1 && return 0
    command -v apt-get >/dev/null 2>&1 || return 0
    local sudo=""
    if [[ $(id -u) -ne 0 ]]; then command -v sudo >/dev/null 2>&1 && sudo="sudo" || return 0; fi
    { $sudo apt-get install -y -qq kubectl >&2 2>/dev/null; } || echo "note: kubectl is not installable here; the kustomize checks of the Kubernetes tests will be skipped" >&2
}

if (( ${#missing[@]} == 0 )); then
    optional_kubectl
    bench_venv "${1:-}"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: missing system packages: ${missing[*]}; install them with your package manager (Debian/Ubuntu names given) and run this again." >&2
    exit 1
fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
        echo "error: missing system packages (${missing[*]}) and not root; run: apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi
echo "installing system packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >&2
$sudo apt-get install -y -qq "${missing[@]}" >&2
optional_kubectl
bench_venv "${1:-}"
