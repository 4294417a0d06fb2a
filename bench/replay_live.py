"""Does the replay predict a live run? One policy run live on the pool's first problems.

The pool (bench/vote_bench.py) was made with the default config's seeds, so a live run of the
same requests under a policy writes (up to batch-dependent rounding in bf16) the pool's traces,
cut where the policy cuts them. This runs the policy once through the scheduler (batch mode: every
problem at once, the policy per problem) with the default config, caches the traces, and sets
them beside the replay of the same policy over the pool in sample order (aimo.replay, no engine):
samples started, completion tokens, majority accuracy, and on how many problems the two agree.

    .venv/bin/python bench/replay_live.py                      # esc2 at N = 16, 40 problems
    .venv/bin/python bench/replay_live.py --policy early_stop4 --limit 20
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from replay import POLICIES, load_pool  # noqa: E402
from vote_bench import cpu_flags  # noqa: E402


def scheduler_section(sched: dict, policy, k) -> dict:
    """The config's scheduler section with `policy` and early stop `k` in it."""
    return dict(
        sched,
        early_stop=k,
        waves={"size": policy.wave, "rule": policy.rule, "confidence": policy.confidence,
               "window": policy.window},
        prune={"enabled": policy.prune, "warmup": policy.warmup, "keep": policy.keep,
               "threshold": policy.threshold},
    )  # fmt: skip


def run_live(cfg, problems, n, policy, k, out: Path):
    from aimo.config import engine_params
    from aimo.online import model_dir
    from aimo.schemas import TRACES
    from aimo.solver import Solver
    from aimo.tables import write_table
    from aimo.tir import requests as tir_requests

    params = engine_params(cfg)
    params["scheduler"] = scheduler_section(cfg["scheduler"], policy, k)
    with Solver(model_dir(cfg), params) as solver:
        started = time.monotonic()
        rows = solver.run(tir_requests(problems, range(n), cfg["samples"]["seed"]))
        meta = {**solver.metadata(), "run_s": time.monotonic() - started, "cpu": cpu_flags()}
    write_table(rows, out, TRACES, metadata=meta)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", default=str(ROOT / "runs/vote_bench/gsm8k_dev-60x16"))
    ap.add_argument("--config", nargs="+", default=[str(ROOT / "config.yaml")])
    ap.add_argument("--policy", default="esc2", choices=sorted(POLICIES))
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--out", default=str(ROOT / "runs/replay_live"))
    args = ap.parse_args()

    import logging

    import pyarrow.parquet as pq

    from aimo import config as aimo_config
    from aimo.answers import in_range
    from aimo.replay import majority, replay
    from aimo.tables import read_metadata

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = aimo_config.load(args.config)
    policy, k, offline = POLICIES[args.policy]
    if offline:
        sys.exit(f"--policy {args.policy}: an offline filter has nothing to run live")
    pool_dir = Path(args.pool)
    pool, _ = load_pool(pool_dir, 1.0)
    problems = pq.read_table(pool_dir / "problems.parquet").to_pylist()[: args.limit]
    out = Path(args.out) / f"{pool_dir.name}-{args.policy}-{args.limit}x{args.n}.parquet"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        run_live(cfg, problems, args.n, policy, k, out)
    rows = pq.read_table(out).to_pylist()
    meta = read_metadata(out)
    window, stride = cfg["sampling"]["conf_window"], cfg["sampling"]["conf_stride"]
    pred = {"started": 0, "tokens": 0, "right": 0}
    live = {"started": 0, "tokens": 0, "right": 0}
    agree = 0
    for p in problems:
        pid, truth = p["problem_id"], p["answer"]
        o = replay(pool[pid][1][: args.n], policy, k, window, stride)
        guess = majority(o.votes)
        pred["started"] += o.started
        pred["tokens"] += o.tokens
        pred["right"] += guess == truth
        mine = sorted((r for r in rows if r["problem_id"] == pid), key=lambda r: r["sample"])
        voting = [
            (r["answer_int"], None)
            for r in mine
            if r["finish_reason"] not in ("early_stop", "deadline", "pruned", "not_started")
            and r["answer_int"] is not None
            and in_range(r["answer_int"])
        ]
        answer = majority(voting)
        live["started"] += sum(r["finish_reason"] != "not_started" for r in mine)
        live["tokens"] += sum(r["completion_tokens"] for r in mine)
        live["right"] += answer == truth
        agree += answer == guess
    full = sum(t.tokens for p in problems for t in pool[p["problem_id"]][1][: args.n])
    print(
        f"{args.policy} at N = {args.n}, {len(problems)} problems; live {meta['run_s']:.0f} s, "
        f"{meta['completion_tokens'] / meta['loop_s']:.1f} tokens/s, cpu {meta.get('cpu', '')}"
    )
    print("| | samples started | completion tokens | x all | majority right |")
    print("|---|---|---|---|---|")
    for name, d in (("replay (sample order)", pred), ("live", live)):
        print(
            f"| {name} | {d['started']} | {d['tokens']} | {d['tokens'] / full:.2f} | "
            f"{d['right']}/{len(problems)} |"
        )
    print(f"all {args.n} samples: {full} tokens; the two majority answers agree on {agree}")


if __name__ == "__main__":
    main()
