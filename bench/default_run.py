"""Benchmark the default run: wall time, tokens/s, and the share of wall time outside the engine.

Runs the workflow (everything after the model, which is cached) with `--forcerun problems`,
times it, then reads the shards' metadata (time inside the engine's steps, time with nothing in the
engine while code ran, tokens, running sequences per step).

    .venv/bin/python bench/default_run.py [extra snakemake arguments, e.g. --configfile ...]
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

from aimo.tables import read_metadata

ROOT = Path(__file__).resolve().parents[1]


def parse(argv=None) -> list[str]:
    """The snakemake arguments: every argument but -h/--help, as given."""
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        usage="%(prog)s [-h] [snakemake arguments ...]",
        epilog="Every other argument goes to snakemake as is (after --cores all --forcerun "
        "problems), e.g. --configfile config.yaml config/h100.yaml.",
        allow_abbrev=False,  # so that no snakemake option is taken for an abbreviation of ours
    )
    return ap.parse_known_args(argv)[1]


def main(extra):
    started = time.time()
    subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "all", "--forcerun", "problems", *extra],
        cwd=ROOT,
        check=True,
    )
    wall = time.time() - started
    totals = {
        "engine_start_s": 0.0,
        "step_s": 0.0,
        "idle_s": 0.0,
        "completion_tokens": 0,
        "steps": 0,
        "running_sum": 0,
    }
    shards = [
        p
        for stage in ("generate", "reflexion", "critique")
        for p in sorted((ROOT / "results" / stage).glob("shard-*.parquet"))
    ]
    for shard in shards:
        meta = read_metadata(shard)
        for key in totals:
            totals[key] += meta.get(key, 0)
    outside = wall - totals["step_s"]
    rest = outside - totals["engine_start_s"] - totals["idle_s"]
    print(f"shards read:               {len(shards)}")
    print(f"wall time:                 {wall:.0f} s")
    print(f"engine start-ups:          {totals['engine_start_s']:.0f} s")
    print(f"inside engine steps:       {totals['step_s']:.0f} s")
    print(f"engine idle, code running: {totals['idle_s']:.1f} s")
    print(f"completion tokens:         {totals['completion_tokens']}")
    print(f"running sequences/step:    {totals['running_sum'] / max(totals['steps'], 1):.1f}")
    print(
        f"tokens/s (in the engine):  {totals['completion_tokens'] / max(totals['step_s'], 1e-9):.1f}"
    )
    print(f"tokens/s (wall):           {totals['completion_tokens'] / wall:.1f}")
    print(
        f"share outside the engine:  {outside / wall:.1%} (start-ups {totals['engine_start_s'] / wall:.1%}, "
        f"engine idle {totals['idle_s'] / wall:.1%}, rest {rest / wall:.1%})"
    )


if __name__ == "__main__":
    main(parse())
