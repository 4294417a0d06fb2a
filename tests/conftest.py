import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
WORKFLOW = [
    "Snakefile",
    "rules",
    "scripts",
    "schemas",
    "config.yaml",
    "config",
    "data",
    "profiles",
    "envs",
]


def copy_workflow(dest: Path) -> Path:
    """A fresh copy of the workflow (no results), as a user's clone would be."""
    for name in WORKFLOW:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest / name)
    shutil.copy2(ROOT / "tests" / "tiny" / "config.yaml", dest / "tiny.yaml")
    return dest


def snakemake(workdir, *args, check=True, timeout=1800):
    """Run snakemake in `workdir`; return the completed process (stdout and stderr merged)."""
    proc = subprocess.run(
        [*SNAKEMAKE, *args],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-6000:]}")
    return proc


def planned_jobs(workdir, *args):
    """The rules a dry run would run, with their counts, e.g. {'vote': 1, ...}."""
    out = snakemake(workdir, "-n", "--quiet", "rules", *args).stdout
    jobs = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "job"):
            jobs[parts[0]] = int(parts[1])
    return jobs


def overrides(workdir, name, text):
    """Write a config overlay file into `workdir`; return the arguments that apply it.
    (Snakemake's --config passes nested values as strings; a YAML overlay keeps types.)"""
    (workdir / name).write_text(text)
    return ["--configfile", "config.yaml", name]


@pytest.fixture
def workflow_copy(tmp_path):
    return copy_workflow(tmp_path)
