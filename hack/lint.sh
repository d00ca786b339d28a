#!/usr/bin/env bash
# The code checks CI runs before the tests: ruff (rules in pyproject.toml's [tool.ruff])
# and mypy (strict on machinery/ and client/, [tool.mypy]). The layering contracts
# (import-linter) are a test: tests/test_layering.py. Run after hack/setup.sh; exits
# non-zero on any finding.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check --quiet .
.venv/bin/mypy --no-incremental --cache-dir /dev/null | tail -1
