"""One problem at a time: today's online setting against samples streamed at a width.

Runs the online run (aimo.online.OnlineRun, what main.py and Kaggle's `predict` use) on the
first --limit problems of a JSONL file ({"problem", "answer"} per line, ids by position), once
per setting, side by side in one process on one machine. Every problem gets exactly --budget
seconds (online.min_s = max_s, a bank too large to bind). A setting is the online run's samples
and waves: `all` is today's (online.samples.n at once, early stop at online.scheduler.early_stop);
`wW` streams up to --most samples, W at a time, with finish_by_deadline. Per setting: right
answers, finished samples per problem, completion tokens per second of problem time, mean
sequences per engine step, and seconds used.

    .venv/bin/python bench/stream.py --limit 8 --budget 45 --settings all w8 w16 \\
        --config config.yaml my-model.yaml
"""

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", default=str(ROOT.parent / "shared/data/gsm8k_dev.jsonl"))
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--budget", type=float, default=60.0, help="seconds per problem")
    ap.add_argument("--most", type=int, default=32, help="a stream's most samples per problem")
    ap.add_argument("--settings", nargs="+", default=["all", "w8"], help="all | wW (width W)")
    ap.add_argument("--config", nargs="+", default=[str(ROOT / "config.yaml")])
    args = ap.parse_args(argv)
    for s in args.settings:
        if not is_setting(s):
            ap.error(f"setting {s!r}: expected all or wW, e.g. w8")
    return args


def is_setting(s: str) -> bool:
    """`all`, or `wW` with a width W >= 1."""
    return s == "all" or (s.startswith("w") and s[1:].isdigit() and int(s[1:]) > 0)


def overlay(setting: str, args, run_dir: Path) -> str:
    """The online keys of one setting, as YAML."""
    online = (
        f"budget_s: 1000000, expected_problems: 1, min_s: {args.budget}, "
        f"max_s: {args.budget}, reserve_s: 0, run_dir: {run_dir}"
    )
    if setting != "all":
        width = int(setting[1:])
        online += (
            f", samples: {{n: {args.most}}}, "
            f"scheduler: {{waves: {{size: {width}, finish_by_deadline: true}}}}"
        )
    return f"online: {{{online}}}\n"


def run_setting(setting, args, problems, tmp: Path) -> dict:
    from aimo import config as aimo_config
    from aimo.online import OnlineRun
    from aimo.schemas import TRACES
    from aimo.tables import read_table

    run_dir = tmp / setting
    path = tmp / f"{setting}.yaml"
    path.write_text(overlay(setting, args, run_dir))
    run = OnlineRun(aimo_config.load([*args.config, path]))
    run.start()
    try:
        right = finished = tokens = 0
        seconds, s0 = 0.0, dict(run.solver.stats)
        for i, p in enumerate(problems):
            pid = f"p{i}"
            result = run.solve(pid, p["problem"], p["answer"])
            print("  ", result.line(), flush=True)
            right += result.answer == int(p["answer"]) and not result.fallback
            finished += result.finished
            seconds += result.seconds
            rows = read_table(run_dir / "traces" / f"{pid}.parquet", TRACES).to_pylist()
            tokens += sum(r["completion_tokens"] for r in rows)
        s1 = run.solver.stats
        steps = s1.get("steps", 0) - s0.get("steps", 0)
        width = (s1.get("running_sum", 0) - s0.get("running_sum", 0)) / max(steps, 1)
    finally:
        run.stop()
    n = len(problems)
    return {
        "setting": setting,
        "right": right,
        "finished_per_problem": finished / n,
        "tokens_per_s": tokens / max(seconds, 1e-9),
        "width": width,
        "seconds_per_problem": seconds / n,
    }


def cpu() -> str:
    """This machine's CPU model and the flags that set its engine's rate."""
    info = Path("/proc/cpuinfo").read_text()
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if "model name" in ln), "")
    flags = [f for f in ("avx2", "avx512f", "avx512_bf16") if f" {f}" in info]
    return f"{name or platform.machine()}; {', '.join(flags) or 'no avx'}"


def main(args):
    lines = Path(args.problems).read_text().splitlines()
    problems = [json.loads(line) for line in lines if line.strip()][: args.limit]
    print(cpu())
    print(f"{len(problems)} problems of {args.problems}, {args.budget:.0f} s each")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for setting in args.settings:
            print(f"== {setting}", flush=True)
            started = time.time()
            results.append(run_setting(setting, args, problems, Path(tmp)))
            print(f"   ({time.time() - started:.0f} s with the engine's start)", flush=True)
            print("  ", table_row(results[-1], results[0], len(problems)), flush=True)
    print(
        "\n| setting | right | finished samples / problem | tokens/s | sequences / step "
        "| s / problem | finished vs first |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(table_row(r, results[0], len(problems)))


def table_row(r: dict, base: dict, n: int) -> str:
    """One setting's row of the table (also printed as it ends: a long run cut short keeps it)."""
    ratio = r["finished_per_problem"] / max(base["finished_per_problem"], 1e-9)
    return (
        f"| {r['setting']} | {r['right']}/{n} | {r['finished_per_problem']:.1f} "
        f"| {r['tokens_per_s']:.1f} | {r['width']:.1f} | {r['seconds_per_problem']:.0f} "
        f"| {ratio:.2f}x |"
    )


if __name__ == "__main__":
    main(parse())
