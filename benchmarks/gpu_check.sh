#!/usr/bin/env bash
# One run on a lent GPU machine: the GPU tests, then tune timings on the GPU.
#   (device tool) run: bash benchmarks/gpu_check.sh    with carry [".whl"], timeout_s 580
# Each step has its own timeout (210 + 150 + 180 s) so the whole stays inside one call.
# .whl holds Optuna and its needs for the machine's Python (it has no network): make it
# first with `bash benchmarks/gpu_wheels.sh`. The image has transformers, peft and safetensors.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:src:tests
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, optuna; print('torch', torch.__version__, torch.cuda.get_device_name(), 'optuna', optuna.__version__)"
timeout 210 python3 -m pytest -q -p no:cacheprovider -rs tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.log"
[ "${SKIP_BENCH:-}" ] || timeout 150 python3 benchmarks/tune_speed.py --device cuda --cases digits,charlm --epochs 20,2 \
    2>&1 | tee "$OUT/tune_speed_cuda.log"
# The LoRA fine-tune (benchmarks/lora) stacked against one at a time, and --vectorize
# auto's choice, on the GPU.
[ "${SKIP_FINETUNE:-}" ] || timeout 180 python3 benchmarks/lora/bench.py --threads 8 --device cuda \
    2>&1 | tee "$OUT/finetune_cuda.log"
