"""How long Snakemake takes to plan the full-scale run: 110 problems x 1024 samples.

Copies the workflow into a temporary folder (no results there, as on a fresh clone), writes a
110-problem CSV beside it, and times `snakemake -n` (the dry run: parse, validate, build the
DAG, print the plan) with the H100 overlay (N = 1024, shard_size 64: 16 shards per stage)
pointing at that file, --repeat times. Shards must stay coarse enough for this to take seconds.

    .venv/bin/python bench/plan_scale.py                      # the H100 setting
    .venv/bin/python bench/plan_scale.py --shard-size 8       # finer shards, for comparison
    .venv/bin/python bench/plan_scale.py --profile slurm      # with the Slurm workflow profile
"""

import argparse
import csv
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = [
    "Snakefile",
    "rules",
    "scripts",
    "schemas",
    "config.yaml",
    "config",
    "data",
    "profiles",
    "envs",
]


def write_problems(path: Path, n: int):
    """An AIMO-like problem file: n problems with integer answers."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "problem", "answer"])
        for i in range(n):
            w.writerow(
                [
                    f"p{i:03d}",
                    f"Find the remainder when $2^{{{i + 10}}}$ is divided by ${i + 7}$.",
                    pow(2, i + 10, i + 7),
                ]
            )


def dry_run(workdir: Path, args: list[str]) -> tuple[float, dict]:
    """Seconds one `snakemake -n` takes, and the jobs it plans per rule."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if proc.returncode:
        sys.exit(f"snakemake -n failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    jobs = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] != "job":
            jobs[parts[0]] = int(parts[1])
    return seconds, jobs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=110)
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--profile",
        default=None,
        help="a workflow profile under profiles/ (default: profiles/default)",
    )
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="aimo-plan-") as tmp:
        workdir = Path(tmp)
        for name in WORKFLOW:
            src = ROOT / name
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, workdir / name)
        write_problems(workdir / "scale_problems.csv", args.problems)
        (workdir / "scale.yaml").write_text(
            "problems: scale_problems.csv\n"
            f"samples: {{n: {args.samples}, shard_size: {args.shard_size}, seed: 2026}}\n"
        )
        extra = ["--configfile", "config.yaml", "config/h100.yaml", "scale.yaml"]
        if args.profile:
            extra += ["--workflow-profile", f"profiles/{args.profile}"]
        times = []
        for _ in range(args.repeat):
            seconds, jobs = dry_run(workdir, extra)
            times.append(seconds)
    shards = args.samples // args.shard_size
    print(
        f"plan of {args.problems} problems x {args.samples} samples, shard_size "
        f"{args.shard_size} ({shards} shards per stage), profile "
        f"{args.profile or 'default'}:"
    )
    print(
        f"  jobs planned: {jobs.get('total')} ("
        + ", ".join(f"{k} {v}" for k, v in jobs.items() if k != "total")
        + ")"
    )
    print(
        f"  snakemake -n: median {statistics.median(times):.1f} s, min {min(times):.1f} s "
        f"over {len(times)} runs (a fresh interpreter each: parse, validate, DAG, plan)"
    )


if __name__ == "__main__":
    main()
