"""What the token confidences cost: the scheduler folds every sampled token's top-k
log-probabilities into its entropies (aimo.tir.Entropy) and confidences (aimo.tir.Confidence)
in Python, on the engine's thread. Times both folds per token, and the share of a decode
step's time per token that is at a given aggregate decode rate.

    .venv/bin/python bench/confidence_cost.py --rate 75
"""

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aimo.tir import Confidence, Entropy  # noqa: E402


def per_token_us(make, positions) -> float:
    best = float("inf")
    for _ in range(3):
        fold = make()
        tick = time.perf_counter()
        for p in positions:
            fold.add(p)
        best = min(best, time.perf_counter() - tick)
    return 1e6 * best / len(positions)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=200_000)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--rate", type=float, default=75.0, help="tokens/s of the engine, in all")
    args = ap.parse_args()
    rng = random.Random(0)
    positions = [
        sorted((-rng.expovariate(0.5) for _ in range(args.k)), reverse=True)
        for _ in range(args.tokens)
    ]
    entropy = per_token_us(Entropy, positions)
    conf = per_token_us(Confidence, positions)
    step_us = 1e6 / args.rate
    print(
        f"top-{args.k}, {args.tokens} tokens: entropy {entropy:.2f} us/token, confidence "
        f"{conf:.2f} us/token; at {args.rate:.0f} tokens/s a token takes {step_us:.0f} us: "
        f"the confidence fold is {100 * conf / step_us:.3f}% of it"
    )


if __name__ == "__main__":
    main()
