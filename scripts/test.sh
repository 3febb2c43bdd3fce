#!/usr/bin/env bash
# Install (scripts/setup.sh), lint and type-check, then run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
# The studio's browser tests: Playwright for Python drives Debian's Chromium (no browser download). Where apt and
# root are not at hand the browser test skips with its reason; everything else runs.
python -m pip install -q -e ".[studio-test]"
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
    || echo "test: chromium could not be installed; the studio's browser test will skip"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# both read their settings from pyproject.toml; mypy keeps its cache in .mypy_cache, so a rerun takes seconds
ruff check src tests bench
mypy
python -m pytest -q "$@"
