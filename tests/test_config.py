"""The config outside Snakemake (aimo.config): keys that moved name their new place, the
online run's sections are the batch ones with online.<section> over them, and defaults are
written once (the schema: config.yaml agrees with it, and aimo/ reads no schema key with a
default of its own). No engine."""

import copy
from pathlib import Path

import pytest

from aimo import config

pytestmark = pytest.mark.needs("unit")

ROOT = Path(__file__).resolve().parents[1]


def load(tmp_path, text):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(text)
    return config.load([ROOT / "config.yaml", overlay])


@pytest.mark.parametrize(
    "old, new",
    [
        ("online: {samples: 8}", "online.samples moved to online.samples.n"),
        ("online: {early_stop: 4}", "online.early_stop moved to online.scheduler.early_stop"),
        ("online: {waves: {size: 2}}", "online.waves moved to online.scheduler.waves"),
        ("online: {prune: null}", "online.prune moved to online.scheduler.prune"),
        ("online: {problems: 50}", "online.problems moved to online.expected_problems"),
        (
            "online: {count_cancelled: true}",
            "online.count_cancelled moved to online.vote.count_cancelled",
        ),
        (
            "online: {stop_at_answer: true}",
            "online.stop_at_answer moved to online.tir.stop_at_answer",
        ),
        (
            "online: {answer_after_tools: false}",
            "online.answer_after_tools moved to online.tir.answer_after_tools",
        ),
    ],
)
def test_a_moved_key_names_its_new_place_and_the_file(tmp_path, old, new):
    with pytest.raises(ValueError, match=new) as err:
        load(tmp_path, old + "\n")
    assert "overlay.yaml" in str(err.value)


def test_the_shipped_configs_use_the_new_keys():
    for extra in ([], [ROOT / "config/kaggle.yaml"], [ROOT / "config/h100.yaml"]):
        cfg = config.load([ROOT / "config.yaml", *extra])
        assert cfg["online"]["samples"]["n"] == 8
        assert cfg["online"]["scheduler"]["early_stop"] == 4
    assert cfg["online"]["expected_problems"] == 10  # h100 leaves the online run alone


def test_the_online_scheduler_is_merged_over_the_batch_one(tmp_path):
    cfg = load(tmp_path, "online: {scheduler: {early_stop: null, waves: {rule: esc}}}\n")
    sched = config.online_config(cfg)["scheduler"]
    assert sched["early_stop"] is None and sched["waves"]["rule"] == "esc"
    assert sched["waves"]["window"] == cfg["scheduler"]["waves"]["window"]  # kept
    assert sched["rejoin_steps"] == cfg["scheduler"]["rejoin_steps"]
    assert cfg["scheduler"]["waves"]["rule"] == "none"  # the batch workflow's is untouched


# One override rule: online.<section> merged over <section>, for every section online holds:
# (section, overlay, the key it changes, its online value, a key the merge keeps from the batch)
ONLINE_CHANGES = [
    ("samples", "online: {samples: {n: 12}}", "n", 12, "seed"),
    ("scheduler", "online: {scheduler: {waves: {size: 2}}}", "waves.size", 2, "waves.rule"),
    (
        "tir",
        "tir: {stop_at_answer: true}\nonline: {tir: {stop_at_answer: false}}",
        "stop_at_answer",
        False,
        "max_rounds",
    ),
    (
        "vote",
        "vote: {count_cancelled: true}\nonline: {vote: {count_cancelled: false}}",
        "count_cancelled",
        False,
        "strategy",
    ),
]


def test_online_holds_these_sections():
    assert config.online_sections() == tuple(section for section, *_ in ONLINE_CHANGES)


@pytest.mark.parametrize("section, overlay, key, online, kept", ONLINE_CHANGES)
def test_every_online_section_is_merged_over_its_own(tmp_path, section, overlay, key, online, kept):
    cfg = load(tmp_path, overlay + "\n")
    batch = copy.deepcopy(cfg)
    run = config.online_config(cfg)
    assert cfg == batch  # the batch workflow's config is untouched
    assert config.value(run[section], key) == online != config.value(cfg[section], key)
    assert config.value(run[section], kept) == config.value(cfg[section], kept)
    assert set(run[section]) == set(cfg[section])  # still a whole section
    others = set(cfg) - set(config.online_sections())
    assert {k: run[k] for k in others} == {k: cfg[k] for k in others}


def test_the_default_online_run_changes_these_keys():
    cfg = config.load([ROOT / "config.yaml"])
    run = config.online_config(cfg)
    assert run["samples"]["n"] == 8 and run["samples"]["seed"] == cfg["samples"]["seed"]
    assert run["scheduler"] == dict(cfg["scheduler"], early_stop=4)
    assert run["tir"] == dict(cfg["tir"], stop_at_answer=True, answer_after_tools=True)
    assert run["vote"] == dict(cfg["vote"], count_cancelled=True)


def test_the_online_run_is_given_the_online_sections(tmp_path):
    """OnlineRun's Solver params and vote settings are online_config's (mode free), with no
    key of its own beside the rule."""
    from aimo.online import OnlineRun
    from aimo.vote import VoteSettings

    cfg = load(tmp_path, f"online: {{run_dir: {tmp_path / 'run'}}}\n")
    online = OnlineRun(cfg)  # the engine starts on start() or warm(), not here
    params, run = online.params(), config.online_config(cfg)
    assert params == dict(config.engine_params(run), scheduler=dict(run["scheduler"], mode="free"))
    assert online.vote == VoteSettings.of(run["vote"])


def test_a_bad_online_scheduler_key_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"online\.scheduler\.waves.*rul"):
        load(tmp_path, "online: {scheduler: {waves: {rul: esc}}}\n")
    with pytest.raises(ValueError, match=r"online\.scheduler\.waves\.rule"):
        load(tmp_path, "online: {scheduler: {waves: {rule: sometimes}}}\n")


def test_engine_params_are_the_engine_sections():
    cfg = config.load([ROOT / "config.yaml"])
    assert set(config.engine_params(cfg)) == set(config.ENGINE_KEYS)
    assert "samples" in config.ENGINE_KEYS and "online" not in config.ENGINE_KEYS


# Configs that validate key by key and then fail (or waste) every problem: load stops them with
# one line naming the key(s).
@pytest.mark.parametrize(
    "overlay, message",
    [
        ("online: {min_s: 300, max_s: 240}", r"online\.min_s \(300\) > online\.max_s \(240\)"),
        (
            "online: {reserve_s: 300, max_s: 240}",
            r"online\.reserve_s \(300\) > online\.max_s \(240\)",
        ),
        ("online: {budget_s: 100}", r"online\.min_s \(150\) > online\.budget_s \(100\)"),
        (
            "online: {budget_s: 5, tail_s: 5, min_s: 1, reserve_s: 1}",
            r"online\.tail_s \(5\) >= online\.budget_s \(5\)",
        ),
        (
            "sampling: {max_tokens: 4096}",
            r"sampling\.max_tokens \(4096\) >= engine\.max_model_len \(4096\)",
        ),
        (
            "samples: {n: 6, shard_size: 4}",
            r"samples\.n=6 is not a multiple of samples\.shard_size=4",
        ),
        (
            "engine: {backend: openai}",
            r"scheduler\.mode deterministic needs engine\.backend vllm.*set scheduler\.mode: free",
        ),
        # YAML's .nan passes every bound of the schema
        ("vote: {weights: {invalid: .nan}}", r"vote\.weights\.invalid: nan is not a finite"),
        ("online: {max_s: .inf}", r"online\.max_s: inf is not a finite"),
        # JSON Schema takes 2.0 for an integer; the runs' range() does not
        ("samples: {n: 4.0}", r"samples\.n: 4\.0 is not an integer"),
        (
            "online: {scheduler: {waves: {size: 2.0}}}",
            r"online\.scheduler\.waves\.size: 2\.0 is not an integer",
        ),
    ],
)
def test_related_keys_are_cross_checked(tmp_path, overlay, message):
    with pytest.raises(ValueError, match=message) as err:
        load(tmp_path, overlay + "\n")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "overlay, key",
    [
        ("vote: {weights: {invalid: -1}}", r"vote\.weights\.invalid: -1 is less than"),
        ("vote: {critque_weight: 1}", r"vote: .*'critque_weight' was unexpected"),
        ("vote: {mix: {votes: 1}}", r"vote\.mix: .*'votes' was unexpected"),
        ("critique: {weight: 1.0}", r"critique: .*'weight' was unexpected"),  # h100's old key
        ("bogus: 1", r"config: .*'bogus' was unexpected"),
    ],
)
def test_a_bad_vote_setting_or_unknown_key_stops_load_in_one_line(tmp_path, overlay, key):
    with pytest.raises(ValueError, match=key) as err:
        load(tmp_path, overlay + "\n")
    assert "\n" not in str(err.value) and "overlay.yaml" in str(err.value)


def test_check_builds_the_vote_settings_and_names_the_key():
    """What the schema lets through (a config given to check without it), the vote settings
    refuse at start-up, not at the first vote."""
    good = config.load([ROOT / "config.yaml"])
    for change, key in [
        (lambda c: c["vote"]["weights"].update(invalid=-1), "vote.weights.invalid: "),
        (lambda c: c["vote"].update(critque_weight=1), "vote.critque_weight: unknown"),
        (lambda c: c["vote"].update(filter_keep=2), "vote.filter_keep: "),
        (
            lambda c: c["online"]["vote"].update(count_cancelled="yes"),
            "online.vote.count_cancelled: ",
        ),
    ]:
        cfg = copy.deepcopy(good)
        change(cfg)
        with pytest.raises(ValueError) as err:
            config.check(cfg)
        assert str(err.value).startswith(key), err.value


def test_the_online_vote_counts_cancelled_traces_as_online_says():
    cfg = config.load([ROOT / "config.yaml"])
    assert config.online_config(cfg)["vote"] == dict(cfg["vote"], count_cancelled=True)
    batch, online = config.vote_settings(cfg)
    assert not batch.count_cancelled and online.count_cancelled
    assert online.replace(count_cancelled=False) == batch


def test_every_shipped_config_validates_and_checks():
    for extra in [
        [],
        ["config/h100.yaml"],
        ["config/kaggle.yaml"],
        ["config/qwen3.yaml"],
        ["config/gpt-oss.yaml"],
        ["tests/tiny/config.yaml"],
        ["bench/self_correction.yaml"],
        ["config/kaggle.yaml", "tests/tiny/config.yaml"],
    ]:
        cfg = config.load([ROOT / "config.yaml", *(ROOT / e for e in extra)])
        config.check(cfg)  # idempotent on a loaded config


# -- defaults, written once: in the schema -------------------------------------------------
# Keys where config.yaml deliberately states another value than the schema's default: none
# (`problems` is required, so it has no default).
DIFFERS_FROM_SCHEMA = {}


def stated(node, path=()):
    """(dotted key, value) of every value a YAML mapping states (a mapping's keys, not it)."""
    for key, item in node.items():
        if isinstance(item, dict) and item:
            yield from stated(item, (*path, key))
        else:
            yield ".".join((*path, key)), item


def test_config_yaml_states_the_schemas_defaults():
    """config.yaml is the default run and the schema's defaults are the same run: every key
    config.yaml states equals its default, so it only documents them (a config that leaves a
    key out gets the same)."""
    import yaml

    written = yaml.safe_load((ROOT / "config.yaml").read_text())
    defaults = {"problems": written["problems"]}
    config.validate(defaults)
    differ = {
        key: (value, config.value(defaults, key))
        for key, value in stated(written)
        if key != "problems" and value != config.value(defaults, key)
    }
    assert differ == DIFFERS_FROM_SCHEMA


def test_a_sections_defaults_are_the_schemas():
    assert config.defaults("samples") == {"n": 4, "shard_size": 4, "seed": 2026}
    sched = config.defaults("scheduler")
    assert sched["waves"]["rule"] == "none" and sched["prune"]["enabled"] is False
    config.defaults("sampling")["top_logprobs"] = 0  # a copy each time
    assert config.defaults("sampling")["top_logprobs"] == 5
    with pytest.raises(KeyError):
        config.defaults("no_such_section")


def test_the_code_s_own_defaults_agree_with_the_schema():
    """Where a library type has defaults of its own (used alone, without a config), they are
    the schema's."""
    from aimo import policies, scheduler
    from aimo.sandbox import Limits
    from aimo.vote import VoteSettings

    assert Limits(**config.defaults("sandbox")) == Limits()
    assert VoteSettings.of(config.defaults("vote")) == VoteSettings()
    assert policies.Policy.from_config(config.defaults("scheduler")) == policies.Policy()
    params = {k: config.defaults(k) for k in ("sampling", "tir", "engine", "scheduler")}
    options = scheduler.RunOptions.from_config(params)
    assert options == scheduler.RunOptions(
        params["sampling"], params["tir"]["max_rounds"], params["engine"]["max_model_len"]
    )


def schema_keys(node) -> set:
    """Every property name the schema has, at any depth."""
    keys = set()
    for key, sub in node.get("properties", {}).items():
        keys |= {key} | schema_keys(sub)
    return keys


# .get("<schema key>", default) in aimo/ that reads no config section, only a dict with a key
# of the same name: (file, key) -> what it reads
NOT_CONFIG = {
    ("aimo/sft.py", "learning_rate"): "a trainer log entry (evaluation entries have none)",
    ("aimo/sft.py", "name"): "the base model's SOURCE.json",
    ("aimo/sandbox/_server/sbx_fork_server.py", "seed"): "a sandbox session's seed (a message)",
    ("aimo/sandbox/_server/sbx_session.py", "seed"): "a sandbox session's seed (a message)",
    ("aimo/sandbox/_server/sbx_session.py", "keep"): "the paths a private /tmp keeps",
    ("aimo/sandbox/_server/sbx_protocol.py", "session_memory_mb"): "a session's limits, "
    "in an error text",
}


def test_aimo_reads_no_schema_key_with_a_default_of_its_own():
    """A schema key is read as section["key"]: the schema filled it in. No .get("key", x) in
    aimo/ for a key of the schema (the done-when of issue 35)."""
    import ast

    keys, found = schema_keys(config.schema()), []

    for path in sorted((ROOT / "aimo").rglob("*.py")):
        where = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text(), where)):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and len(node.args) + len(node.keywords) > 1  # a default
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value in keys
                and (where, node.args[0].value) not in NOT_CONFIG
            ):
                found.append(f"{where}:{node.lineno}: .get({node.args[0].value!r}, ...)")
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    "overlay, message",
    [
        ("online: {tir: {stop_at_answer: 1}}", r"online\.tir\.stop_at_answer: 1 is not of type"),
        ("online: {tir: {max_round: 1}}", r"online\.tir: .*'max_round' was unexpected"),
        ("online: {vote: {count_cancelled: 1}}", r"online\.vote\.count_cancelled: 1 is not"),
        ("online: {samples: {n: 0}}", r"online\.samples\.n: 0 is less than"),
    ],
)
def test_a_bad_online_section_key_is_named(tmp_path, overlay, message):
    with pytest.raises(ValueError, match=message) as err:
        load(tmp_path, overlay + "\n")
    assert "\n" not in str(err.value)
