#!/usr/bin/env bash
# GPU benchmark matrix + a short real-data study for a fresh CUDA box (torch 2.11, no wandb).
# Everything is written to $WORK; at the end $OUT gets the log, the real-data summary.md and one
# tarball of all json/png (the device tool returns at most 8 files).
# Every part has its own timeout so the whole script ends well inside 8 minutes even if a compile
# is slow (parts sum to 405 s + kill grace); a part that times out leaves the rows it printed in its log. Run from the repo root:
#     OUT=/tmp/out bash scripts/gpu_check.sh
set -u
OUT=${OUT:-gpu_out}
WORK=${WORK:-/tmp/gpu_work}
mkdir -p "$OUT" "$WORK"
LOG="$OUT/gpu_check.log"
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
T0=$(date +%s)
part() {  # part NAME SECONDS ARGS...: one runner.py --bench call with a hard timeout
  local name=$1 secs=$2; shift 2
  echo "=== $name (timeout ${secs}s, at $(( $(date +%s) - T0 ))s)"
  timeout -k 10 "$secs" python runner.py --bench --device cuda --json "$WORK/$name.json" "$@" \
    || echo "=== $name ended with status $? (124 = timed out)"
  [ -s "$WORK/$name.json" ] && timeout 30 python -m fer_func.bench.report "$WORK/$name.json"  # plot even a cut-short part
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"

# 1. The headline: simple_cnn, population vs sequential at K = 1, 8, 32 (targets >= 6x at 8, >= 15x at 32).
part simple_cnn 150 --models simple_cnn --k 1,8,32 --steps 20 --impls sequential,population
# 2. regularized_cnn at K = 8 (target >= 4x) and the mlp.
part regularized_mlp 90 --models regularized_cnn,mlp --k 8 --steps 20 --impls sequential,population
# 3. Measured options: bf16 autocast, and channels-last for the torch.nn baseline (+ its compiled twin).
part simple_cnn_bf16 70 --models simple_cnn --k 8,32 --steps 20 --impls sequential,population --bf16
part simple_cnn_channels_last 50 --models simple_cnn --k 8 --steps 20 --impls sequential,sequential_compiled --channels-last
# 4. A short real-data study: the lr study at experiment 02's full width on a FER2013 subset that travels
#    with the tree (python scripts/make_gpu_subset.py here, then carry .gpu_data).
if [ -s .gpu_data/fer2013_subset.csv.gz ]; then
  echo "=== real-data lr study (at $(( $(date +%s) - T0 ))s)"
  timeout -k 10 150 python runner.py --study lr --data .gpu_data/fer2013_subset.csv.gz --device cuda --wandb disabled \
      --out "$WORK/runs" --set "model.knobs.channels=[32,64]" --set "model.knobs.fc=[128,64]" --epochs 3 \
    || echo "=== real-data study ended with status $?"
  cp "$WORK"/runs/*/summary.md "$OUT/real_lr_summary.md" 2>/dev/null || true
else
  echo "=== no .gpu_data/fer2013_subset.csv.gz: real-data study skipped (run scripts/make_gpu_subset.py, carry .gpu_data)"
fi
# 5. The benchmark's own test (CPU, tiny).
echo "=== tests (at $(( $(date +%s) - T0 ))s)"
timeout -k 5 45 python -m pytest tests/test_bench.py -q -x || echo "=== tests ended with status $?"
echo "=== done in $(( $(date +%s) - T0 ))s; files:"
ls -la "$WORK"
tar czf "$OUT/gpu_results.tgz" -C "$WORK" --exclude runs . && ls -la "$OUT"
