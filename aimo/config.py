"""The workflow's config outside Snakemake: YAML files merged in order (as `--configfile A B`
does) and validated, defaults filled in, by the workflow's own schema."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "schemas" / "config.schema.yaml"
# The config sections an engine stage reads (generate, reflexion, critique, the online run):
# what aimo.solver.Solver is given, and what a generate job's params depend on.
ENGINE_KEYS = ("model", "engine", "sampling", "tir", "scheduler", "sandbox", "samples")


def merge(base: dict, over: dict) -> dict:
    """`over` on top of `base`, nested mappings merged key by key (Snakemake's rule)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


def engine_params(config: dict) -> dict:
    """The ENGINE_KEYS sections of `config`: an engine stage's params."""
    return {k: config[k] for k in ENGINE_KEYS}


def load(paths) -> dict:
    """The config of the YAML files `paths`, merged and validated; a ValueError names the
    file or key that is wrong."""
    from snakemake.utils import validate

    config = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config file {path} not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(
                f"{path}: a config file holds a mapping of keys, not {type(data).__name__}"
            )
        config = merge(config, data)
    try:
        validate(config, str(SCHEMA))
    except Exception as exc:  # snakemake's WorkflowError wraps jsonschema's message
        raise ValueError(f"config {[str(p) for p in paths]}: {exc}") from None
    return config
