"""The config outside Snakemake (aimo.config): keys that moved name their new place, and the
online run's scheduler is the batch one with online.scheduler over it. No engine."""

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
