#!/usr/bin/env bash
# Installs everything, checks the code (hack/lint.sh), then runs the whole test suite,
# on two pytest-xdist workers: most tests wait on processes and polling, so two share
# CI's 2 cores well. Tests that touch host-global state all run in one xdist group, one
# after another (tests/conftest.py says which and why). `hack/test.sh -n 0` runs serially.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
hack/lint.sh
exec .venv/bin/python -m pytest -q --durations=25 -n 2 --dist loadgroup "$@"
