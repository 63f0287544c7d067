#!/usr/bin/env bash
# The llama-60m sweep of results/lm_shakespeare_bbc_60m, as run on the GPU machine (one H100, under MPS).
# Resumable: call it again and finished runs are skipped, interrupted ones continue from their checkpoints.
# Usage: bash scripts/gpu_lm60_sweep.sh SECONDS OUT_DIR JOBS
set -u
secs=${1:-540}; out=${2:-runs/lm60}; jobs=${3:-18}
export PYTHONPATH=src:.carry/site XDG_CACHE_HOME=$PWD/.carry/cache
export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps CUDA_MPS_LOG_DIRECTORY=/tmp/mpslog
mkdir -p /tmp/mps /tmp/mpslog "$out"
pgrep -x nvidia-cuda-mps-control >/dev/null || nvidia-cuda-mps-control -d
common=(--config configs/lm_shakespeare_bbc.yaml --model.size llama-60m --seeds 0,1,2
        --train.steps 1000 --train.batch_size 32 --train.eval_interval 250 --train.warmup_steps 100
        --data.tokenizer .carry/tok-shakespeare+bbc-8192.json)
# the sparse grid (and dense at the sparse runs' lr 3e-3)
timeout -s TERM "$secs" python -m sparsebrain compare "${common[@]}" \
  --methods dense,set,rigl,mest,gmp,granet,cht,chts,chtss --densities 0.3,0.1 --jobs "$jobs" \
  --out "$out/main" > "$out/main.log" 2>&1 &
# dense at the paper's dense lr 1e-3
timeout -s TERM "$secs" python -m sparsebrain compare "${common[@]}" \
  --methods dense --densities 1.0 --jobs 3 --train.lr 0.001 --train.lr_end 0.0001 \
  --sparsity.label 'dense (lr 1e-3)' --out "$out/dense_lr1e-3" > "$out/dense.log" 2>&1 &
while sleep 60; do
  n=$(ls "$out"/*/*/summary.json 2>/dev/null | wc -l); echo "$(date +%T) finished runs: $n"
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  jobs -r | grep -q . || break
done
wait
