"""The same requests through both engine backends: the embedded vLLM and a `vllm serve`.

Runs the first --limit problems of a JSONL file ({"problem", "answer"} per line) x --samples
through aimo.solver.Solver once per backend (`vllm`: the engine in the job, its core in a
process of its own; `openai`: a `vllm serve` the job starts on the same model), both on the
free schedule, side by side in one process on one machine. Per backend: the start-up (engine,
or server until it answers), completion tokens per second of the loop, traces whose answer is
right, problems whose majority answer is right, and the ratio of tokens/s to the first's.

    .venv/bin/python bench/backends.py --limit 8 --samples 4 --config config.yaml
"""

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stream import cpu  # noqa: E402


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", default=str(ROOT.parent / "shared/data/math500_int_dev.jsonl"))
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--backends", nargs="+", default=["vllm", "openai"])
    ap.add_argument("--config", nargs="+", default=[str(ROOT / "config.yaml")])
    return ap.parse_args(argv)


def read_problems(path, limit: int, offset: int = 0) -> list[dict]:
    """`limit` problems of a JSONL file, from the `offset`-th on."""
    lines = Path(path).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()][offset : offset + limit]


def run_backend(backend, args, problems) -> dict:
    return run_setting(backend, {"engine": {"backend": backend}}, args, problems)


def run_setting(label, overrides: dict, args, problems) -> dict:
    """The problems' requests through one Solver whose config sections are updated by
    `overrides` ({section: {key: value}}), on the free schedule: its figures."""
    from aimo import config as aimo_config
    from aimo import tir
    from aimo.online import model_dir
    from aimo.solver import Solver

    cfg = aimo_config.load(args.config)
    params = aimo_config.engine_params(cfg)
    for section, keys in {**overrides, "scheduler": {"mode": "free"}}.items():
        params[section] = dict(params[section], **keys)
    rows = [{"problem_id": f"p{i}", "problem": p["problem"]} for i, p in enumerate(problems)]
    requests = tir.requests(rows, range(args.samples), cfg["samples"]["seed"])
    started = time.time()
    with Solver(model_dir(cfg), params) as solver:
        traces = solver.run(requests)
        stats = solver.stats
    wall = time.time() - started
    answers = {f"p{i}": int(p["answer"]) for i, p in enumerate(problems)}
    right = sum(t["answer_int"] == answers[t["problem_id"]] for t in traces)
    votes = {}
    for t in traces:
        if t["answer_int"] is not None:
            votes.setdefault(t["problem_id"], Counter())[t["answer_int"]] += 1
    majority = sum(v.most_common(1)[0][0] == answers[p] for p, v in votes.items())
    return {
        "setting": label,
        "wall_s": wall,
        "calls_per_trace": sum(t["n_code_calls"] for t in traces) / len(traces),
        "code_errors": sum(t["n_code_errors"] for t in traces),
        "start_s": stats["engine_start_s"],
        "tokens": stats["completion_tokens"],
        "tokens_per_s": stats["completion_tokens"] / max(stats["loop_s"], 1e-9),
        "traces_right": right,
        "traces": len(traces),
        "majority_right": majority,
    }


def main(args):
    problems = read_problems(args.problems, args.limit)
    print(cpu())
    print(f"{len(problems)} problems of {args.problems} x {args.samples} samples")
    results = []
    for backend in args.backends:
        started = time.time()
        results.append(run_backend(backend, args, problems))
        print(f"== {backend}: {results[-1]} ({time.time() - started:.0f} s)", flush=True)
    base = results[0]["tokens_per_s"]
    print(
        "\n| backend | start-up s | tokens | tokens/s | vs first | traces right | majority right |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['setting']} | {r['start_s']:.0f} | {r['tokens']} | {r['tokens_per_s']:.1f} "
            f"| {r['tokens_per_s'] / max(base, 1e-9):.2f} | {r['traces_right']}/{r['traces']} "
            f"| {r['majority_right']}/{len(problems)} |"
        )


if __name__ == "__main__":
    main(parse())
