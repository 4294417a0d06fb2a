"""The tool-integrated reasoning loop: generate until a code block, run it, append its output, go on.

All traces of a batch advance together, one round at a time: one vLLM call for every active
trace (stopping at the ```output fence the model would otherwise invent), then the round's code
blocks run in the sandbox in parallel, then the real outputs are appended. Knows nothing of
files or Snakemake.
"""
import hashlib
import logging
import re
import time
from dataclasses import dataclass, field

from aimo.answers import answer_int64, extract_answer
from aimo.prompts import CODE_FENCE, FENCE_END, OUTPUT_FENCE, output_block

log = logging.getLogger("aimo.tir")

CODE_RE = re.compile(re.escape(CODE_FENCE) + r"[ \t]*\n(.*?)(?:" + re.escape(FENCE_END) + r"|\Z)",
                     re.DOTALL)


def derive_seed(*parts) -> int:
    """A stable 63-bit seed from any parts, e.g. (global seed, problem id, sample index)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def last_code_block(text: str) -> str | None:
    """The last ```python block of `text` (a block cut off by the output fence counts too)."""
    blocks = CODE_RE.findall(text)
    return blocks[-1].strip() if blocks and blocks[-1].strip() else None


@dataclass
class Request:
    """One trace to produce: who it is and the chat messages that start it."""
    trace_id: str
    problem_id: str
    sample: int
    seed: int
    messages: list
    source: str = "generate"
    parent_id: str | None = None
    attempt: int = 0


@dataclass
class _State:
    request: Request
    prompt: str
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprob_sum: float = 0.0
    blocks: list = field(default_factory=list)
    session: object = None
    finish_reason: str | None = None


def sampling_params(sampling: dict, seed: int, max_tokens: int):
    """vLLM SamplingParams for one round of one trace."""
    from vllm import SamplingParams
    return SamplingParams(temperature=sampling["temperature"], top_p=sampling["top_p"],
                          max_tokens=max_tokens, seed=seed, stop=[OUTPUT_FENCE], logprobs=0)


def run(llm, requests, sandbox, sampling: dict, max_rounds: int, max_model_len: int, stats=None):
    """Produce one trace row (a dict of the TRACES columns) per request, in request order.

    `sampling` holds temperature, top_p and max_tokens (the completion budget of a whole
    trace, code outputs excluded); `max_rounds` bounds the code blocks run per trace.
    `stats`, if given, accumulates the wall time spent in the engine and waiting for the
    sandbox (`engine_s`, `sandbox_wait_s`), so a benchmark can tell where the time went.
    """
    stats = {} if stats is None else stats
    tokenizer = llm.get_tokenizer()
    states = []
    for req in requests:
        prompt = tokenizer.apply_chat_template(req.messages, add_generation_prompt=True,
                                               tokenize=False)
        states.append(_State(req, prompt, prompt_tokens=len(tokenizer.encode(prompt))))
    active, round_no, started = list(states), 0, time.time()
    while active:
        batch, params = [], []
        for st in active:
            context = st.prompt_tokens + len(tokenizer.encode(st.text)) if st.text else st.prompt_tokens
            budget = min(sampling["max_tokens"] - st.completion_tokens, max_model_len - context - 1)
            if budget <= 0:
                st.finish_reason = "length"
                continue
            batch.append(st)
            params.append(sampling_params(sampling, derive_seed(st.request.seed, round_no), budget))
        tick = time.time()
        outputs = llm.generate([st.prompt + st.text for st in batch], params) if batch else []
        stats["engine_s"] = stats.get("engine_s", 0.0) + time.time() - tick
        to_run = []
        for st, out in zip(batch, outputs):
            comp = out.outputs[0]
            st.text += comp.text
            st.completion_tokens += len(comp.token_ids)
            st.logprob_sum += comp.cumulative_logprob or 0.0
            at_fence = comp.finish_reason == "stop" and comp.stop_reason == OUTPUT_FENCE
            code = last_code_block(comp.text) if at_fence else None
            if code is None:
                st.finish_reason = comp.finish_reason if not at_fence else "stop"
            elif len(st.blocks) >= max_rounds:
                st.finish_reason = "max_rounds"
            else:
                if not st.text.endswith("\n"):
                    st.text += "\n"
                to_run.append((st, code))
        if to_run:
            for st, _ in to_run:
                if st.session is None:
                    st.session = sandbox.session()
            tick = time.time()
            results = sandbox.run_round([(st.session, code) for st, code in to_run])
            stats["sandbox_wait_s"] = stats.get("sandbox_wait_s", 0.0) + time.time() - tick
            for (st, code), res in zip(to_run, results):
                st.blocks.append({"code": code, "output": res.output, "status": res.status,
                                  "wall_s": res.wall_s})
                st.text += output_block(res.output)
        for st in active:
            if st.finish_reason and st.session is not None:
                st.session.close()
                st.session = None
        active = [st for st in active if st.finish_reason is None]
        round_no += 1
        done = len(states) - len(active)
        tokens = sum(st.completion_tokens for st in states)
        log.info("round %d: %d/%d traces done, %d code blocks run, %d tokens, %.1f tokens/s",
                 round_no, done, len(states), len(to_run), tokens,
                 tokens / max(time.time() - started, 1e-9))
    return [_row(st) for st in states]


ANY_CODE_RE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```(?:\s*```output[ \t]*\n(.*?)```)?",
                         re.DOTALL)


def row_from_text(request: Request, text: str, prompt: str = "", code_text: str | None = None) -> dict:
    """A trace row for a completion produced elsewhere (another model's traces, a data set):
    its code blocks are parsed from `code_text` (default: the text; ```python or bare fences,
    with the ```output that follows, if any) and marked `not_run`; the execute stage runs them."""
    st = _State(request, prompt, text=text, finish_reason="stop")
    for code, output in ANY_CODE_RE.findall(text if code_text is None else code_text):
        if code.strip():
            st.blocks.append({"code": code.strip(), "output": output, "status": "not_run",
                              "wall_s": 0.0})
    return _row(st)


def _row(st: _State) -> dict:
    answer = extract_answer(st.text)
    statuses = [b["status"] for b in st.blocks]
    req = st.request
    return {
        "trace_id": req.trace_id, "problem_id": req.problem_id, "sample": req.sample,
        "seed": req.seed, "source": req.source, "parent_id": req.parent_id,
        "attempt": req.attempt, "prompt": st.prompt, "text": st.text,
        "prompt_tokens": st.prompt_tokens, "completion_tokens": st.completion_tokens,
        "code_blocks": st.blocks, "n_code_calls": len(st.blocks),
        "n_code_errors": sum(s not in ("ok", "not_run") for s in statuses),
        "n_code_timeouts": statuses.count("timeout"),
        "exec_s": sum(b["wall_s"] for b in st.blocks),
        "finish_reason": st.finish_reason, "answer": answer,
        "answer_int": answer_int64(answer),
        "mean_logprob": st.logprob_sum / st.completion_tokens if st.completion_tokens else None,
        "changed": None,
    }
