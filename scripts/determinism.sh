#!/usr/bin/env bash
# Runs scenarios over a sample of seeds twice, in separate processes, and fails
# unless each (scenario, seed) gives the same digest both times and different seeds
# give different digests.
# Usage: scripts/determinism.sh CISTERN_BINARY [A...B] [SCENARIO_FILE_OR_FOLDER...]
# (default: seeds 1...20, every scenario in Scenarios/)
set -euo pipefail
bin=${1:?usage: scripts/determinism.sh CISTERN_BINARY [A...B] [PATH...]}
seeds=${2:-1...20}
shift $(( $# >= 2 ? 2 : $# ))
paths=("$@")
(( ${#paths[@]} )) || paths=(Scenarios/)
first=$(mktemp) second=$(mktemp)
trap 'rm -f "$first" "$second"' EXIT
# `cistern sim` exits non-zero when a run fails; carry on so that the check below
# names every failing (scenario, seed) with its replay command instead of stopping
# here silently.
for p in "${paths[@]}"; do "$bin" sim "$p" --seeds "$seeds" --json >> "$first" || true; done
for p in "${paths[@]}"; do "$bin" sim "$p" --seeds "$seeds" --json >> "$second" || true; done
python3 - "$first" "$second" <<'PY'
import json, sys
def load(path):
    return {(r["scenario"], r["seed"]): r for r in map(json.loads, open(path))}
a, b = load(sys.argv[1]), load(sys.argv[2])
bad = [k for k in a if a[k]["digest"] != b.get(k, {}).get("digest")]
if bad or a.keys() != b.keys():
    for k in bad[:10]:
        again = b.get(k, {})
        print(f"nondeterministic: {k[0]} seed {k[1]}: {a[k]['digest']} then {again.get('digest')}; "
              f"violations {a[k]['violations'][:2]} then {again.get('violations', [])[:2]}; replay: {a[k]['replay']}")
    sys.exit(1)
by_scenario = {}
for (scenario, seed), r in a.items():
    by_scenario.setdefault(scenario, set()).add(r["digest"])
seeds = {s for (_, s) in a}
for scenario, digests in sorted(by_scenario.items()):
    if len(digests) != len(seeds):
        print(f"{scenario}: {len(seeds)} seeds gave only {len(digests)} distinct digests")
        sys.exit(1)
failed = [r for r in a.values() if not r["passed"]]
failed += [r for k, r in b.items() if not r["passed"] and a.get(k, {}).get("passed", False)]
for r in failed:
    print(f"FAIL {r['scenario']} seed {r['seed']}: {r['violations'][:3]}; replay: {r['replay']}")
print(f"determinism: {len(a)} runs repeated in separate processes, identical digests; "
      f"{len(seeds)} seeds gave {len(seeds)} distinct digests per scenario")
sys.exit(1 if failed else 0)
PY
