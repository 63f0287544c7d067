#!/usr/bin/env bash
# Controls for results/vit_fmnist_retrain, as run on the GPU machine: the dense ViTs again (same recipe and seeds as
# scripts/gpu_nm_runs.sh), then (a) the transposable 2:4 projection alone, evaluated after one step at lr 1e-12, and
# (b) the dense model trained for the retraining's extra 6 epochs at its lr, to separate "2:4 retraining" from
# "6 more epochs". Resumable like the other scripts. Carry .data/fashion-mnist/.
# Usage: bash scripts/gpu_vit_controls.sh SECONDS OUT_DIR [VIT_DENSE_EPOCHS VIT_RETRAIN_EPOCHS]
set -u
secs=${1:-540}; out=${2:-runs/nm}; vit_epochs=${3:-12}; retrain_epochs=${4:-6}
export PYTHONPATH=src PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
mkdir -p "$out/logs"
end=$((SECONDS + secs))
run() {  # one sparsebrain command, stopped (SIGTERM: it checkpoints) when the time is up
  local left=$((end - SECONDS)); [ "$left" -gt 10 ] || return 124
  timeout -s TERM "$left" python -m sparsebrain "$@" </dev/null
}
for s in 0 1 2; do
  (
    d="$out/vit/dense_s$s"
    [ -f "$d/summary.json" ] || run train --config configs/fmnist_vit.yaml --data.path .data/fashion-mnist --seed "$s" \
      --train.epochs "$vit_epochs" --train.warmup_steps 234 --train.threads 1 --run-dir "$d" --resume --quiet \
      > "$out/logs/vit_dense_s$s.log" 2>&1
    p="$out/vit_controls/projection_only_s$s"  # asp = projection + fixed mask; lr 1e-12: nothing moves
    [ -f "$p/summary.json" ] || run retrain --from "$d" --method asp --seed "$s" --train.steps 1 --train.lr 1e-12 \
      --train.lr_end 1e-12 --train.warmup_steps 0 --train.threads 1 --run-dir "$p" --resume --quiet \
      > "$out/logs/vit_projection_only_s$s.log" 2>&1 &
    c="$out/vit_controls/dense_more_s$s"
    [ -f "$c/summary.json" ] || run train --config "$d/config.yaml" --model.init_from "$d" --seed "$s" \
      --train.epochs "$retrain_epochs" --train.lr 0.0005 --train.warmup_steps 0 --train.threads 1 \
      --run-dir "$c" --resume --quiet > "$out/logs/vit_dense_more_s$s.log" 2>&1 &
    wait
  ) &
done
wait
