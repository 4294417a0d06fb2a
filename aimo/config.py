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


# Keys that moved (issue 23: a key means the same wherever it appears), and where to. An old
# config gets an error that names the new place rather than the schema's "not allowed".
MOVED = {
    ("online", "samples"): "online.samples.n",
    ("online", "early_stop"): "online.scheduler.early_stop",
    ("online", "waves"): "online.scheduler.waves",
    ("online", "prune"): "online.scheduler.prune",
    ("online", "problems"): "online.expected_problems",
}
# the new key with the old name: online.samples is now a mapping, as samples is
RENAMED_IN_PLACE = {("online", "samples")}


def check_moved(config: dict, where: str = "config"):
    """A ValueError naming the new key for the first key of MOVED that `config` (one file, or
    Snakemake's merged config) still uses."""
    for (section, key), new in MOVED.items():
        part = config.get(section)
        if not isinstance(part, dict) or key not in part:
            continue
        if (section, key) in RENAMED_IN_PLACE and isinstance(part[key], dict):
            continue
        raise ValueError(f"{where}: {section}.{key} moved to {new}")


def online_scheduler(config: dict) -> dict:
    """The online run's scheduler section: online.scheduler merged over scheduler, key by
    key (so online.scheduler.waves.rule alone changes only the rule)."""
    return merge(config["scheduler"], config["online"]["scheduler"])


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
        check_moved(data, f"config file {path}")
        config = merge(config, data)
    where = f"config {[str(p) for p in paths]}"
    try:
        validate(config, str(SCHEMA))
    except Exception as exc:  # snakemake's WorkflowError wraps jsonschema's message
        raise ValueError(f"{where}: {exc}") from None
    # online.scheduler holds only what it changes: the merge must still be a scheduler section
    import jsonschema

    schema = yaml.safe_load(SCHEMA.read_text())["properties"]["scheduler"]
    try:
        jsonschema.validate(online_scheduler(config), schema)
    except jsonschema.ValidationError as exc:
        key = ".".join(["online.scheduler", *map(str, exc.absolute_path)])
        raise ValueError(f"{where}: {key}: {exc.message}") from None
    return config
