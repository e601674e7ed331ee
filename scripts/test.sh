#!/usr/bin/env bash
# What CI runs: lint, then the unit, plan and lab tests in one pytest run (the lab tests boot
# real Debian 12 machines here and always take them down). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"

ruff check .
ruff format --check .
yamllint -s .
pytest tests/unit tests/plan tests/lab "$@"
