"""Which sampling policy spends samples where they matter? Each one replayed over a stored pool.

The pool is the vote benchmark's cached chunks (`bench/vote_bench.py --limit 60 --samples 16
--chunk 5`: 16 samples per problem, token confidences on, resumable). Each policy is replayed
(aimo.replay, the scheduler's own rules) over every problem with the samples in a shuffled
order, `--replays` times (seeded), at N = 16 and N = 8 (the first 8 of each order). Reported
per policy: accuracy (its majority over the traces that vote; the offline filters their
confidence vote), the paired bootstrap of its difference from all-N majority and from the
default vote (config vote.strategy over all N, the real SQL vote), completion tokens against
all N, and the wall time of one problem at a time on a decode curve (peak * b / (b + half)
tokens/s for b running; defaults: this CPU's, fit to 16 tokens/s at 8 and 55 at 160; the GPU
case: `--peak 3000 --half 78 --scale 10`, lengths scaled as bench/tir_simulate.py does).

    .venv/bin/python bench/replay.py
    .venv/bin/python bench/replay.py --peak 3000 --half 78 --scale 10   # a 32B model on an H100
"""

import argparse
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aimo.policies import Policy  # noqa: E402

POLICIES = {  # name -> (Policy, early_stop k, offline filter)
    "all": (Policy(), None, None),
    "early_stop4": (Policy(), 4, None),
    "beta95_all": (Policy(rule="beta", confidence=0.95), None, None),
    "beta90_all": (Policy(rule="beta", confidence=0.90), None, None),
    "beta95_wave8": (Policy(wave=8, rule="beta", confidence=0.95), None, None),
    "beta95_wave4": (Policy(wave=4, rule="beta", confidence=0.95), None, None),
    "beta95_wave2": (Policy(wave=2, rule="beta", confidence=0.95), None, None),
    "beta90_wave4": (Policy(wave=4, rule="beta", confidence=0.90), None, None),
    "esc4": (Policy(wave=4, rule="esc", window=4), None, None),
    "esc2": (Policy(wave=2, rule="esc", window=2), None, None),
    "prune_keep90": (Policy(prune=True, warmup=4, keep=0.9), None, None),
    "prune_keep50": (Policy(prune=True, warmup=4, keep=0.5), None, None),
    "beta95_wave4_prune90": (
        Policy(wave=4, rule="beta", confidence=0.95, prune=True, warmup=4, keep=0.9),
        None,
        None,
    ),
    "wave4_prune50": (Policy(wave=4, prune=True, warmup=4, keep=0.5), None, None),
    "esc4_prune50": (
        Policy(wave=4, rule="esc", window=4, prune=True, warmup=4, keep=0.5),
        None,
        None,
    ),
    "filter_min50": (Policy(), None, ("min_conf", 0.5)),
    "filter_tail50": (Policy(), None, ("tail_conf", 0.5)),
    "filter_min90": (Policy(), None, ("min_conf", 0.9)),
}


def load_pool(out: Path, scale: float):
    """problem_id -> (answer, [PoolTrace] by sample), and the trace files."""
    import pyarrow.parquet as pq

    from aimo.answers import in_range
    from aimo.replay import PoolTrace

    files = sorted((out / "traces").glob("*.parquet"))
    truth = {
        r["problem_id"]: r["answer"] for r in pq.read_table(out / "problems.parquet").to_pylist()
    }
    pool = {}
    cols = ["problem_id", "sample", "answer_int", "completion_tokens", "window_conf", "min_conf"]
    for f in files:
        for r in pq.read_table(f, columns=cols + ["tail_conf"]).to_pylist():
            a = r["answer_int"]
            pool.setdefault(r["problem_id"], {})[r["sample"]] = PoolTrace(
                a if a is not None and in_range(a) else None,
                max(1, int(r["completion_tokens"] * scale)),
                r["window_conf"],
                r["min_conf"],
                r["tail_conf"],
            )
    return {p: (truth[p], [s[k] for k in sorted(s)]) for p, s in pool.items()}, files


def default_vote(out: Path, files, cfg, n: int) -> dict:
    """problem_id -> the config's vote over samples < n (the real SQL vote)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from aimo.vote import vote_table

    with tempfile.TemporaryDirectory() as tmp:
        traces, execs = [], []
        for f in files:
            t = pq.read_table(f)
            t = t.filter(pc.less(t["sample"], n))
            pq.write_table(t, Path(tmp, "t" + f.name))
            traces.append(Path(tmp, "t" + f.name))
            e = pq.read_table(out / "executions" / f.name)
            keep = set(t["trace_id"].to_pylist())
            e = e.filter(pc.is_in(e["trace_id"], value_set=pa.array(sorted(keep))))
            pq.write_table(e, Path(tmp, "e" + f.name))
            execs.append(Path(tmp, "e" + f.name))
        table = vote_table(out / "problems.parquet", traces, execs, cfg["vote"])
    return {r["problem_id"]: r["answer"] for r in table.to_pylist()}


def bootstrap(diffs: list, rng: random.Random, n: int = 2000):
    means = []
    for _ in range(n):
        sample = [diffs[rng.randrange(len(diffs))] for _ in diffs]
        means.append(sum(sample) / len(sample))
    means.sort()
    return means[int(0.025 * n)], means[int(0.975 * n) - 1]


def table(pool, base_default, n, args, cfg):
    from aimo.replay import confidence_vote, majority, replay, wall_s

    sampling = cfg["sampling"]
    # scaled traces: their window means stand for windows scaled alike
    window = max(1, round(sampling["conf_window"] * args.scale))
    stride = max(1, round(sampling["conf_stride"] * args.scale))
    rng = random.Random(args.seed)
    orders = {
        p: [rng.sample(range(len(ts)), len(ts))[:n] for _ in range(args.replays)]
        for p, (_, ts) in pool.items()
    }
    problems = sorted(pool)
    results = {}
    for name, (policy, k, offline) in POLICIES.items():
        acc, tokens, wall, started = {}, 0, 0.0, 0
        for p in problems:
            truth, ts = pool[p]
            right = 0
            for order in orders[p]:
                o = replay([ts[i] for i in order], policy, k, window, stride)
                answer = confidence_vote(o.votes, *offline) if offline else majority(o.votes)
                right += answer == truth
                tokens += o.tokens
                started += o.started
                wall += wall_s(o.segments, args.peak, args.half)
            acc[p] = right / args.replays
        results[name] = (acc, tokens / args.replays, wall / args.replays, started / args.replays)
    base_acc, base_tokens, base_wall, _ = results["all"]
    brng = random.Random(args.seed + 1)
    default = {p: float(base_default.get(p) == pool[p][0]) for p in problems}
    print(
        f"\nN = {n}: {len(problems)} problems x {args.replays} replays; default vote "
        f"({cfg['vote']['strategy']}, all {n}): {sum(default.values())}/{len(problems)}"
    )
    print(
        f"{'policy':<22} {'acc%':>6} {'vs maj (95%)':>20} {'vs default (95%)':>20} "
        f"{'tokens':>8} {'x all':>6} {'wall s':>8} {'x all':>6} {'samples':>7}"
    )
    for name, (acc, tokens, wall, started) in results.items():
        a = 100 * sum(acc.values()) / len(problems)
        d1 = [acc[p] - base_acc[p] for p in problems]
        d2 = [acc[p] - default[p] for p in problems]
        lo1, hi1 = bootstrap(d1, brng)
        lo2, hi2 = bootstrap(d2, brng)
        print(
            f"{name:<22} {a:6.1f} {100 * sum(d1) / len(d1):+6.1f} ({100 * lo1:+.1f}..{100 * hi1:+.1f})"
            f" {100 * sum(d2) / len(d2):+6.1f} ({100 * lo2:+.1f}..{100 * hi2:+.1f}) "
            f"{tokens:8.0f} {tokens / base_tokens:6.2f} {wall:8.0f} {wall / base_wall:6.2f} "
            f"{started / len(problems):7.1f}"
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", default=str(ROOT / "runs/vote_bench/gsm8k_dev-60x16"))
    ap.add_argument("--config", nargs="+", default=[str(ROOT / "config.yaml")])
    ap.add_argument("--replays", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--peak", type=float, default=63.0, help="decode curve: tokens/s in all")
    ap.add_argument("--half", type=float, default=23.5, help="decode curve: half-rate batch")
    ap.add_argument("--scale", type=float, default=1.0, help="scale the traces' lengths")
    ap.add_argument("--n", type=int, nargs="+", default=[16, 8])
    args = ap.parse_args()
    from aimo import config as aimo_config

    cfg = aimo_config.load(args.config)
    out = Path(args.pool)
    pool, files = load_pool(out, args.scale)
    if not pool:
        sys.exit(
            f"{out}: no chunk there yet; run bench/vote_bench.py --limit 60 --samples 16 --chunk 5"
        )
    print(
        f"pool {out}: {len(pool)} problems, {len(files)} chunks; curve peak {args.peak}, "
        f"half {args.half}, lengths x{args.scale}"
    )
    for n in args.n:
        table(pool, default_vote(out, files, cfg, n), n, args, cfg)


if __name__ == "__main__":
    main()
