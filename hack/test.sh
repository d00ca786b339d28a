#!/usr/bin/env bash
# Installs everything, checks the code (hack/lint.sh), then runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
hack/lint.sh
exec .venv/bin/python -m pytest -q --durations=25 "$@"
