#!/usr/bin/env bash
# The RSGN table of results/rsgn (both tasks: RSGN sparse / reference / sparse without Hebbian, and the four
# baselines at the paper's sizes, seeds 42 43 44; two ablations of the sparse variant) and the scaling benchmark, as meant for the GPU machine under MPS.
# Resumable: call it again and finished runs are skipped, interrupted ones continue.
# Usage: bash scripts/gpu_rsgn_runs.sh SECONDS OUT_DIR [EPOCHS] [SEEDS] [SCALING: 1|0]
set -u
secs=${1:-540}; out=${2:-runs/rsgn}; epochs=${3:-50}; seeds=${4:-42,43,44}; scaling=${5:-1}
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps CUDA_MPS_LOG_DIRECTORY=/tmp/mpslog
mkdir -p /tmp/mps /tmp/mpslog "$out/logs"
if command -v nvidia-cuda-mps-control >/dev/null; then
  pgrep -x nvidia-cuda-mps >/dev/null || nvidia-cuda-mps-control -d >/dev/null 2>&1 </dev/null
fi
end=$((SECONDS + secs))
run() {  # one compare, stopped with SIGTERM (it checkpoints) when the time is up; timeout 0 would never stop
  local left=$((end - SECONDS)); [ "$left" -gt 10 ] || return 124
  timeout -s TERM "$left" python -m sparsebrain compare "$@" --seeds "$seeds" --densities 1.0 --methods dense \
    --train.epochs "$epochs" --train.threads 1 </dev/null
}
for task in hierarchical long_range; do
  cfg=configs/rsgn_$task.yaml
  K=5; [ "$task" = long_range ] && K=7
  base="variant: sparse, num_nodes: 256, steps: $K, num_neighbors: 16, active_fraction: 0.1"
  run --config "$cfg" --model.options "{$base, hebbian: true}" --sparsity.label "RSGN sparse" \
    --out "$out/$task/rsgn_sparse" > "$out/logs/${task}_rsgn_sparse.log" 2>&1 &
  run --config "$cfg" --model.options "{$base, hebbian: false}" --sparsity.label "RSGN sparse, no Hebbian" \
    --out "$out/$task/rsgn_sparse_nohebb" > "$out/logs/${task}_rsgn_sparse_nohebb.log" 2>&1 &
  run --config "$cfg" --model.options "{variant: reference, num_nodes: 256, steps: $K}" \
    --sparsity.label "RSGN reference" --out "$out/$task/rsgn_reference" > "$out/logs/${task}_rsgn_reference.log" 2>&1 &
  run --config "$cfg" --model.options "{variant: reference, num_nodes: 256, steps: $K, hebbian: false}" \
    --sparsity.label "RSGN reference, no Hebbian" --out "$out/$task/rsgn_reference_nohebb" \
    > "$out/logs/${task}_rsgn_reference_nohebb.log" 2>&1 &
  # Ablations of the sparse variant: no temperature annealing (soft thresholds stay at T = 1), and k = 32 neighbours
  run --config "$cfg" --model.options "{$base, hebbian: true, temperature_decay: 1.0}" \
    --sparsity.label "RSGN sparse, no annealing" --out "$out/$task/rsgn_sparse_noanneal" \
    > "$out/logs/${task}_rsgn_sparse_noanneal.log" 2>&1 &
  run --config "$cfg" --model.options "{${base/num_neighbors: 16/num_neighbors: 32}, hebbian: true}" \
    --sparsity.label "RSGN sparse, k = 32" --out "$out/$task/rsgn_sparse_k32" > "$out/logs/${task}_rsgn_sparse_k32.log" 2>&1 &
  for m in seq_mlp seq_transformer seq_sparse_transformer seq_bilstm; do
    run --config "$cfg" --model.name "$m" --model.options "{}" --sparsity.label "$m" \
      --out "$out/$task/$m" > "$out/logs/${task}_$m.log" 2>&1 &
  done
done
if [ "$scaling" = 1 ]; then
  left=$((end - SECONDS))
  timeout -s TERM "$left" python benchmarks/rsgn_scaling.py --plot --out "$out/rsgn_scaling.json" \
    > "$out/logs/scaling.log" 2>&1 &
fi
wait
