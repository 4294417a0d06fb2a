"""Where do the default run's seconds pay? Reflexion and critique against more samples and the
sampling policies, at equal wall time on this CPU, over the replay pool's problems.

The pool (`bench/vote_bench.py --limit 60 --samples 16 --chunk 5`) holds 16 samples of each
problem, made with the default config's seeds, so its samples 0..n-1 are what the generate stage
writes at samples.n = n. On its first `--limit` problems this script runs the default config's
reflexion over samples 0..base-1 and then its critique (over those and the repairs), once, with
the same library functions the workflow's stages call, and caches the shards in the run folder.
Then it votes (config vote.strategy, the real SQL vote; majority beside it) over:

  n samples           samples 0..n-1, n = 1..16
  base + reflexion, + critique, + both
  policies            aimo.replay over all 16 in sample order (ESC, early stop), batch mode

Wall time: generating costs the pool's own rate (its completion tokens over its decode wall,
every chunk with 80 traces in flight, a full batch as the workflow's generate has); reflexion
and critique cost what they took here (the engine's start counted apart: every stage that runs
starts one). Reported per row: right, seconds, and right per 1000 s.

    .venv/bin/python bench/equal_time.py                # first 40 problems, base 4
    .venv/bin/python bench/equal_time.py --analyse-only
"""

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from vote_bench import cpu_flags  # noqa: E402


def slice_pool(pool: Path, out: Path, limit: int, n: int, tag: str):
    """The pool's first `limit` problems, samples < n: (problems, traces, executions) files."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    problems = pq.read_table(pool / "problems.parquet").slice(0, limit)
    ids = pa.array(problems["problem_id"].to_pylist())
    files = sorted((pool / "traces").glob("*.parquet"))
    t = pa.concat_tables([pq.read_table(f) for f in files])
    t = t.filter(pc.and_(pc.is_in(t["problem_id"], value_set=ids), pc.less(t["sample"], n)))
    e = pa.concat_tables([pq.read_table(pool / "executions" / f.name) for f in files])
    e = e.filter(pc.is_in(e["trace_id"], value_set=t["trace_id"]))
    paths = out / "problems.parquet", out / f"{tag}_traces.parquet", out / f"{tag}_exec.parquet"
    for table, path in zip((problems, t, e), paths):
        pq.write_table(table, path)
    return paths


def corrections(args, cfg, out: Path):
    """Run reflexion, then critique, on samples < base (cached): their seconds."""
    from aimo.config import engine_params
    from aimo.critique import critique_shard
    from aimo.executions import executions_from_blocks
    from aimo.online import model_dir
    from aimo.reflexion import reflexion_shard
    from aimo.schemas import EXECUTIONS, TRACES
    from aimo.tables import read_metadata, read_table, write_table

    problems, traces, execs = slice_pool(Path(args.pool), out, args.limit, args.base, "base")
    params = engine_params(cfg)
    timing = (
        json.loads((out / "timing.json").read_text()) if (out / "timing.json").is_file() else {}
    )
    steps = [
        ("reflexion", reflexion_shard, traces, execs),
        ("critique", critique_shard, [traces, out / "reflexion.parquet"],
         [execs, out / "reflexion_exec.parquet"]),
    ]  # fmt: skip
    for stage, fn, t_in, e_in in steps:
        if stage in timing:
            continue
        start = time.monotonic()
        fn(problems, t_in, e_in, model_dir(cfg), out / f"{stage}.parquet",
           dict(params, **{stage: cfg[stage]}))  # fmt: skip
        total = time.monotonic() - start
        rows = read_table(out / f"{stage}.parquet", TRACES).to_pylist()
        write_table(executions_from_blocks(rows), out / f"{stage}_exec.parquet", EXECUTIONS)
        meta = read_metadata(out / f"{stage}.parquet")
        timing[stage] = {
            "total_s": total,
            "loop_s": meta.get("loop_s", total),
            "engine_start_s": meta.get("engine_start_s", 0.0),
            "rows": len(rows),
        }
        (out / "timing.json").write_text(json.dumps(timing, indent=1))
        print(stage, json.dumps(timing[stage]), flush=True)
    return timing


def votes(problems, traces, execs, vote_cfg) -> dict:
    """problem_id -> (config strategy's answer, majority's answer)."""
    from aimo.vote import vote_table

    s = vote_cfg["strategy"]
    t = vote_table(problems, traces, execs, vote_cfg, sorted({s, "majority"})).to_pylist()
    pick = {(r["problem_id"], r["strategy"]): r["answer"] for r in t}
    return {p: (pick.get((p, s)), pick.get((p, "majority"))) for p, _ in pick}


def analyse(args, cfg, out: Path, timing: dict):
    import pyarrow.parquet as pq
    from replay import load_pool

    from aimo.policies import Policy
    from aimo.replay import majority, replay

    pool_dir = Path(args.pool)
    pool, files = load_pool(pool_dir, 1.0)
    truth = {
        r["problem_id"]: r["answer"]
        for r in pq.read_table(pool_dir / "problems.parquet").to_pylist()[: args.limit]
    }
    from aimo.tables import read_metadata

    metas = [read_metadata(f) for f in files]
    rate = sum(
        sum(pq.read_table(f, columns=["completion_tokens"])["completion_tokens"].to_pylist())
        for f in files
    ) / sum(m["chunk_wall_s"] for m in metas)
    start_s = timing["critique"]["engine_start_s"]
    rows = []

    def add(name, tokens, wall, answers):
        right = sum(answers.get(p, (None, None))[0] == truth[p] for p in truth)
        maj = sum(answers.get(p, (None, None))[1] == truth[p] for p in truth)
        rows.append((name, right, maj, tokens / len(truth), wall))

    tokens_n = {}
    for n in range(1, 17):
        probs, t, e = slice_pool(pool_dir, out / "tmp", args.limit, n, f"n{n}")
        tokens_n[n] = sum(pq.read_table(t)["completion_tokens"].to_pylist())
        if n in (1, 2, 3, 4, 5, 6, 8, 10, 12, 16):
            add(
                f"{n} samples", tokens_n[n], tokens_n[n] / rate, votes(probs, [t], [e], cfg["vote"])
            )
    probs, base_t, base_e = (out / f for f in ("problems.parquet", "base_traces.parquet",
                                               "base_exec.parquet"))  # fmt: skip
    arms = {
        "reflexion": ["reflexion"],
        "critique": ["critique"],
        "both (the default run)": ["reflexion", "critique"],
    }
    for name, stages in arms.items():
        t = [base_t] + [out / f"{s}.parquet" for s in stages]
        e = [base_e] + [out / f"{s}_exec.parquet" for s in stages]
        if name == "critique":  # critiques of samples only: drop those of repairs
            t, e = _critiques_of_samples(out, t, e)
        tok = sum(sum(pq.read_table(f)["completion_tokens"].to_pylist()) for f in t)
        wall = tokens_n[args.base] / rate + sum(timing[s]["loop_s"] + start_s for s in stages)
        add(f"{args.base} samples + {name}", tok, wall, votes(probs, t, e, cfg["vote"]))
    for name, policy, k, n in [
        ("16, esc window 2", Policy(wave=2, rule="esc", window=2), None, 16),
        ("16, esc window 4", Policy(wave=4, rule="esc", window=4), None, 16),
        ("16, early stop 4", Policy(), 4, 16),
        ("8, esc window 2", Policy(wave=2, rule="esc", window=2), None, 8),
        ("8, early stop 4", Policy(), 4, 8),
    ]:
        answers, tok = {}, 0
        for p in truth:
            o = replay(pool[p][1][:n], policy, k)
            answers[p] = (None, majority(o.votes))
            tok += o.tokens
        add(name + " (majority)", tok, tok / rate, answers)
    print(
        f"\n{len(truth)} problems (pool {pool_dir.name}); decode {rate:.1f} tokens/s at 80 in "
        f"flight; engine start {start_s:.0f} s a stage; cpu {cpu_flags()}"
    )
    print(
        f"reflexion {timing['reflexion']['rows']} traces {timing['reflexion']['loop_s']:.0f} s, "
        f"critique {timing['critique']['rows']} traces {timing['critique']['loop_s']:.0f} s"
    )
    print(f"| traces voted | right ({cfg['vote']['strategy']}) | right (majority) | "
          "completion tokens/problem | wall s | right per 1000 s |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name, right, maj, tok, wall in rows:
        r = "" if name.endswith("(majority)") else f"{right}/{len(truth)}"
        print(f"| {name} | {r} | {maj}/{len(truth)} | {tok:.0f} | {wall:.0f} | "
              f"{1000 * max(right, maj if not r else right) / wall:.1f} |")  # fmt: skip


def _critiques_of_samples(out: Path, t, e):
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    c = pq.read_table(out / "critique.parquet")
    c = c.filter(pc.invert(pc.match_substring(c["parent_id"], ":r")))
    ce = pq.read_table(out / "critique_exec.parquet")
    ce = ce.filter(pc.is_in(ce["trace_id"], value_set=c["trace_id"]))
    pq.write_table(c, out / "tmp" / "critique_s.parquet")
    pq.write_table(ce, out / "tmp" / "critique_s_exec.parquet")
    return ([t[0], out / "tmp" / "critique_s.parquet"],
            [e[0], out / "tmp" / "critique_s_exec.parquet"])  # fmt: skip


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", default=str(ROOT / "runs/vote_bench/gsm8k_dev-60x16"))
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--base", type=int, default=4, help="samples corrected (samples.n)")
    ap.add_argument("--config", nargs="+", default=[str(ROOT / "config.yaml")])
    ap.add_argument("--out", default=str(ROOT / "runs/equal_time"))
    ap.add_argument("--analyse-only", action="store_true")
    args = ap.parse_args()

    import logging

    from aimo import config as aimo_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = aimo_config.load(args.config)
    out = Path(args.out) / f"{Path(args.pool).name}-{args.limit}x{args.base}"
    if args.analyse_only:
        timing = json.loads((out / "timing.json").read_text())
    else:
        timing = corrections(args, cfg, out)
    analyse(args, cfg, out, timing)


if __name__ == "__main__":
    main()
