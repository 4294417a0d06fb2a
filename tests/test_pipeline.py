"""The whole DAG on the tiny configuration, with a real vLLM engine on SmolLM2-135M-Instruct.

Asserts files, schemas, metadata and what reruns, not accuracy. One run is shared by the
tests of this module (a module-scoped fixture): the engine starts a few times, minutes in all.
"""

import csv
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import SNAKEMAKE, copy_workflow, overrides, planned_jobs, snakemake

from aimo.schemas import (
    EXEC_STATUSES,
    EXECUTIONS,
    NO_CODE,
    OK,
    PROBLEMS,
    SANDBOX_STATUSES,
    TRACES,
    VOTES,
)
from aimo.tables import read_metadata, read_table
from aimo.vote import STRATEGIES

pytestmark = pytest.mark.needs("engine")

TINY = ["--configfile", "config.yaml", "tiny.yaml"]


def planned_outputs(dry_run):
    """Every output file of the jobs a dry run lists (their `output:` lines). Snakemake 8+
    prints the job stats table before the job list as well as after it, so the outputs are
    read from those lines, not from a slice of the text."""
    return {
        path
        for line in dry_run.splitlines()
        if line.lstrip().startswith("output:")
        for path in line.split("output:", 1)[1].strip().split(", ")
    }


def test_planned_outputs_sees_a_planned_shard(workflow_copy):
    """The check below can fail: in a fresh workflow both shards are planned, and seen."""
    args = overrides(workflow_copy, "n4.yaml", "samples: {n: 4, shard_size: 2, seed: 7}\n")
    out = snakemake(workflow_copy, "-n", *TINY, *args[2:]).stdout
    outputs = planned_outputs(out)
    assert {"results/generate/shard-0.parquet", "results/generate/shard-1.parquet"} <= outputs
    assert "results/execute/generate/shard-0.parquet" in outputs


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("tiny"))
    proc = snakemake(workdir, "--cores", "2", *TINY)
    keep = os.environ.get("AIMO_KEEP_TINY_RUN")
    if keep:  # CI: .ci/slurm.sh compares its Slurm run with this one, before any test reruns it
        shutil.copytree(workdir / "results", Path(keep) / "results")
        log = Path(keep) / "local.log"  # last and whole: .ci/slurm.sh, beside, waits for it
        log.with_suffix(".tmp").write_text(proc.stdout)
        log.with_suffix(".tmp").replace(log)
    return workdir, proc.stdout


def test_every_stage_wrote_its_files(tiny_run):
    workdir, log = tiny_run
    res = workdir / "results"
    assert read_table(res / "problems.parquet", PROBLEMS).num_rows == 2
    traces = read_table(res / "generate/shard-0.parquet", TRACES)
    assert traces.num_rows == 4  # 2 problems x 2 samples
    assert sorted(traces.column("trace_id").to_pylist()) == [
        "divisors360:0",
        "divisors360:1",
        "pow2mod7:0",
        "pow2mod7:1",
    ]
    assert len(set(traces.column("seed").to_pylist())) == 4
    assert all(n > 0 for n in traces.column("completion_tokens").to_pylist())
    assert all(n > 0 for n in traces.column("prompt_tokens").to_pylist())
    execs = read_table(res / "execute/generate/shard-0.parquet", EXECUTIONS)
    assert set(execs.column("trace_id").to_pylist()) == set(traces.column("trace_id").to_pylist())
    assert set(execs.column("exec_status").to_pylist()) <= set(EXEC_STATUSES)
    for stage in ("reflexion", "critique"):
        rows = read_table(res / f"{stage}/shard-0.parquet", TRACES).to_pylist()
        assert all(r["source"] == stage and r["parent_id"] for r in rows)
        read_table(res / f"execute/{stage}/shard-0.parquet", EXECUTIONS)
    votes = read_table(res / "vote/votes.parquet", VOTES)
    assert sorted(votes.column("problem_id").to_pylist()) == ["divisors360", "pow2mod7"]
    with open(res / "submission.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == ["divisors360", "pow2mod7"]
    assert all(0 <= int(r["answer"]) <= 99999 for r in rows)
    for name in (
        "metrics.parquet",
        "per_problem.parquet",
        "report.md",
        "maj_at_k.png",
        "accuracy_vs_tokens.png",
        "selection.png",
    ):
        assert (res / "evaluate" / name).stat().st_size > 0, name
    report = (res / "evaluate/report.md").read_text()
    for strategy in STRATEGIES:  # every strategy side by side, with its selection loss
        assert f"\n| {strategy} | " in report, strategy
    assert "## Selection: each vote against the best possible pick" in report
    assert (workdir / "logs/generate/shard-0.log").stat().st_size > 0
    assert (workdir / "benchmarks/generate/shard-0.tsv").is_file()
    assert "traces done" in log  # progress reached the terminal


def test_shard_metadata_names_model_engine_and_sampling(tiny_run):
    workdir, _ = tiny_run
    meta = read_metadata(workdir / "results/generate/shard-0.parquet")
    assert meta["model"]["name"] == "smollm2-135m-instruct"
    assert meta["model"]["sha256"]
    assert meta["engine"].startswith("vllm")
    assert meta["dtype"] in ("bfloat16", "float32")
    assert meta["sampling"] == {
        "temperature": 0.8,
        "top_p": 0.95,
        "max_tokens": 160,
        "top_logprobs": 5,
        "tail_tokens": 256,
        "conf_window": 64,
        "conf_stride": 8,
    }
    assert meta["shard"] == 0 and meta["samples"] == [0, 2]
    assert meta["sample_seed"] == 7 and meta["scheduler"] == {
        "max_in_flight": None,
        "early_stop": None,
        "mode": "deterministic",
        "rejoin_steps": 4,
        "waves": {
            "size": None,
            "rule": "none",
            "confidence": 0.95,
            "window": 4,
            "finish_by_deadline": True,
        },
        "prune": {"enabled": False, "warmup": 4, "keep": 0.9, "threshold": None},
    }
    assert meta["steps"] > 0 and meta["wall_s"] > 0  # the scheduler's own figures
    rows = read_table(workdir / "results/generate/shard-0.parquet", TRACES).to_pylist()
    assert all(sum(r["round_tokens"]) == r["completion_tokens"] for r in rows)
    # entropies from the engine's top-5 log-probabilities, at most ln 5 nats
    assert all(
        0 <= r["mean_entropy"] <= 1.61 and 0 <= r["tail_entropy"] <= 1.61
        for r in rows
        if r["completion_tokens"]
    )


def test_the_model_directory_records_its_licence(tiny_run):
    workdir, _ = tiny_run
    model = workdir / "resources/models/smollm2-135m-instruct"
    assert "Apache" in (model / "LICENSE.upstream").read_text()
    assert (model / "model.safetensors").is_file()


def test_nothing_reruns_when_nothing_changed(tiny_run):
    workdir, _ = tiny_run
    assert planned_jobs(workdir, *TINY) == {}


@pytest.mark.parametrize(
    "overlay",
    [
        "vote: {weights: {invalid: 0, clean_code: 3, other: 1}}\n",
        "vote: {critique_weight: 0.5, critique_replace: true, mix: {share: 1.0}}\n",
    ],
)
def test_changing_vote_weights_reruns_only_vote_and_after(tiny_run, overlay):
    workdir, _ = tiny_run
    args = overrides(workdir, "weights.yaml", overlay)
    jobs = planned_jobs(workdir, "--configfile", "config.yaml", "tiny.yaml", *args[2:])
    assert set(jobs) == {"vote", "submission", "evaluate", "inspect", "all"}, jobs


def test_raising_n_adds_a_shard_and_keeps_the_old_one(tiny_run):
    workdir, _ = tiny_run
    args = overrides(workdir, "n4.yaml", "samples: {n: 4, shard_size: 2, seed: 7}\n")
    out = snakemake(workdir, "-n", "--configfile", "config.yaml", "tiny.yaml", *args[2:]).stdout
    outputs = planned_outputs(out)
    assert "results/generate/shard-1.parquet" in outputs, out
    assert "results/generate/shard-0.parquet" not in outputs, out
    jobs = planned_jobs(workdir, "--configfile", "config.yaml", "tiny.yaml", *args[2:])
    assert jobs["generate"] == 1


def start_generate(workdir, n, shard):
    """Snakemake making generate shard `shard` of `n` samples (shards of 2), in the background,
    in its own session; returns the process, the target and its log."""
    overrides(workdir, f"n{n}.yaml", f"samples: {{n: {n}, shard_size: 2, seed: 7}}\n")
    target = f"results/generate/shard-{shard}.parquet"
    # the target goes before --configfile, which takes every argument after it
    proc = subprocess.Popen(
        [
            *SNAKEMAKE,
            target,
            "--cores",
            "2",
            "--configfile",
            "config.yaml",
            "tiny.yaml",
            f"n{n}.yaml",
        ],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return proc, workdir / target, workdir / f"logs/generate/shard-{shard}.log"


def wait_for_log(proc, log, pattern, interval_s=1.0, timeout_s=600):
    """The first match of `pattern` in `log` while `proc` runs; None if it ends first."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None:
        found = re.search(pattern, log.read_text(errors="replace") if log.is_file() else "")
        if found:
            return found
        time.sleep(interval_s)
    return None


def test_a_killed_generate_job_leaves_no_partial_shard(tiny_run):
    workdir, _ = tiny_run
    proc, target, log = start_generate(workdir, 4, 1)
    # the job is midway once the engine is starting (the tiny model generates too fast to
    # catch mid-round; a write in progress goes to a temporary name anyway)
    started = wait_for_log(proc, log, r"aimo\.engine")
    assert started and proc.poll() is None, "the job ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(2)
    shard_dir = workdir / "results/generate"
    assert not target.exists()
    assert sorted(p.name for p in shard_dir.iterdir()) == ["shard-0.parquet"]
    pq.read_table(shard_dir / "shard-0.parquet")  # the old shard is intact


def test_a_dead_engine_process_ends_the_job_instead_of_hanging(tiny_run):
    """With an engine process gone (the OOM killer, say), vLLM's generate may wait forever;
    the engine watch ends the job instead, saying why. Killed here as the OOM killer would
    (SIGKILL), before the first generate call: the model's worker (the deterministic
    schedule keeps the engine core in the job's own process)."""
    workdir, _ = tiny_run
    proc, target, log = start_generate(workdir, 6, 2)
    found = wait_for_log(proc, log, r"(VLLM::\w+) \(pid (\d+)\)", interval_s=0.2)
    name, core = (found.group(1), int(found.group(2))) if found else (None, None)
    try:
        assert core, "the job ended before its engine could be killed"
        os.kill(core, signal.SIGKILL)
        rc = proc.wait(timeout=180)  # without the watch: a hang, failed here
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert rc != 0
    assert f"{name} (pid {core}) died" in log.read_text(errors="replace")
    assert not target.exists()


def test_execute_and_reflexion_report_the_first_failing_block():
    """One failure policy: a trace's first failing block, the root cause (later blocks fail
    because it did). Execute reports it, and reflexion repairs a repair attempt with it."""
    from aimo.executions import executions_from_blocks
    from aimo.reflexion import failure

    def block(status, output):
        return {"code": "...", "output": output, "status": status, "wall_s": 0.1}

    trace = {
        "trace_id": "p:0:r1",
        "problem_id": "p",
        "answer": "3",
        "answer_int": 3,
        "text": "",
        "code_blocks": [
            block("ok", "1\n"),
            block("error", "ZeroDivisionError: division by zero"),
            block("error", "NameError: name 'x' is not defined"),
            block("timeout", "TimeoutError"),
        ],
    }
    row = executions_from_blocks([trace])[0]
    assert (row["exec_status"], row["exec_error"]) == (
        "error",
        "ZeroDivisionError: division by zero",
    )
    why = failure(trace, None, None, 500)  # a repair attempt, judged by its own blocks
    assert "ZeroDivisionError" in why and "NameError" not in why and "Timeout" not in why
    assert why == failure(trace, row["exec_status"], row["exec_error"], 500)  # as a generate trace


def test_status_words_are_the_sandbox_s_plus_no_code():
    from aimo.executions import executions_from_blocks
    from aimo.reflexion import FAILED

    assert EXEC_STATUSES == SANDBOX_STATUSES + (NO_CODE,) and OK in SANDBOX_STATUSES
    assert FAILED == set(SANDBOX_STATUSES) - {OK}
    no_code = {"trace_id": "p:1", "problem_id": "p", "answer_int": None, "code_blocks": []}
    assert executions_from_blocks([no_code])[0]["exec_status"] == NO_CODE


def test_the_inspector_site_opens_in_a_browser(tiny_run, tmp_path):
    """The default run's trace inspector (results/inspect), opened from disk in chromium: every
    problem, and on its pages every trace, each flag it raises and each code output."""
    from test_inspect import check_site_in_browser, screenshot

    from aimo.inspector import flags

    workdir, _ = tiny_run
    site = workdir / "results/inspect"
    doms = check_site_in_browser(site, tmp_path, n_problems=2)
    traces = [
        r
        for stage in ("generate", "reflexion", "critique")
        for r in read_table(workdir / f"results/{stage}/shard-0.parquet", TRACES).to_pylist()
    ]
    for pid in ("divisors360", "pow2mod7"):
        dom, rows = doms[f"{pid}.html"], [r for r in traces if r["problem_id"] == pid]
        assert dom.count('<section class="card"') == len(rows)
        for r in rows:
            for name in flags.trace_flags(r, None, None):
                assert f">{flags.BY_NAME[name].label}</span>" in dom, (r["trace_id"], name)
            for b in r["code_blocks"]:
                assert f"output: {b['status']}" in dom, r["trace_id"]
    screenshot(tmp_path, site / "problems/pow2mod7.html", "pow2mod7.png")


def test_forcerun_generate_rebuilds_the_same_shard(tiny_run):
    """Same inputs, same files: generate run again on its unchanged inputs rebuilds shard 0
    row for row (every column but the measured seconds), and it is a new file. Last in this
    module: the rerun leaves the later stages out of date."""
    from aimo.tables import comparable_rows

    workdir, _ = tiny_run
    shard = workdir / "results/generate/shard-0.parquet"
    before, mtime = comparable_rows(shard), shard.stat().st_mtime_ns
    snakemake(
        workdir, "results/generate/shard-0.parquet", "--cores", "2", "--forcerun", "generate", *TINY
    )
    assert shard.stat().st_mtime_ns != mtime
    assert comparable_rows(shard) == before
