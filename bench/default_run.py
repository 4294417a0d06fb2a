"""Benchmark the default run: wall time, tokens/s, and the share of wall time outside the engine.

Runs the workflow (everything after the model, which is cached) with `--forcerun problems`,
times it, then reads the shards' metadata (time inside llm.generate, sandbox waits, tokens).

    .venv/bin/python bench/default_run.py [extra snakemake arguments, e.g. --configfile ...]
"""
import subprocess
import sys
import time
from pathlib import Path

from aimo.tables import read_metadata

ROOT = Path(__file__).resolve().parents[1]


def main(extra):
    started = time.time()
    subprocess.run([sys.executable, "-m", "snakemake", "--cores", "all", "--forcerun", "problems",
                    *extra], cwd=ROOT, check=True)
    wall = time.time() - started
    totals = {"engine_start_s": 0.0, "engine_s": 0.0, "sandbox_wait_s": 0.0, "completion_tokens": 0}
    shards = [p for stage in ("generate", "reflexion", "critique")
              for p in sorted((ROOT / "results" / stage).glob("shard-*.parquet"))]
    for shard in shards:
        meta = read_metadata(shard)
        for key in totals:
            totals[key] += meta.get(key, 0)
    outside = wall - totals["engine_s"]
    print(f"shards read:               {len(shards)}")
    print(f"wall time:                 {wall:.0f} s")
    print(f"engine start-ups:          {totals['engine_start_s']:.0f} s")
    print(f"inside llm.generate:       {totals['engine_s']:.0f} s")
    print(f"waiting for the sandbox:   {totals['sandbox_wait_s']:.1f} s")
    print(f"completion tokens:         {totals['completion_tokens']}")
    print(f"tokens/s (in the engine):  {totals['completion_tokens'] / max(totals['engine_s'], 1e-9):.1f}")
    print(f"tokens/s (wall):           {totals['completion_tokens'] / wall:.1f}")
    print(f"share outside the engine:  {outside / wall:.1%} (start-ups {totals['engine_start_s'] / wall:.1%}, "
          f"sandbox {totals['sandbox_wait_s'] / wall:.1%}, rest {(outside - totals['engine_start_s'] - totals['sandbox_wait_s']) / wall:.1%})")


if __name__ == "__main__":
    main(sys.argv[1:])
