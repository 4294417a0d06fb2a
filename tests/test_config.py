"""The config outside Snakemake (aimo.config): keys that moved name their new place, and the
online run's scheduler is the batch one with online.scheduler over it. No engine."""

import copy
from pathlib import Path

import pytest

from aimo import config

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
    sched = config.online_scheduler(cfg)
    assert sched["early_stop"] is None and sched["waves"]["rule"] == "esc"
    assert sched["waves"]["window"] == cfg["scheduler"]["waves"]["window"]  # kept
    assert sched["rejoin_steps"] == cfg["scheduler"]["rejoin_steps"]
    assert cfg["scheduler"]["waves"]["rule"] == "none"  # the batch workflow's is untouched


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
        (lambda c: c["online"].update(count_cancelled="yes"), "online.count_cancelled: "),
    ]:
        cfg = copy.deepcopy(good)
        change(cfg)
        with pytest.raises(ValueError) as err:
            config.check(cfg)
        assert str(err.value).startswith(key), err.value


def test_the_online_vote_counts_cancelled_traces_as_online_says():
    cfg = config.load([ROOT / "config.yaml"])
    assert config.online_vote(cfg) == dict(cfg["vote"], count_cancelled=True)
    batch, online = config.vote_settings(cfg)
    assert not batch.count_cancelled and online.count_cancelled
    assert online.replace(count_cancelled=False) == batch


def test_every_shipped_config_validates_and_checks():
    for extra in [
        [],
        ["config/h100.yaml"],
        ["config/kaggle.yaml"],
        ["tests/tiny/config.yaml"],
        ["bench/self_correction.yaml"],
        ["config/kaggle.yaml", "tests/tiny/config.yaml"],
    ]:
        cfg = config.load([ROOT / "config.yaml", *(ROOT / e for e in extra)])
        config.check(cfg)  # idempotent on a loaded config
