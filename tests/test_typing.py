"""mypy --strict passes on machinery/ and client/ with the project's configuration
(`[tool.mypy]` in pyproject.toml), as CI checks it."""
import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                    reason="mypy is not installed (it comes with the test extra: pip install -e '.[test]')")
def test_mypy_strict_passes_on_machinery_and_client():
    # The project's config names the files and the strictness; no cache so that a stale
    # cache from another checkout cannot hide an error.
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", "pyproject.toml",
                           "--no-incremental", "--cache-dir", os.devnull],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success: no issues found" in proc.stdout
    assert " 0 source files" not in proc.stdout, "the config must name machinery/ and client/"
