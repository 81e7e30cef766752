#!/usr/bin/env bash
# The Omniglot issue's GPU checks in one call (a lent machine is short-lived): the CUDA-only tests,
# the correctness + speed + profile tables of omniglot_gpu.py, and two time-boxed Proto-MAML
# accuracy runs of omniglot_small.py with CUDA graphs. Every part has its own time limit and
# log, so one failure leaves the others' results.
#   usage: bash benchmarks/device_omniglot.sh DATA_DIR OUT_DIR
set -u
D=$1
O=$2
mkdir -p "$O"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv,noheader
timeout 60 python -m pytest -q -p no:cacheprovider tests/test_cuda_graphs.py tests/test_proto_head.py \
  > "$O/tests.log" 2>&1
tail -n 3 "$O/tests.log"
timeout 180 python benchmarks/omniglot_gpu.py --data-dir "$D" --device cuda --seconds 6 --repeats 3 \
  --out "$O/speed" > "$O/speed.log" 2>&1
tail -n 60 "$O/speed.log"
common=(--data-dir "$D" --preset gpu --device cuda --learners metasgd --head-init prototypes
        --inner-steps 1 --cuda-graph --baseline-configs '')
timeout 130 python benchmarks/omniglot_small.py "${common[@]}" --configs 20w1s --meta-batch 8 \
  --train-seconds 90 --json-out "$O/proto20.json" > "$O/proto20.log" 2>&1
grep -E '^\||Error|iteration' "$O/proto20.log" | tail -n 8
timeout 130 python benchmarks/omniglot_small.py "${common[@]}" --configs 5w1s,5w5s --meta-batch 32 \
  --train-seconds 40 --json-out "$O/proto5.json" > "$O/proto5.log" 2>&1
grep -E '^\||Error|iteration' "$O/proto5.log" | tail -n 10
