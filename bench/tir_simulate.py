"""Lock-step rounds against continuous batching at the plan's scale, which this machine cannot run:
a small simulator that replays real traces' per-round token counts and sandbox times on a GPU
decode-rate curve.

Each simulated trace is a real trace's rounds (completion tokens of each engine round, the wall
time of each code block, the tokens of each output), drawn with replacement from the shards
given, its token counts optionally scaled (`--scale`: a reasoning model writes far longer
traces than the 1.5B here). One problem at a time with N traces, as in the competition.

The GPU: a 32B model in bf16 on one H100. Aggregate decode rate with B sequences running is
`peak * B / (B + half)`, with peak 3000 tokens/s and half 78 (so one sequence decodes at ~38
tokens/s and 64 at ~1350 tokens/s; public vLLM figures for 32B models on an H100 are in that
range, and rules/common.smk plans with ~2800 at large batches). At most `--kv-tokens` of
context fit in the KV cache (46k: 12 GB left beside 64 GB of weights, at 262 kB a token for
Qwen2.5-32B); sequences beyond what fits wait. Continuation prefill is left out for both modes
(the prefix cache serves both; the scheduler's exact token ids only make its hits longer).
The sandbox runs `--workers` blocks at once.

    .venv/bin/python bench/tir_simulate.py results/bench/tir_scheduler/1-scheduler.parquet
"""

import argparse
import heapq
import random
import sys
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
CHARS_PER_TOKEN = 3.5


def rate(batch: int, peak: float, half: float) -> float:
    """Tokens/s of one sequence when `batch` decode together."""
    return peak / (batch + half) if batch else 0.0


def profiles(paths, scale: float):
    """Per trace: [(tokens, sandbox_s, output_tokens), ...], one tuple per engine round."""
    out = []
    for path in paths:
        for r in pq.read_table(
            path, columns=["round_tokens", "code_blocks", "prompt_tokens"]
        ).to_pylist():
            rounds = r["round_tokens"] or []
            blocks = r["code_blocks"] or []
            if not rounds:
                continue
            prof = []
            for i, tokens in enumerate(rounds):
                block = blocks[i] if i < len(blocks) else None
                prof.append(
                    (
                        max(1, int(tokens * scale)),
                        block["wall_s"] if block else None,
                        int(len(block["output"] or "") / CHARS_PER_TOKEN) if block else 0,
                    )
                )
            out.append((r["prompt_tokens"], prof))
    return out


class Sandbox:
    """`workers` blocks at once; returns when each block submitted at `t` ends."""

    def __init__(self, workers):
        self.free = [0.0] * workers

    def submit(self, t, seconds):
        start = max(t, heapq.heappop(self.free))
        heapq.heappush(self.free, start + seconds)
        return start + seconds


def decode_until(running, t, peak, half, stop_at=None):
    """Advance every running sequence until the first finishes (or `stop_at`); return the new
    time and the sequences that finished their round."""
    if not running:
        return stop_at, []
    r = rate(len(running), peak, half)
    dt = min(s["left"] for s in running) / r
    if stop_at is not None and t + dt > stop_at:
        dt = stop_at - t
    for s in running:
        s["left"] -= r * dt
    done = [s for s in running if s["left"] <= 1e-9]
    return t + dt, done


def context(s):
    return s["prompt"] + sum(tok + out for tok, _, out in s["prof"][: s["round"] + 1])


def admit(queue, running, kv_tokens):
    while (
        queue
        and sum(context(s) for s in running) + context(queue[0]) <= kv_tokens
        or (queue and not running)
    ):
        running.append(queue.pop(0))


def continuous(traces, peak, half, kv_tokens, workers):
    sb, t = Sandbox(workers), 0.0
    queue = [dict(prompt=p, prof=prof, round=0, left=prof[0][0]) for p, prof in traces]
    running, waiting = [], []  # waiting: (time the code returns, trace)
    while queue or running or waiting:
        admit(queue, running, kv_tokens)
        next_code = min((w[0] for w in waiting), default=None)
        t_new, done = decode_until(running, t, peak, half, next_code)
        t = t_new if t_new is not None else t
        for s in done:
            running.remove(s)
            _, code_s, _ = s["prof"][s["round"]]
            if s["round"] + 1 < len(s["prof"]) and code_s is not None:
                waiting.append((sb.submit(t, code_s), s))
        for w in [w for w in waiting if w[0] <= t + 1e-9]:
            waiting.remove(w)
            s = w[1]
            s["round"] += 1
            s["left"] = s["prof"][s["round"]][0]
            queue.insert(0, s)  # continuations first
    return t


def lockstep(traces, peak, half, kv_tokens, workers):
    t = 0.0
    active = [dict(prompt=p, prof=prof, round=0) for p, prof in traces]
    while active:
        queue = [dict(s, left=s["prof"][s["round"]][0]) for s in active]
        running, ended = [], []
        while queue or running:
            admit(queue, running, kv_tokens)
            t, done = decode_until(running, t, peak, half)
            for s in done:
                running.remove(s)
                ended.append(s)
        sb, finish, nxt = Sandbox(workers), t, []
        for s in ended:
            _, code_s, _ = s["prof"][s["round"]]
            if s["round"] + 1 < len(s["prof"]) and code_s is not None:
                finish = max(finish, sb.submit(t, code_s))
                nxt.append(dict(s, round=s["round"] + 1))
        t, active = finish, nxt
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "shards",
        nargs="*",
        help="trace shards with round_tokens (default: the "
        "scheduler benchmark's and results/generate)",
    )
    ap.add_argument("--n", default="8,64,1024", help="traces per problem")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every round's tokens")
    ap.add_argument("--peak", type=float, default=3000.0)
    ap.add_argument("--half", type=float, default=78.0)
    ap.add_argument("--kv-tokens", type=int, default=46_000)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--problems", type=int, default=5, help="problems simulated per N (mean)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    paths = args.shards or sorted(
        ROOT.glob("results/bench/tir_scheduler/*-scheduler.parquet")
    ) + sorted(ROOT.glob("results/generate/shard-*.parquet"))
    pool = profiles(paths, args.scale)
    if not pool:
        sys.exit(f"no traces with round_tokens in {[str(p) for p in paths]}")
    rounds = sum(len(p) for _, p in pool) / len(pool)
    print(
        f"{len(pool)} real traces from {len(paths)} shard(s), {rounds:.2f} rounds each, "
        f"tokens x{args.scale}; GPU curve peak {args.peak:.0f} tokens/s, half {args.half:.0f}, "
        f"KV {args.kv_tokens} tokens; {args.workers} sandbox workers"
    )
    print("\n| traces per problem | lock-step s/problem | continuous s/problem | speed-up |")
    print("|---|---|---|---|")
    rng = random.Random(args.seed)
    for n in map(int, args.n.split(",")):
        ls = cb = 0.0
        for _ in range(args.problems):
            traces = [rng.choice(pool) for _ in range(n)]
            ls += lockstep(traces, args.peak, args.half, args.kv_tokens, args.workers)
            cb += continuous(traces, args.peak, args.half, args.kv_tokens, args.workers)
        print(f"| {n} | {ls / args.problems:.1f} | {cb / args.problems:.1f} | {ls / cb:.2f}x |")


if __name__ == "__main__":
    main()
