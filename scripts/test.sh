#!/usr/bin/env bash
# Install (scripts/setup.sh), lint and type-check, then run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# both read their settings from pyproject.toml; mypy keeps its cache in .mypy_cache, so a rerun takes seconds
ruff check src tests bench
mypy
python -m pytest -q "$@"
