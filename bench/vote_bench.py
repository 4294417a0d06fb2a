"""Which vote picks best? Every strategy side by side on cached samples.

Generates (once) N samples of the first problems of a problem set with the default model and
config (entropies from the engine's top-k log-probabilities on), in chunks of problems, each
chunk's traces and executions (from the blocks the TIR run ran) written atomically to the run
folder; a rerun skips the chunks already there, so a run cut short resumes. Then evaluates
every strategy over whatever chunks exist (aimo.evaluate: accuracy, selection loss against the
best possible pick with a bootstrap spread, paired moves against majority, at-k curves) and
prints the table.

    .venv/bin/python bench/vote_bench.py                 # GSM8K dev, first 100 problems, N=8
    .venv/bin/python bench/vote_bench.py --analyse-only  # the table from the chunks there
"""

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_flags() -> str:
    info = Path("/proc/cpuinfo").read_text()
    return ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16") if f" {f}" in info) or "no avx"


def generate(args, cfg, problems, out: Path):
    from aimo.config import engine_params
    from aimo.executions import executions_from_blocks
    from aimo.online import model_dir
    from aimo.schemas import EXECUTIONS, TRACES
    from aimo.solver import Solver
    from aimo.tables import write_table
    from aimo.tir import requests as tir_requests

    params = engine_params(cfg)
    chunks = [problems[i : i + args.chunk] for i in range(0, len(problems), args.chunk)]
    todo = [
        (i, c) for i, c in enumerate(chunks) if not (out / "traces" / f"{i:03d}.parquet").is_file()
    ]
    print(f"{len(chunks) - len(todo)} of {len(chunks)} chunks cached in {out}", flush=True)
    if not todo:
        return
    with Solver(model_dir(cfg), params) as solver:
        for i, chunk in todo:
            before = dict(solver.stats)
            rows = solver.run(
                tir_requests(chunk, range(args.samples), cfg["samples"]["seed"]), early_stop=None
            )
            wall = solver.stats["loop_s"] - before["loop_s"]
            tokens = sum(r["completion_tokens"] for r in rows)
            meta = {**solver.metadata(), "chunk": i, "chunk_wall_s": wall, "cpu": cpu_flags()}
            write_table(
                executions_from_blocks(rows), out / "executions" / f"{i:03d}.parquet", EXECUTIONS
            )
            write_table(rows, out / "traces" / f"{i:03d}.parquet", TRACES, metadata=meta)
            print(
                json.dumps(
                    {
                        "chunk": i,
                        "problems": len(chunk),
                        "traces": len(rows),
                        "completion_tokens": tokens,
                        "wall_s": round(wall, 1),
                        "tokens_per_s": round(tokens / max(wall, 1e-9), 1),
                        "time": time.strftime("%H:%M:%S"),
                    }
                ),
                flush=True,
            )


def analyse(args, problems, out: Path):
    """Evaluate every strategy over the chunks there, on their problems only."""
    from aimo.evaluate import evaluate
    from aimo.schemas import PROBLEMS
    from aimo.tables import write_table

    traces = sorted((out / "traces").glob("*.parquet"))
    executions = [out / "executions" / t.name for t in traces]
    if not traces:
        sys.exit(f"{out}: no chunk generated yet")
    done = [
        p
        for t in traces
        for p in problems[int(t.stem) * args.chunk : (int(t.stem) + 1) * args.chunk]
    ]
    write_table(done, out / "eval" / "problems.parquet", PROBLEMS)
    print(f"{len(traces)} chunks: {len(done)} problems", flush=True)
    result = evaluate(
        out / "eval" / "problems.parquet",
        traces,
        executions,
        out / "eval",
        ks=[1, 2, 4, 8],
        n_subsets=args.subsets,
        seed=0,
    )
    print(result["report"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", default=str(ROOT.parent / "shared/data/gsm8k_dev.jsonl"))
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--chunk", type=int, default=10, help="problems per cached chunk")
    ap.add_argument("--subsets", type=int, default=200)
    ap.add_argument("--config", nargs="+", default=[str(ROOT / "config.yaml")])
    ap.add_argument("--out", default=str(ROOT / "runs/vote_bench"))
    ap.add_argument("--analyse-only", action="store_true")
    args = ap.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    from aimo import config as aimo_config
    from aimo.problems import load
    from aimo.schemas import PROBLEMS
    from aimo.tables import write_table

    cfg = aimo_config.load(args.config)
    out = Path(args.out) / f"{Path(args.problems).stem}-{args.limit}x{args.samples}"
    problems = load(args.problems)[: args.limit]
    write_table(problems, out / "problems.parquet", PROBLEMS)
    print(
        f"{len(problems)} problems x {args.samples} samples; model {cfg['model']['name']}, "
        f"{cfg['sampling']['max_tokens']} tokens, {cfg['tir']['max_rounds']} rounds, top "
        f"{cfg['sampling']['top_logprobs']} log-probabilities; CPU flags: {cpu_flags()}",
        flush=True,
    )
    if not args.analyse_only:
        generate(args, cfg, problems, out)
    analyse(args, problems, out)


if __name__ == "__main__":
    main()
