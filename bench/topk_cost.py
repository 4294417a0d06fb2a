"""What the entropy votes cost: decoding with the engine's top-k log-probabilities against
without, in one process, on the same requests (same seeds, so the same tokens).

Runs the scheduler (code blocks off: decoding only) over the first problems of a problem set,
alternating top_logprobs 0 and k, and prints tokens/s of each run and the ratio.

    .venv/bin/python bench/topk_cost.py                 # GSM8K, 8 problems x 4 samples, k=5
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", default=str(ROOT.parent / "shared/data/gsm8k_dev.jsonl"))
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--config", nargs="+", default=[str(ROOT / "config.yaml")])
    args = ap.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    from aimo import config as aimo_config
    from aimo import scheduler
    from aimo.config import engine_params
    from aimo.online import model_dir
    from aimo.problems import load
    from aimo.solver import Solver
    from aimo.tir import requests as tir_requests
    from bench.vote_bench import cpu_flags

    cfg = aimo_config.load(args.config)
    problems = load(args.problems)[: args.limit]
    requests = tir_requests(problems, range(args.samples), cfg["samples"]["seed"])
    params = engine_params(cfg)
    print(
        f"{len(requests)} traces, {args.max_tokens} tokens each at most, decoding only; model "
        f"{cfg['model']['name']}; CPU flags: {cpu_flags()}",
        flush=True,
    )
    runs = {0: [], args.k: []}
    texts = {}
    with Solver(model_dir(cfg), params) as solver:
        for _ in range(args.repeats):
            for k in (0, args.k):
                sampling = dict(cfg["sampling"], top_logprobs=k, max_tokens=args.max_tokens)
                stats = {}
                options = scheduler.RunOptions(sampling, 0, cfg["engine"]["max_model_len"])
                rows = scheduler.run(solver.engine, requests, solver.sandbox, options, stats)
                tokens = sum(r["completion_tokens"] for r in rows)
                runs[k].append(tokens / stats["wall_s"])
                texts.setdefault(k, [r["text"] for r in rows])
                print(
                    f"top_logprobs={k}: {tokens} tokens in {stats['wall_s']:.1f} s, "
                    f"{runs[k][-1]:.1f} tokens/s",
                    flush=True,
                )
    same = sum(a == b for a, b in zip(texts[0], texts[args.k]))
    base, topk = max(runs[0]), max(runs[args.k])
    print(
        f"\nbest of {args.repeats}: {base:.1f} tokens/s without, {topk:.1f} with top-{args.k} "
        f"log-probabilities: {topk / base:.2f}x ({100 * (1 - topk / base):.0f}% slower); "
        f"{same}/{len(texts[0])} traces identical"
    )


if __name__ == "__main__":
    main()
