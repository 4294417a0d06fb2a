"""Every script in bench/ starts and parses its options (`--help`), and those that can run in
seconds without an engine or the sandbox run on tiny inputs and print their figures.

A new script is covered by the `--help` test without any change here.
"""

import importlib.util
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aimo.schemas import EXECUTIONS, PROBLEMS, TRACES

pytestmark = pytest.mark.needs("unit")

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
SCRIPTS = sorted(BENCH.glob("*.py"))


def bench(script: str, *args, timeout: float = 60) -> str:
    """Run bench/<script> with `args` from the checkout's root; its stdout (it must exit 0)."""
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{script} {args}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    return proc.stdout


def write(rows: list[dict], schema: pa.Schema, path: Path) -> Path:
    """`rows` as a Parquet file with `schema`; a column the rows leave out is null."""
    path.parent.mkdir(parents=True, exist_ok=True)
    full = [{name: r.get(name) for name in schema.names} for r in rows]
    pq.write_table(pa.Table.from_pylist(full, schema=schema), path)
    return path


def traces(n_problems: int, n_samples: int, seed: int = 0) -> tuple[list, list, dict]:
    """Generate trace rows (answers, tokens, confidences, rounds and code blocks), their
    execution rows, and the problems' right answers."""
    rng = random.Random(seed)
    truth = {f"p{i}": 10 + i for i in range(n_problems)}
    trows, erows = [], []
    for pid, answer in truth.items():
        for j in range(n_samples):
            tokens = rng.randint(60, 400)
            rounds = [tokens // 2, tokens - tokens // 2]
            trows.append(
                {
                    "trace_id": f"{pid}:{j}",
                    "problem_id": pid,
                    "sample": j,
                    "seed": j,
                    "source": "generate",
                    "finish_reason": "stop",
                    "answer_int": answer if rng.random() < 0.6 else rng.choice([1, 2, 3]),
                    "mean_logprob": -rng.random(),
                    "mean_entropy": rng.random(),
                    "tail_entropy": rng.random(),
                    "min_conf": rng.uniform(0.5, 2),
                    "tail_conf": rng.uniform(1, 4),
                    "window_conf": [rng.uniform(0.5, 4) for _ in range(tokens // 8)],
                    "prompt_tokens": 100,
                    "completion_tokens": tokens,
                    "round_tokens": rounds,
                    "code_blocks": [
                        {"code": "print(1)", "output": "1\n", "status": "ok", "wall_s": 0.05}
                    ],
                }
            )
            erows.append(
                {
                    "trace_id": f"{pid}:{j}",
                    "problem_id": pid,
                    "exec_status": rng.choice(["ok", "error"]),
                    "agrees": rng.random() < 0.5,
                }
            )
    return trows, erows, truth


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help(script):
    """`--help` exits 0 and is the script's own argparse help (nothing run, nothing heavy
    imported before the options are parsed)."""
    out = bench(script.name, "--help", timeout=30)
    assert out.startswith(f"usage: {script.name}"), out[:500]


def test_default_run_passes_other_arguments_to_snakemake(monkeypatch, tmp_path, capsys):
    """default_run.py hands every argument but --help to snakemake, in order, and prints its
    figures from the shards (none here: zeros)."""
    spec = importlib.util.spec_from_file_location("default_run", BENCH / "default_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls = []
    # its own name for subprocess, not the module everyone shares
    monkeypatch.setattr(
        module, "subprocess", SimpleNamespace(run=lambda cmd, **kw: calls.append(cmd))
    )
    monkeypatch.setattr(module, "ROOT", tmp_path)
    extra = ["--configfile", "config.yaml", "config/h100.yaml", "-n", "--forcerun", "vote"]
    module.main(module.parse(extra))
    snakemake = [sys.executable, "-m", "snakemake", "--cores", "all", "--forcerun", "problems"]
    assert calls == [snakemake + extra]
    assert "shards read:               0" in capsys.readouterr().out


def test_vote_scale_small():
    """The vote at scale on 20 problems x 16 samples: DuckDB and pandas agree, the evaluation
    runs over the synthetic shards (every column the vote reads is there)."""
    out = bench(
        "vote_scale.py",
        *("--problems", 20, "--samples", 16, "--shards", 2, "--repeat", 1, "--n-subsets", 2),
    )
    assert "note:" not in out, out  # no column the vote reads is left null
    assert "duckdb weighted vote (checks + query): wall" in out, out
    assert "same answers, scores and votes for all 20 problems" in out, out
    assert "evaluation (2 subsets per k" in out and "full-N accuracy {'weighted':" in out, out


def test_confidence_cost_small():
    out = bench("confidence_cost.py", "--tokens", 2000)
    assert "us/token" in out and "the confidence fold is" in out, out


def test_tir_simulate_small(tmp_path):
    """Lock-step against continuous batching, from a generated shard with round_tokens."""
    trows, _, _ = traces(2, 4)
    shard = write(trows, TRACES, tmp_path / "shard-000.parquet")
    out = bench("tir_simulate.py", shard, "--n", "2,4", "--problems", 2)
    assert out.startswith("8 real traces from 1 shard(s)"), out
    for n in (2, 4):
        assert any(
            line.startswith(f"| {n} |") and line.endswith("x |") for line in out.splitlines()
        ), out


def test_replay_small(tmp_path):
    """Every policy replayed over a generated pool laid out as bench/vote_bench.py caches it,
    beside the default SQL vote."""
    trows, erows, truth = traces(3, 8)
    pool = tmp_path / "pool"
    write(
        [{"problem_id": p, "problem": "synthetic", "answer": a} for p, a in truth.items()],
        PROBLEMS,
        pool / "problems.parquet",
    )
    write(trows, TRACES, pool / "traces" / "chunk-000.parquet")
    write(erows, EXECUTIONS, pool / "executions" / "chunk-000.parquet")
    out = bench("replay.py", "--pool", pool, "--replays", 2, "--n", 8, 4)
    assert "pool " in out and "3 problems, 1 chunks" in out, out
    for n in (8, 4):
        assert f"\nN = {n}: 3 problems x 2 replays; default vote" in out, out
    assert out.count("\nesc2 ") == 2 and out.count("\nfilter_min90 ") == 2, out


def test_stream_replay_small(tmp_path):
    """Widths replayed with a deadline over a generated pool: a wider setting gets fewer ticks
    of the same seconds; a stream draws more samples than all 8 at once, never more than N."""
    trows, _, truth = traces(3, 16)
    pool = tmp_path / "pool"
    problems = [{"problem_id": p, "problem": "synthetic", "answer": a} for p, a in truth.items()]
    write(problems, PROBLEMS, pool / "problems.parquet")
    write(trows, TRACES, pool / "traces" / "chunk-000.parquet")
    out = bench("stream_replay.py", "--pool", pool, "--replays", 3, "--budget", 600)
    rows = {
        cells[0]: cells
        for line in out.splitlines()
        if line.startswith("| all") or line.startswith("| w")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    assert set(rows) == {"all", "w8", "w16", "w32"}, out
    assert int(rows["w32"][1]) < int(rows["w16"][1]) < int(rows["w8"][1]), out  # ticks
    assert float(rows["all"][4]) <= 8 and 8 < float(rows["w8"][4]) <= 16, out
    assert out.count("/") > 3 * 4, out  # the per-problem cells in sample order


@pytest.mark.needs("workflow")
def test_plan_scale_small():
    """Snakemake's plan (a dry run in a copy of the workflow) of 2 problems x 8 samples: about 2
    s, no engine, no sandbox."""
    out = bench("plan_scale.py", "--problems", 2, "--samples", 8, "--shard-size", 4, "--repeat", 1)
    assert "plan of 2 problems x 8 samples, shard_size 4 (2 shards per stage)" in out, out
    assert "jobs planned:" in out and "generate 2" in out and "snakemake -n: median" in out, out
