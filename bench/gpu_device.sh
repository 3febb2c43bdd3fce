#!/usr/bin/env bash
# The GPU check as one prepared command for a lent GPU machine (see bench/gpu.py): its image has torch,
# transformers, peft and accelerate but not pydantic, so wheels for it travel in .whl/ (git-ignored; make
# them with the pip download line in docs/scale.md). Results go to $OUT (the device tool) or bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true
out=${OUT:-bench}
python3 bench/gpu.py --out "$out/gpu.json" --markdown "$out/GPU_RESULTS.md" "$@" 2>&1 | tee "$out/gpu.log"
