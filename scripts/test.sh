#!/usr/bin/env bash
# What CI runs: lint, the unit and plan tests, then the lab tests (they boot real Debian 12
# machines here and always take them down). Extra arguments go to both pytest runs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"

ruff check .
ruff format --check .
yamllint -s .
mypy  # files and settings: pyproject.toml [tool.mypy]

# Two runs, so that a failure in the fast tier (seconds) stops before the lab tier (minutes).
run_pytest() {
  local rc=0
  pytest "$@" || rc=$?
  # 5 is "no test selected": fine when the caller's own arguments (-k, ...) filtered them out.
  if ((rc == 5 && extra_args > 0)); then rc=0; fi
  return "$rc"
}
extra_args=$#
run_pytest tests/unit tests/plan "$@"
run_pytest tests/lab "$@"
