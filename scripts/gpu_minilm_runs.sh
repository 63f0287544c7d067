#!/usr/bin/env bash
# The MiniLM dense -> 2:4 runs of results/minilm_retrain, as run on the GPU machine (one H100, under MPS).
# Carry .carry_minilm/ (see results/minilm_retrain/README.md: the package's weights in float16, tokenizer, corpus).
# Usage: bash scripts/gpu_minilm_runs.sh SECONDS OUT_DIR
set -u
secs=${1:-540}; out=${2:-runs/minilm}
export PYTHONPATH=src:.carry_minilm/site PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps CUDA_MPS_LOG_DIRECTORY=/tmp/mpslog
mkdir -p /tmp/mps /tmp/mpslog "$out/logs"
pgrep -f nvidia-cuda-mps-control >/dev/null || nvidia-cuda-mps-control -d >/dev/null 2>&1 </dev/null
C=(--config configs/minilm_distill.yaml --model.options '{path: .carry_minilm/minilm}' --seeds 0,1,2
   --train.threads 1 --sparsity.options '{weight_init: keep, init: nm_magnitude, temperature: [1.0, 3.0]}')
timeout -s TERM "$secs" python -m sparsebrain compare "${C[@]}" --methods asp,srste,chts24 --densities 0.5 --jobs 9 \
  --out "$out/retrain24" > "$out/logs/retrain24.log" 2>&1 </dev/null &
timeout -s TERM "$secs" python -m sparsebrain compare "${C[@]}" --methods asp,srste,chts14 \
  --densities 0.25 --jobs 9 --sparsity.options '{weight_init: keep, init: nm_magnitude, temperature: [1.0, 3.0], pattern: "1:4"}' \
  --out "$out/retrain14" > "$out/logs/retrain14.log" 2>&1 </dev/null &
while sleep 60; do
  echo "$(date +%T) finished: $(ls "$out"/*/*/summary.json 2>/dev/null | wc -l)" \
    "$(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader)"
  jobs -r | grep -q . || break
done
wait
