"""The lint and format gate: ruff (lint and format) over every Python file, snakefmt over the
Snakefile and the rules; the settings are pyproject.toml's. A failure prints what to run."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.needs("workflow")

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True)


def test_ruff_lint():
    r = run("ruff", "check", "--no-cache", ".")
    assert r.returncode == 0, f"{r.stdout}{r.stderr}\n(fix: ruff check --fix .)"


def test_ruff_format():
    r = run("ruff", "format", "--no-cache", "--check", ".")
    assert r.returncode == 0, f"{r.stdout}{r.stderr}\n(fix: ruff format .)"


def test_snakefmt():
    r = run("snakefmt", "--check", "Snakefile", "rules")
    assert r.returncode == 0, f"{r.stdout}{r.stderr}\n(fix: snakefmt Snakefile rules)"
