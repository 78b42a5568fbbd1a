#!/usr/bin/env bash
# Cold and warm compile of the lr study's population, with and without the inductor patches that were
# removed on 2026-12-07 (commit 323a198), side by side in one run, alternating.
#   scripts/compile_ab_patches.sh BEFORE_TREE AFTER_TREE [ROUNDS]   (e.g. a worktree of 2b45ef9 and this checkout)
# Each round and tree: a fresh inductor cache and TMPDIR (cold: a user's first run), then the same again (warm).
# The population: the lr study's 12 variants at cpu widths on 4,000 synthetic images (the same program in both trees).
set -euo pipefail
before=$1 after=$2 rounds=${3:-2}
py=${PYTHON:-python}
child='
import json, time
from fer_func import data as fd
from fer_func.population import Population
from fer_func.study import experiments
from fer_func.study.options import DEFAULT_EXPERIMENTS
variants = experiments.select(experiments.load(DEFAULT_EXPERIMENTS, "cpu"), study="lr")
pop = Population(variants, fd.load("synthetic").limit_train(4000))
perm = pop.epoch_order(0)
t = time.perf_counter(); pop.step(perm, pop._js[0]); step = time.perf_counter() - t
t = time.perf_counter(); pop.evaluate("val"); ev = time.perf_counter() - t
print(json.dumps({"k": len(variants), "step_compile_s": round(step, 1), "eval_compile_s": round(ev, 1)}))
'
echo "| round | tree | cache | K | step compile s | eval compile s | process s |"
echo "|---|---|---|---|---|---|---|"
for r in $(seq "$rounds"); do
  for tree in "$before" "$after"; do
    cache=$(mktemp -d)
    for kind in cold warm; do
      start=$(date +%s.%N)
      out=$(cd "$tree" && TORCHINDUCTOR_CACHE_DIR=$cache TMPDIR=$cache PYTHONPATH=$tree "$py" -c "$child" 2>/dev/null | tail -1)
      took=$(echo "$(date +%s.%N) - $start" | bc)
      echo "| $r | $(git -C "$tree" rev-parse --short HEAD) | $kind | $(echo "$out" | "$py" -c 'import json,sys; d=json.load(sys.stdin); print(d["k"], "|", d["step_compile_s"], "|", d["eval_compile_s"])') | ${took%.*} |"
    done
    rm -rf "$cache"
  done
done
