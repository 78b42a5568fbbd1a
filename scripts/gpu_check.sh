#!/usr/bin/env bash
# GPU benchmark matrix + a short real-data study for a fresh CUDA box (torch 2.11, no wandb).
# Everything is written to $WORK; at the end $OUT gets the log, the real-data summary.md and one
# tarball of all json/png (the device tool returns at most 8 files).
# Every part has its own timeout so the whole script ends inside 8 minutes even if a compile is slow
# (parts sum to 450 s + kill grace); a part that times out leaves the rows it printed in its log. Run from the repo root:
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

study() {  # study NAME SECONDS ARGS...: one short real-data runner.py study with a hard timeout
  local name=$1 secs=$2; shift 2
  echo "=== $name (timeout ${secs}s, at $(( $(date +%s) - T0 ))s)"
  timeout -k 10 "$secs" python runner.py --data "$SUBSET" --device cuda --wandb disabled --out "$WORK/runs/$name" "$@" \
    || echo "=== $name ended with status $? (124 = timed out)"
  cp "$WORK/runs/$name"/*/summary.md "$OUT/$name.md" 2>/dev/null || true
}

# 1. The headline: simple_cnn, population vs sequential at K = 1, 8, 32 (targets >= 6x at 8, >= 15x at 32).
part simple_cnn 90 --models simple_cnn --k 1,8,32 --steps 20 --impls sequential,population
# 2. regularized_cnn at K = 8 (target >= 4x) and the mlp; then the two big families, resnet and large_cnn.
part regularized_mlp 50 --models regularized_cnn,mlp --k 8 --steps 20 --impls sequential,population
part resnet_large 70 --models resnet,large_cnn --k 8 --steps 10 --impls sequential,population
# 3. bf16 autocast in the step benchmark.
part simple_cnn_bf16 45 --models simple_cnn --k 8,32 --steps 20 --impls sequential,population --bf16
# 4. Real data (a FER2013 subset that travels with the tree: python scripts/make_gpu_subset.py here, then
#    carry .gpu_data): the lr study (cpu profile, 2 epochs), fp32-with-TF32 vs bf16, CUDA graphs off vs on,
#    then --all end to end (cpu profile, one epoch, eager: it checks every experiment's path on CUDA).
SUBSET=.gpu_data/fer2013_subset.csv.gz
if [ -s "$SUBSET" ]; then
  LR=(--study lr --profile cpu --epochs 2)
  study lr_tf32 40 "${LR[@]}" --precision tf32
  study lr_tf32_graphs 40 "${LR[@]}" --precision tf32 --cuda-graphs
  study lr_bf16 40 "${LR[@]}" --precision bf16
  study all_eager 75 --all --profile cpu --epochs 1 --seeds 1 --no-compile
else
  echo "=== no $SUBSET: real-data parts skipped (run scripts/make_gpu_subset.py, carry .gpu_data)"
fi
echo "=== done in $(( $(date +%s) - T0 ))s; files:"
ls -la "$WORK"
tar czf "$OUT/gpu_results.tgz" -C "$WORK" --exclude "*.pt" . && ls -la "$OUT"
