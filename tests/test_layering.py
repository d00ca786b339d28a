"""The architecture's import rules (DESIGN.md), checked with import-linter."""
import os
import subprocess
import sys


def test_import_contracts_hold():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    exe = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    r = subprocess.run([exe], cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
