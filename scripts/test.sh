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

# The dashboard's browser test drives Debian's Chromium (never a downloaded one).
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null \
        && [ -z "${SHOAL_CHROMIUM:-}" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing chromium (apt-get) for the dashboard's browser test"
        if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -qq chromium >/dev/null); then
            echo "note: apt-get could not install chromium (see above): the dashboard's" \
                 "browser test will skip (fail under CI)" >&2
        fi
    else
        echo "note: no Chromium and no root apt-get to install it: the dashboard's browser" \
             "test will skip (fail under CI); install Debian's chromium package or set" \
             "SHOAL_CHROMIUM to a Chromium executable" >&2
    fi
fi

echo "== ruff check"; ruff check .
echo "== ruff format --check"; ruff format --check .
echo "== mypy --strict"; mypy
echo "== pytest"; pytest "$@"
