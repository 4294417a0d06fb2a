"""The workflow's config outside Snakemake: YAML files merged in order (as `--configfile A B`
does) and validated, defaults filled in, by the workflow's own schema; then `check` cross-checks
the keys the schema checks one at a time (the Snakefile calls it too). Defaults are the
schema's alone: code reads every key as section["key"], and `defaults(section)` completes a
section built outside a loaded config. `online_config` is the online run's config: every
online.<section> merged over <section>."""

import copy
import functools
import math
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
    # issue 35: one override rule, online.<section> merged over <section>
    ("online", "count_cancelled"): "online.vote.count_cancelled",
    ("online", "stop_at_answer"): "online.tir.stop_at_answer",
    ("online", "answer_after_tools"): "online.tir.answer_after_tools",
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


@functools.cache
def online_sections() -> tuple:
    """The sections the online run changes: those that `online` holds a section of
    (samples, scheduler, tir, vote), as the schema says."""
    props = schema()["properties"]
    return tuple(k for k in props["online"]["properties"] if k in props and k != "online")


def online_config(config: dict) -> dict:
    """The online run's config: `config` with online.<section> merged over <section>, key by
    key, for every section of online_sections() (so online.scheduler.waves.rule alone changes
    only the rule); the other sections as they are. `config` itself is left unchanged (the
    batch workflow's); the result shares its unchanged parts."""
    over = config["online"]
    return {
        key: merge(part, over[key]) if key in online_sections() else part
        for key, part in config.items()
    }


def engine_params(config: dict) -> dict:
    """The ENGINE_KEYS sections of `config`: an engine stage's params."""
    return {k: config[k] for k in ENGINE_KEYS}


# safe_load's loader, in C where libyaml is installed (the Python one takes 0.1 s over the schema)
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def schema() -> dict:
    """The workflow's schema, parsed once."""
    return yaml.load(SCHEMA.read_text(), Loader=LOADER)


def validate(config: dict, node: dict | None = None):
    """Validate `config` by the schema (or by `node`, a part of it) and fill in its defaults,
    as snakemake.utils.validate does in the Snakefile (JSON Schema 2020-12; a missing key gets
    its default before its section is validated), but without parsing the schema again each
    time. Raises jsonschema's ValidationError."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    properties = base.VALIDATORS["properties"]

    def with_defaults(validator, props, instance, section):
        if isinstance(instance, dict):
            for key, sub in props.items():
                if "default" in sub:  # a copy: the cached schema's default must stay as it is
                    instance.setdefault(key, copy.deepcopy(sub["default"]))
        yield from properties(validator, props, instance, section)

    validator = jsonschema.validators.extend(base, {"properties": with_defaults})
    validator(schema() if node is None else node).validate(config)


def defaults(section: str) -> dict:
    """The schema's defaults of a config section, e.g. defaults("sampling"), filled in by
    `validate`: a complete section, for code that builds one outside a loaded config (tests,
    benches): dict(defaults("sampling"), temperature=0.0)."""
    out = {}
    validate(out, schema()["properties"][section])
    return out


def load(paths) -> dict:
    """The config of the YAML files `paths`, merged, validated and checked (`check`); a
    ValueError of one line names the file or key that is wrong."""
    import jsonschema

    config = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config file {path} not found")
        try:
            data = yaml.load(path.read_text(), Loader=LOADER) or {}
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
        validate(config)
    except jsonschema.ValidationError as exc:
        raise ValueError(f"{where}: {dotted(exc.absolute_path)}: {exc.message}") from None
    try:
        check(config)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return config


def dotted(path, start="config") -> str:
    """A key's path as written in the docs, e.g. online.scheduler.waves (`start` for none)."""
    return ".".join(map(str, path)) or start


# (a, relation, b, why): pairs of keys the schema cannot relate; every one of them is a config
# that validates and then fails, or wastes, every problem
ORDER = [
    ("online.min_s", "<=", "online.max_s", "a problem may never get the least it can use"),
    (
        "online.reserve_s",
        "<=",
        "online.max_s",
        "the bank would hold back for each problem to come more than a problem may use",
    ),
    (
        "online.min_s",
        "<=",
        "online.budget_s",
        "the run is shorter than the least a problem can use",
    ),
    ("online.tail_s", "<", "online.budget_s", "no problem would get a second"),
    (
        "sampling.max_tokens",
        "<",
        "engine.max_model_len",
        "the prompt needs room in the context, so no trace could use its budget",
    ),
]


def value(config: dict, key: str):
    """The value of a dotted key, e.g. value(config, "online.min_s")."""
    for part in key.split("."):
        config = config[part]
    return config


def check(config: dict):
    """Cross-checks of a validated config (defaults filled in) that the schema cannot make:
    related keys (ORDER; samples.n and samples.shard_size), numbers the runs cannot use
    (`numbers`), the online run's sections (online.<section> merged over <section>: each
    must still be a valid section) and the vote settings of the batch and the online run,
    built as the runs build them. A ValueError of one line names the key(s)."""
    import jsonschema

    props = schema()["properties"]
    numbers(config, schema())
    run = online_config(config)
    for section in online_sections():
        numbers(run[section], props[section], [f"online.{section}"])
    n, shard_size = config["samples"]["n"], config["samples"]["shard_size"]
    if n % shard_size:
        raise ValueError(
            f"config samples.n={n} is not a multiple of samples.shard_size={shard_size}: "
            "a shard always holds shard_size samples per problem"
        )
    for a, relation, b, why in ORDER:
        x, y = value(config, a), value(config, b)
        if not (x <= y if relation == "<=" else x < y):
            inverse = ">" if relation == "<=" else ">="
            raise ValueError(f"{a} ({x}) {inverse} {b} ({y}): {why}")
    if config["engine"]["backend"] != "vllm" and config["scheduler"]["mode"] == "deterministic":
        raise ValueError(
            f"scheduler.mode deterministic needs engine.backend vllm (one step of its engine is "
            f"one step of the schedule); engine.backend {config['engine']['backend']} batches "
            "on its own: set scheduler.mode: free"
        )
    vote_settings(config)  # first: a bad key of vote is named as vote's, not online.vote's
    # online.<section> holds only what it changes: the merge must still be a valid section
    for section in online_sections():
        try:
            jsonschema.validate(run[section], props[section])
        except jsonschema.ValidationError as exc:
            raise ValueError(
                f"{dotted([f'online.{section}', *exc.absolute_path])}: {exc.message}"
            ) from None


def vote_settings(config: dict):
    """The (batch, online) runs' VoteSettings, built as the runs build them: a ValueError
    names the key (VoteSettings' own errors name a field, not its section, so each key is
    tried alone first)."""
    from aimo.vote import VoteSettings

    tries = {}
    for where, part in (("online.vote", config["online"]["vote"]), ("vote", config["vote"])):
        for key, item in part.items():
            if isinstance(item, dict):
                tries.update({f"{where}.{key}.{sub}": {key: {sub: v}} for sub, v in item.items()})
            else:
                tries[f"{where}.{key}"] = {key: item}
    online = online_config(config)["vote"]
    tries.update(vote=config["vote"], online=online)
    for key, settings in tries.items():
        try:
            VoteSettings.of(settings)
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
    return VoteSettings.of(config["vote"]), VoteSettings.of(online)


def numbers(config, node: dict, path=()):
    """A ValueError naming the first number of `config` that the schema lets through and the
    runs cannot use: .nan or .inf (NaN passes every bound), or a float such as 4.0 where the
    schema (`node`, config's part of it) says integer (JSON Schema counts 4.0 as one, range()
    does not)."""
    if isinstance(config, dict):
        for key, item in config.items():
            numbers(item, node.get("properties", {}).get(key, {}), (*path, key))
    elif isinstance(config, list):
        for i, item in enumerate(config):
            numbers(item, node.get("items", {}), (*path, i))
    elif isinstance(config, float):
        types = node.get("type", [])
        if not math.isfinite(config):
            raise ValueError(f"{dotted(path)}: {config} is not a finite number")
        if "integer" in types and "number" not in types:
            raise ValueError(f"{dotted(path)}: {config} is not an integer (write {int(config)})")
