"""Widths replayed: one problem at a time at a width, with a deadline, over a stored pool.

The pool is `bench/vote_bench.py`'s (N samples of each problem, best made with the online run's
`tir` keys so its traces are what an online sample writes). Each setting is replayed
(aimo.replay: the scheduler's own decisions, early stop at --k) with the problem's deadline in
ticks: a tick is one token of every running trace, so --budget seconds are budget x the
per-sequence rate at the setting's width (--rates, tokens/s a sequence, measured on the machine:
bench/eager.py's rate at that width / width, times --share for what the online run gets of the
raw engine). `all` is today's online run (the first 8 samples at once); `wW` streams up to all N,
W at a time, with finish_by_deadline. Per setting, over --replays shuffled orders and once in
sample order (the live run's seeds): majority accuracy, valid votes a problem, samples started.

    .venv/bin/python bench/stream_replay.py --pool runs/vote_bench/math500_int_dev-12x32 \\
        --budget 240 --settings all w8 w16 w32
"""

import argparse
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from replay import load_pool  # noqa: E402
from stream import is_setting  # noqa: E402

# tokens/s a sequence of the raw engine at a width: AMD EPYC, avx512_bf16, the 1.5B in bf16
# (bench/eager.py: 62.9, 111.4, 134.3, 157.7 tokens/s at 8, 16, 32, 64)
RATES = {8: 7.9, 16: 7.0, 32: 4.2, 64: 2.5}


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", default=str(ROOT / "runs/vote_bench/math500_int_dev-12x32"))
    ap.add_argument("--budget", type=float, default=240.0, help="seconds a problem")
    ap.add_argument("--settings", nargs="+", default=["all", "w8", "w16", "w32"])
    ap.add_argument("--k", type=int, default=4, help="early stop: this many agreeing")
    ap.add_argument("--rates", default=",".join(f"{w}:{r}" for w, r in RATES.items()))
    ap.add_argument("--share", type=float, default=0.82, help="online rate / raw engine rate")
    ap.add_argument("--replays", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.rates = {int(w): float(r) for w, r in (x.split(":") for x in args.rates.split(","))}
    for s in args.settings:
        if not is_setting(s):
            ap.error(f"setting {s!r}: expected all or wW, e.g. w8")
    return args


def rate(rates: dict, width: int) -> float:
    """Tokens/s a sequence at `width`: the nearest measured width at or above it (or the
    widest measured)."""
    above = [w for w in sorted(rates) if w >= width]
    return rates[above[0] if above else max(rates)]


def setting(name: str, n: int):
    """(Policy, samples it may draw, width) of a setting."""
    from aimo.policies import Policy

    if name == "all":
        return Policy(), min(8, n), min(8, n)
    width = int(name[1:])
    return Policy(wave=width), n, width


def run(name, pool, orders, args):
    from aimo.replay import majority, replay

    n = min(len(ts) for _, ts in pool.values())
    policy, most, width = setting(name, n)
    deadline = int(args.budget * rate(args.rates, width) * args.share)
    right = votes = started = 0.0
    in_order = {}
    for p, (truth, ts) in pool.items():
        for order in orders[p]:
            o = replay([ts[i] for i in order[:most]], policy, args.k, deadline=deadline)
            right += majority(o.votes) == truth
            votes += len(o.votes)
            started += o.started
        o = replay(ts[:most], policy, args.k, deadline=deadline)
        in_order[p] = (len(o.votes), o.started, majority(o.votes) == truth)
    runs = len(pool) * args.replays
    return {
        "setting": name,
        "deadline": deadline,
        "right": right / args.replays,
        "votes": votes / runs,
        "started": started / runs,
        "in_order": in_order,
    }


def main(args):
    pool, _ = load_pool(Path(args.pool), 1.0)
    rng = random.Random(args.seed)
    orders = {
        p: [rng.sample(range(len(ts)), len(ts)) for _ in range(args.replays)]
        for p, (_, ts) in pool.items()
    }
    print(f"{len(pool)} problems of {args.pool}, {args.budget:.0f} s each, early stop at {args.k}")
    print(
        "\n| setting | deadline (ticks) | right (shuffled orders) | valid votes / problem "
        "| samples started / problem |"
    )
    print("|---|---|---|---|---|")
    results = [run(name, pool, orders, args) for name in args.settings]
    for r in results:
        print(
            f"| {r['setting']} | {r['deadline']} | {r['right']:.2f}/{len(pool)} | {r['votes']:.1f} "
            f"| {r['started']:.1f} |"
        )
    print("\nIn sample order (the live run's seeds): valid votes, started, right, per problem")
    for r in results:
        cells = " ".join(f"{v}/{s}{'+' if ok else '-'}" for v, s, ok in r["in_order"].values())
        print(f"  {r['setting']:>4}: {cells}")


if __name__ == "__main__":
    main(parse())
