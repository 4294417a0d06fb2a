"""Scale benchmark of the vote and the evaluation: 10 million candidate rows.

Writes synthetic trace and execution shards (every column the vote and the evaluation read,
with the TRACES / EXECUTIONS types) into a temporary folder or --out, then in this process:

1. times the DuckDB weighted vote (aimo.vote.vote_table: input checks + query) --repeat times;
2. times the same vote as a pandas group-by (read, merge, weight, group, rank) and asserts that
   both give the same answer, score and votes for every problem;
3. times the evaluation (aimo.evaluate.evaluate) with --n-subsets random subsets per k.

    .venv/bin/python bench/vote_scale.py                      # 1000 problems x 10000 samples
    .venv/bin/python bench/vote_scale.py --problems 110 --samples 91000 --n-subsets 20

Target: the vote in under 2 s and faster than pandas. Figures are in docs/answers_and_votes.md.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aimo.schemas import CANCELLED, EXECUTIONS, PROBLEMS, TRACES  # noqa: E402
from aimo.tables import write_table  # noqa: E402
from aimo.vote import (  # noqa: E402
    DEFAULT_WEIGHTS,
    EXECUTION_COLUMNS,
    OPTIONAL_TRACE_COLUMNS,
    STRATEGIES,
    TRACE_COLUMNS,
    vote_table,
)

# Every column the vote and the evaluation read (aimo/vote.py declares them; the evaluation adds
# the optional ones), so a column the vote starts reading is written here too.
TRACE_COLS = list(dict.fromkeys([*TRACE_COLUMNS, *OPTIONAL_TRACE_COLUMNS]))
EXEC_COLS = list(dict.fromkeys(["trace_id", "problem_id", *EXECUTION_COLUMNS]))
# share of the traces with each finish_reason: some cancelled by the scheduler (they do not vote
# unless vote.count_cancelled), some pruned (never vote)
FINISH = {"stop": 0.8, "length": 0.1, "early_stop": 0.06, "pruned": 0.04}


def subschema(schema, names):
    return pa.schema([schema.field(n) for n in names])


def _trace_columns(rng, n, pid, tid, j, answer):
    """The synthetic values of every trace column the vote and the evaluation read; a column
    without a generator here is written as nulls (and named: the figures then ignore it)."""
    unknown = lambda x: rng.random(n) < x  # noqa: E731  (a mask: that share of rows null)
    known = {
        "trace_id": lambda: tid,
        "problem_id": lambda: pid,
        "sample": lambda: pa.array(j, pa.int32()),
        "source": lambda: pa.array(np.full(n, "generate")),
        "parent_id": lambda: pa.nulls(n, pa.string()),
        "finish_reason": lambda: pa.array(
            rng.choice(np.array(list(FINISH)), n, p=list(FINISH.values()))
        ),
        "answer_int": lambda: pa.array(answer, pa.int64(), mask=unknown(0.05)),
        "mean_logprob": lambda: pa.array(rng.normal(-0.3, 0.1, n)),
        # nats of the top-k distribution; a few traces without log-probabilities
        "mean_entropy": lambda: pa.array(rng.gamma(2.0, 0.2, n), mask=unknown(0.02)),
        "tail_entropy": lambda: pa.array(rng.gamma(2.0, 0.3, n), mask=unknown(0.02)),
        # DeepConf confidence: minus the mean top-k log-probability of a window
        "min_conf": lambda: pa.array(rng.uniform(0.5, 3.0, n), mask=unknown(0.02)),
        "tail_conf": lambda: pa.array(rng.uniform(1.0, 6.0, n), mask=unknown(0.02)),
        "prompt_tokens": lambda: pa.array(rng.integers(100, 400, n), pa.int32()),
        "completion_tokens": lambda: pa.array(rng.integers(500, 8000, n), pa.int32()),
    }
    cols = {}
    for name in TRACE_COLS:
        if name in known:
            cols[name] = known[name]()
        else:
            print(f"note: no synthetic values for trace column {name!r}: written as nulls")
            cols[name] = pa.nulls(n, TRACES.field(name).type)
    return cols


def make_data(out: Path, n_problems: int, n_samples: int, n_shards: int, seed: int = 0):
    """Problems with answers, and n_problems * n_samples generate traces with executions.

    Per problem: the correct answer with probability U(0.02, 0.5), else one of 40 wrong answers
    (Zipf-distributed popularity); 5% of answers missing; finish reasons as in FINISH (10%
    cancelled or pruned); entropies and confidences random, 2% unknown; executions ok / error /
    no_code at 60 / 20 / 20%, agreeing half of the time. Shards hold whole problems, as the
    workflow's do.
    """
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    correct = rng.integers(0, 100000, n_problems)
    p_correct = rng.uniform(0.02, 0.5, n_problems)
    pool = rng.integers(0, 100000, (n_problems, 40))
    pids = pa.array([f"p{i:05d}" for i in range(n_problems)])
    write_table(
        pa.table(
            {
                "problem_id": pids,
                "problem": pa.array(["synthetic"] * n_problems),
                "answer": pa.array(correct, pa.int64()),
            }
        ),
        out / "problems.parquet",
        PROBLEMS,
    )
    tschema, eschema = subschema(TRACES, TRACE_COLS), subschema(EXECUTIONS, EXEC_COLS)
    traces, execs = [], []
    bounds = np.linspace(0, n_problems, n_shards + 1).astype(int)
    for s in range(n_shards):
        p = np.repeat(np.arange(bounds[s], bounds[s + 1]), n_samples)
        j = np.tile(np.arange(n_samples), bounds[s + 1] - bounds[s])
        n = len(p)
        if n == 0:
            continue
        wrong = pool[p, np.minimum(rng.zipf(1.5, n) - 1, 39)]
        answer = np.where(rng.random(n) < p_correct[p], correct[p], wrong)
        pid = pc.take(pids, pa.array(p))
        tid = pc.binary_join_element_wise(pid, pc.cast(pa.array(j), pa.string()), ":")
        t = pa.table(_trace_columns(rng, n, pid, tid, j, answer), schema=tschema)
        e = {
            "trace_id": tid,
            "problem_id": pid,
            "exec_status": pa.array(
                rng.choice(np.array(["ok", "error", "no_code"]), n, p=[0.6, 0.2, 0.2])
            ),
            "agrees": pa.array(rng.random(n) < 0.5),
        }
        for name in set(EXEC_COLS) - set(e):
            print(f"note: no synthetic values for execution column {name!r}: written as nulls")
            e[name] = pa.nulls(n, EXECUTIONS.field(name).type)
        e = pa.table({name: e[name] for name in EXEC_COLS}, schema=eschema)
        traces.append(out / f"traces_{s:03d}.parquet")
        execs.append(out / f"executions_{s:03d}.parquet")
        pq.write_table(t, traces[-1])
        pq.write_table(e, execs[-1])
    return out / "problems.parquet", traces, execs


def pandas_weighted(problems_path, traces, execs, weights=DEFAULT_WEIGHTS, critique_weight=1.0):
    """The weighted vote as a pandas group-by: the same rules and tie-break as rank.sql, with the
    default settings (cancelled traces left out, no critique replacement)."""
    import pandas as pd

    t = pd.concat(
        [
            pd.read_parquet(
                p, columns=["trace_id", "problem_id", "source", "finish_reason", "answer_int"]
            )
            for p in traces
        ]
    )
    # a trace the scheduler cancelled or pruned does not vote (vote.count_cancelled off)
    t = t[~t["finish_reason"].isin(CANCELLED)]
    e = pd.concat([pd.read_parquet(p, columns=["trace_id", "exec_status"]) for p in execs])
    clean = e.loc[e["exec_status"] == "ok", "trace_id"]
    t = t[t["answer_int"].notna()]
    valid = t["answer_int"].between(0, 99999)
    is_clean = t["trace_id"].isin(clean)  # a hash-table lookup in pandas' C code
    w = np.where(
        valid, np.where(is_clean, weights["clean_code"], weights["other"]), weights["invalid"]
    )
    t = t.assign(w=w * np.where(t["source"] == "critique", critique_weight, 1.0))
    t = t[t["w"] > 0]
    g = (
        t.groupby(["problem_id", "answer_int"], sort=False)
        .agg(score=("w", "sum"), votes=("w", "size"))
        .reset_index()
    )
    g = g.sort_values(
        ["problem_id", "score", "votes", "answer_int"], ascending=[True, False, False, True]
    )
    top = g.drop_duplicates("problem_id")
    problems = pd.read_parquet(problems_path, columns=["problem_id"])
    return problems.merge(top, on="problem_id", how="left").set_index("problem_id")


def cpu_s():
    """CPU seconds of this process, every thread (DuckDB's included), user + system."""
    t = os.times()
    return t.user + t.system


def timed(fn, repeat):
    """(result, wall times, CPU times): CPU time is less disturbed by other load."""
    times, cpus, result = [], [], None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), cpu_s()
        result = fn()
        times.append(time.perf_counter() - t0)
        cpus.append(cpu_s() - c0)
    return result, times, cpus


def fmt(times, cpus):
    return (
        f"wall min {min(times):.2f} s, median {statistics.median(times):.2f} s; "
        f"CPU min {min(cpus):.2f} s ({len(times)} runs)"
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--out",
        type=Path,
        help="folder for the shards (default: a temporary one, removed at the end)",
    )
    ap.add_argument("--problems", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=10000, help="samples per problem")
    ap.add_argument("--shards", type=int, default=10)
    ap.add_argument("--reuse", action="store_true", help="reuse the shards already in --out")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of the DuckDB vote")
    ap.add_argument("--pandas-repeat", type=int, default=1, help="timed runs of the pandas vote")
    ap.add_argument("--n-subsets", type=int, default=200, help="evaluation subsets per k")
    ap.add_argument("--skip-pandas", action="store_true")
    ap.add_argument("--skip-eval", action="store_true")
    args = ap.parse_args(argv)

    tmp = None
    out = args.out
    if out is None:
        tmp = tempfile.mkdtemp(prefix="aimo_vote_scale_")
        out = Path(tmp)
    try:
        t0 = time.perf_counter()
        if args.reuse and (out / "problems.parquet").is_file():
            problems = out / "problems.parquet"
            traces = sorted(out.glob("traces_*.parquet"))
            execs = sorted(out.glob("executions_*.parquet"))
        else:
            problems, traces, execs = make_data(out, args.problems, args.samples, args.shards)
        n_rows = sum(pq.read_metadata(p).num_rows for p in traces)
        print(
            f"data: {args.problems} problems x {args.samples} samples = {n_rows:,} candidate "
            f"rows in {len(traces)} trace + {len(execs)} execution shards "
            f"({sum(os.path.getsize(p) for p in traces + execs) / 2**20:.0f} MiB), "
            f"ready in {time.perf_counter() - t0:.1f} s"
        )
        print(f"machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}")

        duck, times, cpus = timed(
            lambda: vote_table(problems, traces, execs, strategies=["weighted"]), args.repeat
        )
        print(f"duckdb weighted vote (checks + query): {fmt(times, cpus)}")
        duck_t = min(times)

        if not args.skip_pandas:
            pand, ptimes, pcpus = timed(
                lambda: pandas_weighted(problems, traces, execs), args.pandas_repeat
            )
            print(f"pandas weighted vote (read + merge + group-by): {fmt(ptimes, pcpus)}")
            d = duck.to_pandas().set_index("problem_id")
            same = (d["answer"].astype("Int64") == pand["answer_int"].astype("Int64")).all()
            assert same, "duckdb and pandas disagree on an answer"
            assert np.allclose(d["score"], pand["score"]) and (d["votes"] == pand["votes"]).all()
            print(
                f"same answers, scores and votes for all {len(d)} problems; duckdb is "
                f"{min(ptimes) / duck_t:.1f}x faster"
            )

        if not args.skip_eval:
            from aimo.evaluate import evaluate

            t0, c0 = time.perf_counter(), cpu_s()
            res = evaluate(
                problems,
                traces,
                execs,
                out / "evaluate",
                ks=[1, 10, 100, 1000],
                n_subsets=args.n_subsets,
            )
            dt, dc = time.perf_counter() - t0, cpu_s() - c0
            m = res["metrics"].to_pandas()
            full = m[m.curve == "full"].set_index("strategy")["accuracy"].round(3).to_dict()
            print(
                f"evaluation ({args.n_subsets} subsets per k, "
                f"{m[m.curve == 'subset'].k.nunique()} k values, {len(STRATEGIES)} strategies): "
                f"wall {dt:.1f} s, "
                f"CPU {dc:.1f} s; "
                f"full-N accuracy {full}"
            )
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
