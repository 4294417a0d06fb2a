"""Eager or compiled (`engine.enforce_eager`): the engine's start-up and its decode rate.

Starts the engine on --model once per mode (eager, compiled) in one process, times the start,
then decodes fixed-length completions (ignore_eos, --tokens each) of one prompt at each width
(sequences at once) and reports tokens/s. The start a compiled engine adds is repaid after
start_extra / (1/rate_eager - 1/rate_compiled) tokens at that width.

    .venv/bin/python bench/eager.py --model resources/models/qwen2.5-coder-1.5b-instruct
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "resources/models/qwen2.5-coder-1.5b-instruct"))
    ap.add_argument("--widths", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--modes", nargs="+", default=["eager", "compiled"])
    args = ap.parse_args(argv)
    bad = set(args.modes) - {"eager", "compiled"}
    if bad:
        ap.error(f"--modes {sorted(bad)}: expected eager and/or compiled")
    return args


def measure(mode: str, args) -> dict:
    from vllm import SamplingParams

    from aimo.engines import embedded as engine

    started = time.time()
    llm = engine.load(args.model, dtype="auto", max_model_len=2048, enforce_eager=mode == "eager")
    start_s = time.time() - started
    prompt = "Write a long story about a prime number."
    rates = {}
    try:
        llm.generate([prompt], SamplingParams(max_tokens=8), use_tqdm=False)  # warm
        for width in args.widths:
            params = SamplingParams(
                temperature=0.8, max_tokens=args.tokens, ignore_eos=True, seed=0
            )
            t = time.time()
            outs = llm.generate([prompt] * width, params, use_tqdm=False)
            tokens = sum(len(o.outputs[0].token_ids) for o in outs)
            rates[width] = tokens / (time.time() - t)
    finally:
        engine.shutdown(llm)
    return {"mode": mode, "start_s": start_s, "rates": rates}


def main(args):
    from stream import cpu  # bench/stream.py: the CPU's model and flags

    print(cpu())
    results = [measure(mode, args) for mode in args.modes]
    head = " | ".join(f"tokens/s at {w}" for w in args.widths)
    print(f"\n| mode | start s | {head} |")
    print("|---|---|" + "---|" * len(args.widths))
    for r in results:
        cells = " | ".join(f"{r['rates'][w]:.1f}" for w in args.widths)
        print(f"| {r['mode']} | {r['start_s']:.0f} | {cells} |")


if __name__ == "__main__":
    main(parse())
