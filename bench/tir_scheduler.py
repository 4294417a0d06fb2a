"""Lock-step rounds against the continuous-batching scheduler's two schedules, on the same
requests, in one process, on one engine (its core in this process, as the batch stages run it).

The lock-step loop (the project's TIR loop before aimo/scheduler.py, kept here as the baseline)
sends every active trace to the engine at once, as `prompt + text` strings, waits for the
slowest, runs every code block, and starts the next round. The scheduler runs each trace on its
own (aimo/scheduler.py): `deterministic` (a block rejoins `rejoin_steps` engine steps after its
launch, the loop waiting if it is late) or `free` (as soon as it returns). The raw engine
generates the same first prompts with no stop at the output fence and no code: the rate the
stage could reach. Each schedule named twice in --modes runs twice: how many traces the two
runs share token for token.

    .venv/bin/python bench/tir_scheduler.py                        # default model, data/problems.csv
    .venv/bin/python bench/tir_scheduler.py --samples 2 --limit 3  # a quick look
    .venv/bin/python bench/tir_scheduler.py --config config.yaml --samples 4 --limit 40 \
        --problems ../shared/data/gsm8k_dev.jsonl                  # a user's run's shape

Prints one row per mode and writes the traces (with their per-round token counts, which
bench/tir_simulate.py replays) to --out.
"""

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def lockstep(llm, requests, sandbox, sampling, max_rounds, max_model_len, stats):
    """The old loop: one engine pass per round over every active trace, text prompts."""
    from vllm.sampling_params import RequestOutputKind

    from aimo import scheduler, tir
    from aimo.engines import embedded
    from aimo.prompts import OUTPUT_FENCE, output_block

    eng, tok = llm.llm_engine, llm.get_tokenizer()
    traces = []
    for req in requests:
        prompt = tok.apply_chat_template(req.messages, add_generation_prompt=True, tokenize=False)
        traces.append(tir.Trace(req, prompt, prompt_tokens=len(tok.encode(prompt))))
    active, round_no, started = list(traces), 0, time.monotonic()
    sessions = {}
    while active:
        batch = {}
        for t in active:
            context = t.prompt_tokens + (len(tok.encode(t.text)) if t.text else 0)
            budget = min(sampling["max_tokens"] - t.completion_tokens, max_model_len - context - 1)
            if budget <= 0:
                t.finish_reason = "length"
                continue
            params = embedded.sampling_params(
                scheduler.round_params(sampling, tir.derive_seed(t.request.seed, round_no), budget)
            )
            params.output_kind = RequestOutputKind.FINAL_ONLY
            rid = f"ls{round_no}:{t.request.trace_id}"
            eng.add_request(rid, t.prompt + t.text, params)
            batch[rid] = t
            if round_no:
                stats["continuations"] += 1
                stats["continuation_prompt_tokens"] += context
        outputs = {}
        while eng.has_unfinished_requests():
            stats["steps"] += 1
            stats["running_sum"] += eng.get_num_unfinished_requests()
            tick = time.monotonic()
            for out in eng.step():
                if out.finished:
                    outputs[out.request_id] = out
            stats["step_s"] += time.monotonic() - tick
        to_run = []
        for rid, t in batch.items():
            out = outputs[rid]
            comp = out.outputs[0]
            if round_no:
                stats["cached_tokens"] += out.num_cached_tokens or 0
            t.text += comp.text
            t.completion_tokens += len(comp.token_ids)
            t.round_tokens.append(len(comp.token_ids))
            t.logprob_sum += comp.cumulative_logprob or 0.0
            at_fence = comp.finish_reason == "stop" and comp.stop_reason == OUTPUT_FENCE
            code = tir.last_code_block(comp.text) if at_fence else None
            if code is None:
                t.finish_reason = "stop" if at_fence else comp.finish_reason
            elif len(t.blocks) >= max_rounds:
                t.finish_reason = "max_rounds"
            else:
                if not t.text.endswith("\n"):
                    t.text += "\n"
                to_run.append((t, code))
        tick = time.monotonic()
        for t, _ in to_run:
            if t.request.trace_id not in sessions:
                sessions[t.request.trace_id] = sandbox.session(
                    seed=tir.sandbox_seed(t.request.seed)
                )
        results = sandbox.run_round([(sessions[t.request.trace_id], code) for t, code in to_run])
        stats["idle_s"] += time.monotonic() - tick
        for (t, code), res in zip(to_run, results):
            t.blocks.append(
                {"code": code, "output": res.output, "status": res.status, "wall_s": res.wall_s}
            )
            t.text += output_block(res.output)
        active = [t for t in active if t.finish_reason is None]
        round_no += 1
    for s in sessions.values():
        s.close()
    stats["wall_s"] += time.monotonic() - started
    return [tir.row(t) for t in traces]


def raw(llm, requests, sampling, stats):
    """The same first prompts, no fence, no code: the engine's own rate on this workload."""
    from vllm.sampling_params import RequestOutputKind

    from aimo import scheduler
    from aimo.engines import embedded

    eng, tok = llm.llm_engine, llm.get_tokenizer()
    started = time.monotonic()
    tokens = 0
    for req in requests:
        prompt = tok.apply_chat_template(req.messages, add_generation_prompt=True, tokenize=False)
        params = embedded.sampling_params(
            scheduler.round_params(sampling, req.seed, sampling["max_tokens"])
        )
        params.stop, params.output_kind = [], RequestOutputKind.FINAL_ONLY
        eng.add_request(f"raw:{req.trace_id}", prompt, params)
    while eng.has_unfinished_requests():
        stats["steps"] += 1
        stats["running_sum"] += eng.get_num_unfinished_requests()
        for out in eng.step():
            if out.finished:
                tokens += len(out.outputs[0].token_ids)
    stats["wall_s"] += time.monotonic() - started
    stats["completion_tokens"] = tokens


def count_preemptions(llm, stats):
    """Count the engine's preemptions (a running request put back, its KV cache freed, its
    tokens computed again later) in stats; needs the engine core in this process."""
    core = llm.llm_engine.engine_core.engine_core.scheduler
    preempt = core._preempt_request

    def counted(request, *args, **kwargs):
        stats["preemptions"] += 1
        stats["tokens_recomputed"] += request.num_computed_tokens
        return preempt(request, *args, **kwargs)

    core._preempt_request = counted


def figures(name, rows, stats):
    tokens = sum(r["completion_tokens"] for r in rows) if rows else stats["completion_tokens"]
    wall = stats["wall_s"]
    conts = stats.get("continuations", 0)
    return {
        "mode": name,
        "wall_s": round(wall, 1),
        "completion_tokens": tokens,
        "tokens_per_s": round(tokens / wall, 2),
        "running_per_step": round(stats["running_sum"] / max(stats["steps"], 1), 1),
        "idle_share": round(stats.get("idle_s", 0) / wall, 3),
        "continuations": conts,
        "cached_per_continuation": round(stats.get("cached_tokens", 0) / max(conts, 1), 1),
        "prompt_per_continuation": round(
            stats.get("continuation_prompt_tokens", 0) / max(conts, 1), 1
        ),
        "tokens_rebuilt": stats.get("tokens_rebuilt", 0),
        "in_flight_max": stats.get("in_flight_max", 0),
        "wait_s": round(stats.get("wait_s", 0), 1),
        "late_blocks": stats.get("late_blocks", 0),
        "preemptions": stats.get("preemptions", 0),
        "tokens_recomputed": stats.get("tokens_recomputed", 0),
        "step_s": round(stats.get("step_s", 0), 1),
    }


def accuracy(rows, answers):
    """Problems whose majority answer over the valid ones is right."""
    from collections import Counter

    right = 0
    for pid, answer in answers.items():
        votes = Counter(
            r["answer_int"]
            for r in rows
            if r["problem_id"] == pid
            and r["answer_int"] is not None
            and 0 <= r["answer_int"] <= 99999
        )
        if votes and answer is not None and min(votes, key=lambda a: (-votes[a], a)) == answer:
            right += 1
    return right


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", default=str(ROOT / "data/problems.csv"))
    ap.add_argument("--model", default=str(ROOT / "resources/models/qwen2.5-coder-1.5b-instruct"))
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=1024)
    ap.add_argument("--limit", type=int, default=0, help="first N problems (0: all)")
    ap.add_argument("--modes", default="lockstep,deterministic,deterministic,free,free,raw")
    ap.add_argument(
        "--config",
        help="take sampling, tir.max_rounds, engine.max_model_len and scheduler from this "
        "config (with the schema's defaults) instead of --rounds and --max-tokens",
    )
    ap.add_argument("--out", default=str(ROOT / "results/bench/tir_scheduler"))
    args = ap.parse_args()

    import logging
    from collections import Counter

    logging.basicConfig(level=logging.WARNING)
    from aimo import config, scheduler
    from aimo.engines import embedded
    from aimo.problems import load as read_problems
    from aimo.sandbox import Sandbox
    from aimo.schemas import TRACES
    from aimo.tables import write_table
    from aimo.tir import requests as tir_requests

    problems = read_problems(args.problems)
    problems = problems[: args.limit] if args.limit else problems
    answers = {p["problem_id"]: p.get("answer") for p in problems}
    requests = tir_requests(problems, range(args.samples), 2026)
    # complete sections: the schema's defaults, log-probabilities off unless a config asks
    sampling = dict(
        config.defaults("sampling"),
        temperature=0.7,
        top_p=0.95,
        max_tokens=args.max_tokens,
        top_logprobs=0,
    )
    rounds, max_len, sched = args.rounds, 4096, config.defaults("scheduler")
    if args.config:
        cfg = config.load([args.config])
        sampling, rounds = cfg["sampling"], cfg["tir"]["max_rounds"]
        max_len, sched = cfg["engine"]["max_model_len"], cfg["scheduler"]
    cpu = "avx512_bf16" if "avx512_bf16" in Path("/proc/cpuinfo").read_text() else "no avx512_bf16"
    print(
        f"{len(problems)} problems x {args.samples} samples, {rounds} rounds, "
        f"{sampling['max_tokens']} tokens, top_logprobs {sampling['top_logprobs']}, "
        f"rejoin_steps {sched['rejoin_steps']}; CPU flags: {cpu}",
        flush=True,
    )
    llm = embedded.load(args.model, dtype="auto", max_model_len=max_len, seed=0, in_process=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, runs, stats = [], {}, Counter()
    count_preemptions(llm, stats)
    with Sandbox(workers=2) as sandbox:
        for i, mode in enumerate(args.modes.split(",")):
            stats.clear()
            rows = []
            if mode == "lockstep":
                rows = lockstep(llm, requests, sandbox, sampling, rounds, max_len, stats)
            elif mode in scheduler.SCHEDULES:
                options = scheduler.RunOptions(
                    sampling,
                    rounds,
                    max_len,
                    max_in_flight=sched["max_in_flight"],
                    schedule=mode,
                    rejoin_steps=sched["rejoin_steps"],
                )
                rows = scheduler.run(embedded.Embedded(llm), requests, sandbox, options, stats)
            elif mode == "raw":
                raw(llm, requests, sampling, stats)
            else:
                raise SystemExit(
                    f"--modes: unknown mode {mode!r} (lockstep, deterministic, free, raw)"
                )
            fig = figures(mode, rows, stats)
            if rows:
                fig["right"] = f"{accuracy(rows, answers)}/{len(problems)}"
                runs.setdefault(mode, []).append(rows)
                write_table(rows, out / f"{i}-{mode}.parquet", TRACES, metadata=fig)
            results.append(fig)
            print(json.dumps(fig), flush=True)
    base = next((r for r in results if r["mode"] == "lockstep"), None)
    rawr = next((r for r in results if r["mode"] == "raw"), None)
    print(
        "\n| mode | wall s | completion tokens | tokens/s | x lock-step | of raw | running/step "
        "| in engine step | idle share | waited for blocks (late) | cached/continuation "
        "(of prompt) | preemptions (tokens recomputed) | right |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        ratio = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}" if base else "-"
        of_raw = f"{r['tokens_per_s'] / rawr['tokens_per_s']:.0%}" if rawr else "-"
        print(
            f"| {r['mode']} | {r['wall_s']} | {r['completion_tokens']} | {r['tokens_per_s']} | "
            f"{ratio} | {of_raw} | {r['running_per_step']} | "
            f"{r['step_s'] / max(r['wall_s'], 1e-9):.0%} | {r['idle_share']:.1%} | "
            f"{r['wait_s']} s ({r['late_blocks']}) | "
            f"{r['cached_per_continuation']} ({r['prompt_per_continuation']}) | "
            f"{r['preemptions']} ({r['tokens_recomputed']}) | {r.get('right', '-')} |"
        )
    for mode, pair in runs.items():
        if len(pair) >= 2:
            a, b = pair[:2]
            same = sum(x["text"] == y["text"] for x, y in zip(a, b))
            print(f"\n{mode} twice: {same}/{len(a)} traces identical token for token")
    if base and runs.get("deterministic"):
        same = sum(
            x["text"] == y["text"] for x, y in zip(runs["lockstep"][0], runs["deterministic"][0])
        )
        print(f"lock-step vs deterministic: {same}/{len(requests)} traces identical")


if __name__ == "__main__":
    main()
