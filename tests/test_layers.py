"""Layering: import-linter's contracts (pyproject.toml) hold; the engine's runtime needs no builder."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from conftest import ROOT


def test_import_contracts_hold():
    # Prepare
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    # Execute
    res = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    # Assert: every contract kept (layers, engine imports nothing above it, no sibling import cycles)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout
