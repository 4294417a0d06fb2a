"""What early stopping saves: every sample against stopping a problem once k valid answers agree.

The same requests (same seeds) run twice through the scheduler in one process: all N samples
of every problem, then with `early_stop=k` (the problems run side by side, each stopped on its
own as its answers come in). Reports accuracy (majority over the finished traces' valid
answers, ties to the smaller answer), completion tokens and wall time for both, and the
problems that moved.

    .venv/bin/python bench/early_stop.py                  # GSM8K, first 40 problems, N=8, k=4
"""

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def majority(rows, pid):
    from aimo.answers import in_range
    from aimo.schemas import CANCELLED

    votes = Counter(
        r["answer_int"]
        for r in rows
        if r["problem_id"] == pid
        and r["finish_reason"] not in CANCELLED
        and in_range(r["answer_int"])
    )
    return min(votes, key=lambda a: (-votes[a], a)) if votes else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", default=str(ROOT.parent / "shared/data/gsm8k_dev.jsonl"))
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--config", nargs="+", default=[str(ROOT / "config.yaml")])
    ap.add_argument("--out", default=str(ROOT / "results/bench/early_stop"))
    args = ap.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    from aimo import config as aimo_config
    from aimo.config import engine_params
    from aimo.online import model_dir
    from aimo.problems import load
    from aimo.schemas import TRACES
    from aimo.solver import Solver
    from aimo.tables import write_table
    from aimo.tir import requests as tir_requests

    cfg = aimo_config.load(args.config)
    problems = load(args.problems)[: args.limit]
    answers = {p["problem_id"]: p["answer"] for p in problems}
    requests = tir_requests(problems, range(args.samples), cfg["samples"]["seed"])
    params = engine_params(cfg)
    cpu = "avx512_bf16" if "avx512_bf16" in Path("/proc/cpuinfo").read_text() else "no avx512_bf16"
    print(
        f"{len(problems)} problems x {args.samples} samples, k={args.k}; model {cfg['model']['name']}, "
        f"{cfg['sampling']['max_tokens']} tokens, {cfg['tir']['max_rounds']} rounds; CPU flags: {cpu}",
        flush=True,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    with Solver(model_dir(cfg), params) as solver:
        for name, k in (("all", None), (f"k={args.k}", args.k)):
            before = dict(solver.stats)
            rows = solver.run(requests, early_stop=k)
            wall = solver.stats["loop_s"] - before["loop_s"]
            right = {pid for pid in answers if majority(rows, pid) == answers[pid]}
            fig = {
                "run": name,
                "right": len(right),
                "of": len(problems),
                "completion_tokens": sum(r["completion_tokens"] for r in rows),
                "cancelled": sum(r["finish_reason"] == "early_stop" for r in rows),
                "wall_s": round(wall, 1),
            }
            runs[name] = (rows, right, fig)
            write_table(rows, out / f"{name}.parquet", TRACES, metadata=fig)
            print(json.dumps(fig), flush=True)
    (_, all_right, a), (_, k_right, b) = runs["all"], runs[f"k={args.k}"]
    print(
        "\n| run | right | completion tokens | cancelled traces | wall s |\n|---|---|---|---|---|"
    )
    for f in (a, b):
        print(
            f"| {f['run']} | {f['right']}/{f['of']} | {f['completion_tokens']} | {f['cancelled']} | {f['wall_s']} |"
        )
    saved = 1 - b["completion_tokens"] / a["completion_tokens"]
    print(
        f"\nearly stop saves {saved:.0%} of the completion tokens and {1 - b['wall_s'] / a['wall_s']:.0%} "
        f"of the wall time; problems gained {sorted(k_right - all_right)}, lost {sorted(all_right - k_right)}"
    )


if __name__ == "__main__":
    main()
