#!/usr/bin/env bash
# Installs everything, then runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
exec .venv/bin/python -m pytest -q "$@"
