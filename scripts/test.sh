#!/usr/bin/env bash
# The whole check, from a clean clone with only Python 3.11+ and git:
# a virtual environment with shoal and its dev tools, then lint, types and tests.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --disable-pip-version-check --upgrade pip
python -m pip install --quiet --disable-pip-version-check -e ".[dev]"

echo "== ruff check"; ruff check .
echo "== ruff format --check"; ruff format --check .
echo "== mypy --strict"; mypy
echo "== pytest"; pytest "$@"
