#!/usr/bin/env bash
# Makes .venv-py: the Python package `cistern` (python/, editable) with what its
# tests need: pytest, numpy, CPU torch, schemathesis, kubernetes-validate, jsonschema,
# and the real SGLang and LMCache code the connectors are tested against (installed
# without their GPU dependencies; see docs/connectors.md). Idempotent: quick when
# everything is there.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-py"
stamp="$venv/.cistern-env-3"
if [[ -f "$stamp" ]]; then exit 0; fi
echo "installing the Python test environment into .venv-py (torch CPU, numpy, sglang, lmcache; about a minute)" >&2
python3 -m venv "$venv"
pip=("$venv/bin/pip" install -q --disable-pip-version-check)
"${pip[@]}" "torch==2.13.0+cpu" "numpy<=2.2.6" pytest pyyaml
# The master HTTP service is fuzzed against its OpenAPI document.
"${pip[@]}" "schemathesis==4.32.5"
# The Kubernetes manifests (deploy/kubernetes) are validated offline: the rendered objects
# against Kubernetes' own schemas, the samples against the CRD's schema.
"${pip[@]}" "kubernetes-validate==1.37.0" jsonschema
# The real SGLang HiCache interface and LMCache storage backends, without their CUDA
# dependencies (sglang's __init__ is bypassed by the tests, see python/tests/sglang_env.py).
"${pip[@]}" --no-deps "sglang==0.5.23" "lmcache==0.5.6"
# LMCache's pure-Python requirements for its storage backends on CPU.
"${pip[@]}" msgspec psutil prometheus_client sortedcontainers py-cpuinfo requests cachetools aiohttp aiofile pyzmq transformers cryptography numba
CISTERN_SKIP_LIBRARY=1 "${pip[@]}" --no-build-isolation -e "$root/python"
touch "$stamp"
