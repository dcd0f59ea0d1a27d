"""The strict type check ([tool.mypy] in pyproject.toml): a port and its adapters, a command
and its decider, cannot drift apart unnoticed (StagedInputs.stage lacked the `seal` both
adapters took, for months)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_listed_packages_pass_mypy_strict():
    done = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
