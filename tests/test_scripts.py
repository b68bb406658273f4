"""The shell scripts under scripts/ (the GPU lease scripts) parse: ``bash -n`` on each."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))


def test_there_are_lease_scripts() -> None:
    assert {p.name for p in SCRIPTS} >= {"gpu_lib.sh", "gpu_lm.sh", "gpu_session.sh"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
