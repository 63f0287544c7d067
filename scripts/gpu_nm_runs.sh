#!/usr/bin/env bash
# The N:M runs of results/nm_lm_shakespeare_bbc_60m and results/vit_fmnist_retrain, as run on the GPU machine (one
# H100, under MPS). Resumable: call it again and finished runs are skipped, interrupted ones continue.
# Carry .carry_lm/ (the two corpora's packages under site/ and the tokenizer) and .data/fashion-mnist/.
# Usage: bash scripts/gpu_nm_runs.sh SECONDS OUT_DIR [VIT_DENSE_EPOCHS VIT_RETRAIN_EPOCHS]
set -u
secs=${1:-540}; out=${2:-runs/nm}; vit_epochs=${3:-12}; retrain_epochs=${4:-6}
export PYTHONPATH=src:.carry_lm/site PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps CUDA_MPS_LOG_DIRECTORY=/tmp/mpslog
mkdir -p /tmp/mps /tmp/mpslog "$out/logs"
pgrep -f nvidia-cuda-mps-control >/dev/null || nvidia-cuda-mps-control -d >/dev/null 2>&1 </dev/null
end=$((SECONDS + secs))
run() {  # one sparsebrain command, stopped (SIGTERM: it checkpoints) when the time is up; timeout 0 would never stop
  local left=$((end - SECONDS)); [ "$left" -gt 10 ] || return 124
  timeout -s TERM "$left" python -m sparsebrain "$@" </dev/null
}

# Language model, llama-60m shape, same budget and recipe as results/lm_shakespeare_bbc_60m
LM=(--config configs/lm_shakespeare_bbc.yaml --model.size llama-60m --seeds 0,1,2 --train.steps 1000
    --train.batch_size 32 --train.eval_interval 250 --train.warmup_steps 100 --train.threads 1
    --data.tokenizer .carry_lm/tok-shakespeare+bbc-8192.json)
run compare "${LM[@]}" --methods ste,srste,chts24 --densities 0.5 --jobs 9 --out "$out/lm24" > "$out/logs/lm24.log" 2>&1 &
run compare "${LM[@]}" --methods ste14,srste14,chts14 --densities 0.25 --jobs 9 --out "$out/lm14" > "$out/logs/lm14.log" 2>&1 &

# ViT on Fashion-MNIST: dense, then dense -> transposable 2:4 retraining (eDSrT with chts24; asp = NVIDIA's recipe)
(
  for s in 0 1 2; do
    d="$out/vit/dense_s$s"
    [ -f "$d/summary.json" ] || run train --config configs/fmnist_vit.yaml --data.path .data/fashion-mnist --seed "$s" \
      --train.epochs "$vit_epochs" --train.warmup_steps 234 --train.threads 1 --run-dir "$d" --resume --quiet > "$out/logs/vit_dense_s$s.log" 2>&1 &
  done
  wait
  for s in 0 1 2; do
    for m in asp srste chts24; do
      d="$out/vit_retrain/${m}_s$s"
      [ -f "$d/summary.json" ] || run retrain --from "$out/vit/dense_s$s" --method "$m" --seed "$s" --train.epochs "$retrain_epochs" \
        --train.lr 0.0005 --train.warmup_steps 0 --sparsity.update_interval 100 --train.threads 1 \
        --run-dir "$d" --resume --quiet > "$out/logs/vit_retrain_${m}_s$s.log" 2>&1 &
    done
  done
  wait
) &
while sleep 60; do
  echo "$(date +%T) finished: $(ls "$out"/*/*/summary.json 2>/dev/null | wc -l)" \
    "$(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader)"
  [ "$SECONDS" -lt "$end" ] || break
  jobs -r | grep -q . || break
done
wait
