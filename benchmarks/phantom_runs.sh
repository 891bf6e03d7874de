#!/bin/bash
# Fixed-seed deterministic phantom runs of every recipe (30 iterations, 6 volumes): the before/after check of
# a change that must not change results. Run it on both commits, then compare the metrics.json and log.jsonl:
#   benchmarks/phantom_runs.sh /tmp/before   (on the old commit)   benchmarks/phantom_runs.sh /tmp/after
#   for r in supervised mean_teacher ua_mt dtc dbisl mcnet; do cmp /tmp/{before,after}/$r/metrics.json; done
# Extra DBiSL options go in $DBISL_EXTRA (e.g. "recipe.consistency=both" to run a former default).
set -u
out=$1; here=$(cd "$(dirname "$0")/.." && pwd); mkdir -p "$out"
mtssl=${MTSSL:-$here/.venv/bin/mtssl}
for r in supervised mean_teacher ua_mt dtc dbisl mcnet; do
  backbone=vnet; [ $r = mcnet ] && backbone=mcnet
  config=$here/examples/configs/phantom_supervised.yaml; extra=""
  if [ $r = dbisl ]; then config=$here/examples/configs/phantom_dbisl.yaml; extra="recipe.ramp_divisor=1 ${DBISL_EXTRA:-}"; fi
  HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 "$mtssl" train "$config" recipe.name=$r $extra model.backbone.name=$backbone \
    train.iterations=30 train.log_every=5 train.checkpoint_every=30 train.deterministic=true train.seed=7 \
    train.progress=false data.num_train=6 data.num_test=2 --out "$out/$r" --overwrite > "$out/$r.txt" 2>&1 \
    || echo "$r failed: $out/$r.txt"
done
