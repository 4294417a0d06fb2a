"""The workflow's wiring, without running a model: lint, validation, the planned DAG."""

import re

import pytest
from conftest import overrides, planned_jobs, snakemake

pytestmark = pytest.mark.needs("workflow")


def test_lint_is_clean(workflow_copy):
    out = snakemake(workflow_copy, "--lint").stdout
    assert "Congratulations" in out, out


def test_default_plan_has_every_stage(workflow_copy):
    jobs = planned_jobs(workflow_copy)
    assert jobs == {
        "problems": 1,
        "model": 1,
        "generate": 1,
        "execute": 1,
        "vote": 1,
        "submission": 1,
        "evaluate": 1,
        "inspect": 1,
        "all": 1,
    }


def test_shards_follow_n(workflow_copy):
    jobs = planned_jobs(
        workflow_copy,
        *overrides(workflow_copy, "n12.yaml", "samples: {n: 12, shard_size: 4, seed: 1}\n"),
    )
    assert jobs["generate"] == 3 and jobs["execute"] == 3


def test_n_not_a_multiple_of_shard_size_is_a_clear_error(workflow_copy):
    proc = snakemake(
        workflow_copy,
        "-n",
        *overrides(workflow_copy, "n5.yaml", "samples: {n: 5, shard_size: 4}\n"),
        check=False,
    )
    assert proc.returncode != 0
    assert "samples.n=5 is not a multiple of samples.shard_size=4" in proc.stdout


def test_schema_rejects_a_bad_value(workflow_copy):
    proc = snakemake(
        workflow_copy,
        "-n",
        *overrides(workflow_copy, "bad.yaml", "vote: {strategy: plurality}\n"),
        check=False,
    )
    assert proc.returncode != 0 and "plurality" in proc.stdout


def test_switching_on_reflexion_and_critique_adds_their_jobs(workflow_copy):
    jobs = planned_jobs(
        workflow_copy,
        *overrides(
            workflow_copy, "on.yaml", "reflexion: {enabled: true}\ncritique: {enabled: true}\n"
        ),
    )
    assert jobs["reflexion"] == 1 and jobs["critique"] == 1 and jobs["execute"] == 3


def test_h100_config_validates_and_plans(workflow_copy):
    jobs = planned_jobs(workflow_copy, "--configfile", "config.yaml", "config/h100.yaml")
    assert jobs["generate"] == 16 and jobs["model"] == 1


def test_kaggle_config_validates_and_plans(workflow_copy):
    from aimo import config

    cfg = config.load([workflow_copy / "config.yaml", workflow_copy / "config/kaggle.yaml"])
    o = cfg["online"]
    assert o["budget_s"] == 17400 and o["expected_problems"] == 50
    assert o["samples"]["n"] == 8 and o["scheduler"]["early_stop"] == 4
    jobs = planned_jobs(workflow_copy, "--configfile", "config.yaml", "config/kaggle.yaml")
    assert jobs["generate"] == 1 and jobs["model"] == 1


def test_a_bad_online_config_names_the_key(workflow_copy):
    import pytest

    from aimo import config

    bad = workflow_copy / "bad.yaml"
    bad.write_text("online: {samples: {n: 0}}\n")
    with pytest.raises(ValueError, match="samples"):
        config.load([workflow_copy / "config.yaml", bad])
    bad.write_text("online: {budget: 5}\n")
    with pytest.raises(ValueError, match="budget"):
        config.load([workflow_copy / "config.yaml", bad])


def test_a_failing_jobs_error_reaches_the_terminal(workflow_copy):
    """The default profile shows a failed job's log, so the terminal names the bad row and
    column, not only "check log file(s) for error details"."""
    (workflow_copy / "bad.csv").write_text("id,problem\na,one\na,two\n")
    proc = snakemake(
        workflow_copy,
        "results/problems.parquet",
        "--cores",
        "1",
        *overrides(workflow_copy, "bad.yaml", "problems: bad.csv\n"),
        check=False,
    )
    assert proc.returncode != 0
    assert "bad.csv: row 2, column 'id': duplicate id 'a' (first at row 1)" in proc.stdout, (
        proc.stdout[-3000:]
    )


# The extras of pyproject.toml that each conda env of envs/ carries (on top of the core).
ENV_EXTRAS = {"base": [], "engine": ["gpu"], "model": ["model"], "sft": ["sft", "model"]}


def test_conda_envs_list_pyprojects_dependencies_and_install_no_local_path():
    """Snakemake builds an env from its own copy of the file, under .snakemake/conda/, where a
    `-e ..` names no repository: the envs hold the dependencies only (the jobs import aimo
    from the repository), the same ones pyproject.toml asks for."""
    import tomllib

    import yaml
    from conftest import ROOT

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    envs = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((ROOT / "envs").glob("*.yaml"))}
    assert set(envs) == set(ENV_EXTRAS)
    used = {
        m
        for p in (ROOT / "rules").glob("*.smk")
        for m in re.findall(r'conda:\s*"\.\./envs/(\w+)\.yaml"', p.read_text())
    }
    assert used == set(envs)
    for name, env in envs.items():
        pip = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)][0]
        assert not [r for r in pip if r.startswith(("-e", "--editable", ".", "/"))], (name, pip)
        expected = project["dependencies"] + [
            r for extra in ENV_EXTRAS[name] for r in project["optional-dependencies"][extra]
        ]
        assert sorted(pip) == sorted(expected), name
        assert "python=3.11" in env["dependencies"] and env["channels"] == ["conda-forge"]
