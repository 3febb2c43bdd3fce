#!/usr/bin/env bash
# Install (scripts/setup.sh) and run `tuneforge demo`: LoRA on product listings -> JSON, before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
tuneforge demo "$@"
