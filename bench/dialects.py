"""Fenced code blocks against the model's own python tool (`tir.dialect`), side by side.

Runs --limit problems (after --offset) of a JSONL file ({"problem", "answer"} per line) x --samples
through aimo.solver.Solver once per dialect, in one process on one machine, on the free
schedule: right traces and majority answers, completion tokens, tool calls per trace, code
errors and wall time.

    .venv/bin/python bench/dialects.py --limit 8 --samples 4 --config config.yaml
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.backends import read_problems, run_setting  # noqa: E402
from bench.stream import cpu  # noqa: E402


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", default=str(ROOT.parent / "shared/data/math500_int_dev.jsonl"))
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--offset", type=int, default=0, help="skip this many problems first")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--dialects", nargs="+", default=["fenced", "tools"])
    ap.add_argument("--config", nargs="+", default=[str(ROOT / "config.yaml")])
    return ap.parse_args(argv)


def main(args):
    problems = read_problems(args.problems, args.limit, args.offset)
    print(cpu())
    print(
        f"{len(problems)} problems of {args.problems} from #{args.offset} x {args.samples} samples"
    )
    results = []
    for dialect in args.dialects:
        results.append(run_setting(dialect, {"tir": {"dialect": dialect}}, args, problems))
        print(f"== {dialect}: {results[-1]}", flush=True)
    print(
        "\n| dialect | traces right | majority right | tokens | calls / trace | code errors "
        "| wall s |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['setting']} | {r['traces_right']}/{r['traces']} "
            f"| {r['majority_right']}/{len(problems)} | {r['tokens']} "
            f"| {r['calls_per_trace']:.2f} | {r['code_errors']} | {r['wall_s']:.0f} |"
        )


if __name__ == "__main__":
    main(parse())
