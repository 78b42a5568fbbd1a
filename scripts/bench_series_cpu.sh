#!/bin/bash
# Issue 15's CPU benchmark series (docs/bench.md): the e2e lr study 3x over one cache that starts empty, every
# family at K=4 for 2 epochs cold then warm, then compile_times. Run it alone: timings are side by side.
# OUT=dir for the JSONs and logs (default /tmp/bench_series), DATA=the FER2013 csv(.gz). About 40 min on 2 cores.
# PARTS="lr families ct" (the default) picks parts; WARM=N warm runs per family after its cold one (1). The part
# "full" runs the families in FULL (default: mlp tiny_cnn, the two that lose at 2 epochs) at their profile's own
# epochs, cold then WARM times warm: the study's length rather than the series' short 2 epochs.
# A cold start empties both of inductor's stores: its cache directory and its precompiled headers, which it keeps
# under the temporary directory whatever TORCHINDUCTOR_CACHE_DIR says (so each part gets a TMPDIR of its own).
cd "$(dirname "$0")/.."
D=${DATA:-../shared/data/fer2013/fer2013.csv.gz}
O=${OUT:-/tmp/bench_series}; mkdir -p "$O"
PARTS=${PARTS:-lr families ct}
echo "=== start $(date -u +%H:%M:%S) rev $(git rev-parse --short HEAD) parts: $PARTS"

cold() {  # cold NAME: empty inductor stores of their own for what follows
  export TORCHINDUCTOR_CACHE_DIR=$O/cache_$1 TMPDIR=$O/tmp_$1; rm -rf "$TORCHINDUCTOR_CACHE_DIR" "$TMPDIR"; mkdir -p "$TMPDIR"
}
family() {  # family FAMILY PREFIX LABEL [e2e options]: one cold run, then WARM warm ones, JSONs $O/PREFIX_FAMILY_RUN.json
  local f=$1 prefix=$2 label=$3; shift 3
  cold ${prefix}_$f
  for w in cold $(seq -f "warm%g" 1 "${WARM:-1}" | sed 's/^warm1$/warm/'); do
    echo "=== $f $label$w $(date -u +%H:%M:%S)"
    python runner.py --bench --e2e $f --seeds 4 "$@" --data "$D" --json $O/${prefix}_${f}_$w.json 2>$O/${prefix}_${f}_$w.err | tail -25
  done
}

if [[ " $PARTS " == *" lr "* ]]; then
  cold lr
  for i in 1 2 3; do
    echo "=== lr run $i $(date -u +%H:%M:%S)"
    python runner.py --bench --e2e lr --data "$D" --json $O/e2e_lr_$i.json 2>$O/e2e_lr_$i.err | tail -40
  done
fi
if [[ " $PARTS " == *" families "* ]]; then
  for f in mlp simple_cnn tiny_cnn large_cnn regularized_cnn resnet; do family $f k4 "" --epochs 2; done
fi
if [[ " $PARTS " == *" full "* ]]; then
  for f in ${FULL:-mlp tiny_cnn}; do family $f full "full "; done
fi
if [[ " $PARTS " == *" ct "* ]]; then
  cold ct
  echo "=== compile_times $(date -u +%H:%M:%S)"
  python scripts/compile_times.py --json $O/ct.json 2>$O/ct.err | tail -30
fi
echo "=== done $(date -u +%H:%M:%S)"
