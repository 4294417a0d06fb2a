"""Every trace on its own clock: the continuous-batching TIR loop on vLLM's engine.

Each trace is one engine request per round: it generates until the model closes a code block
(the ```output fence it would otherwise invent) or ends; its code runs in the sandbox on a
worker thread while the engine goes on with the other traces; its continuation (the exact
token ids so far plus the output block's tokens) then joins the running batch. One thread, the
caller's, owns the engine. Per problem, `early_stop` cancels the unfinished traces once k valid
answers agree, `deadline` cancels what is left at a clock time, and a `policies.Policy` starts
samples in waves until a stopping rule is met and prunes traces whose confidence falls below
the problem's threshold. Those decisions are a `policies.Problem`'s (the replay asks the same
one); the loop applies them, ending traces with the reason it returns. Cancelled, pruned and
never-started traces are rows too, with their partial text and tokens (none for a sample never
started).

When a continuation joins is the schedule:
- deterministic (the batch workflow's default): logical time. A block launched after engine
  step s rejoins right before step s + `rejoin_steps`, and the loop waits for it if it is
  late; the backend's step() is one engine step and runs exactly the requests added before it
  (`exact_steps`: the vllm backend with its core in this process). Which requests run in
  which step then follows from the requests, their seeds and the tokens sampled, never from
  how long a block took: vLLM's kernels are not batch-invariant, so that is what makes a
  rerun give the same tokens (on this CPU: the same files; see the README).
- free: a continuation joins as soon as its block returns; no waiting, but the batch of every
  later step follows the sandbox's wall-clock timing.

The engine is an `aimo.engines.Backend`: add with token ids, step, abort, busy. See
docs/engine.md.
"""

import logging
import time
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from aimo import dialects, policies
from aimo.answers import extract_answer, in_range
from aimo.engines import Output, Params
from aimo.prompts import NO_MORE_CODE, OUTPUT_FENCE
from aimo.schemas import CANCELLED, Finish
from aimo.tir import (
    Confidence,
    Entropy,
    Trace,
    derive_seed,
    resolve_think_end,
    row,
    sandbox_seed,
)

log = logging.getLogger("aimo.scheduler")

# where a final answer starts: the tail entropy is of the tokens before the last one
ANSWER_MARK = "\\boxed"
SCHEDULES = ("deterministic", "free")
# Traces in flight per KV-cache slot of a full-length trace: most traces end well short of
# their budget, and vLLM preempts (recomputes) the newest requests if the cache does fill.
OVERCOMMIT = 2
# Traces in flight on a backend that does not say its KV cache's size (a server batches and
# queues what it is sent itself)
SERVER_IN_FLIGHT = 64


@dataclass
class _Live:
    """Scheduler state of one trace beside its Trace: token ids and the request in flight."""

    trace: Trace
    ids: list
    prompt_len: int
    problem: policies.Problem
    session: object = None
    round: int = 0
    rid: str | None = None
    new_ids: list = field(default_factory=list)  # tokens of the request in flight
    new_text: str = ""
    first_output: bool = True  # the request in flight has not reported yet
    code: str | None = None  # the block running in the sandbox
    cancelled: bool = False
    started: bool = False  # its first round was sent (it counts against its problem's wave)
    told: bool = False  # told that no more code runs (answer_after_tools)
    due: int = 0  # deterministic schedule: the engine step its continuation joins before
    launched: int = 0  # order of the block's launch in the run (ties at the same due step)


class _Told:
    """The output a block gets when no more code runs (answer_after_tools)."""

    output = NO_MORE_CODE


def default_max_in_flight(eng, sampling: dict, max_model_len: int) -> int:
    """Traces in flight the engine's KV cache holds: OVERCOMMIT x its tokens / a full trace
    (SERVER_IN_FLIGHT where the backend does not know its cache)."""
    tokens = eng.kv_tokens()
    if tokens is None:
        return SERVER_IN_FLIGHT
    per_trace = min(max_model_len, sampling["max_tokens"] + 512)
    return max(1, OVERCOMMIT * tokens // per_trace)


def round_params(
    sampling: dict, seed, max_tokens: int, stop=(OUTPUT_FENCE,), skip_special=True
) -> Params:
    """The engine's Params for one round of one trace: the config's sampling, the round's seed
    and budget; a round stops at `stop` (the output fence); `skip_special`: the dialect's."""
    return Params(
        temperature=sampling["temperature"],
        top_p=sampling["top_p"],
        max_tokens=max_tokens,
        seed=seed,
        stop=tuple(stop),
        logprobs=sampling["top_logprobs"],
        skip_special=skip_special,
    )


def decode(tokenizer, ids, skip_special=True) -> str:
    """Text of `ids` as vLLM's detokenizer writes it (special tokens skipped unless the
    dialect keeps them)."""
    return tokenizer.decode(
        ids, skip_special_tokens=skip_special, clean_up_tokenization_spaces=False
    )


def tokens_match(tokenizer, live: _Live, skip_special=True) -> bool:
    """The invariant: the ids after the prompt decode to the trace's text."""
    return decode(tokenizer, live.ids[live.prompt_len :], skip_special) == live.trace.text


def _close_quietly(session):
    try:
        session.close()
    except Exception:  # the sandbox may be closed by now
        pass


@dataclass(frozen=True)
class RunOptions:
    """How `run` makes traces: everything but the requests, their deadlines and the clock.

    `sampling` is the config's sampling section, complete (aimo.config.defaults("sampling")
    fills one in): temperature, top_p, max_tokens (the completion budget of a whole trace,
    code outputs excluded), top_logprobs, tail_tokens, conf_window and conf_stride;
    `max_rounds` bounds the code blocks run per trace.
    `max_in_flight` bounds the traces started and not finished (None: sized from the KV
    cache); requests are admitted in order, continuations never wait. `early_stop`: cancel a
    problem's unfinished traces once this many valid answers agree. `threads`: the sandbox
    worker threads. `schedule`: deterministic (needs an in-process engine; a block rejoins
    before the engine step `rejoin_steps` after its launch) or free (as soon as it returns);
    see the module docstring. `stop_at_answer`: a trace ends (finish_reason stop) as soon as
    its text holds a final answer (a closed \\boxed{}); `answer_after_tools`: a trace that
    writes code once its `max_rounds` blocks are used up is told so (NO_MORE_CODE, in place of
    the block's output) and goes on once, to answer, instead of ending at its code
    (max_rounds). `think_end`: the thinking channel's end tag, `auto` or `none`
    (tir.resolve_think_end); with one, the answer is read after it only. `dialect`: how code
    is asked for and its output given back (aimo.dialects: fenced, tools or harmony, whose
    system message states `reasoning_effort`);
    `force_first_call`: every trace's text starts with the dialect's opening of a call (its
    first round writes code). `policy`: waves, stopping rule and pruning per problem
    (aimo.policies; default: none of them).
    `check_tokens`: check after every round that the token ids decode to the text (and
    rebuild them when not).
    """

    sampling: dict
    max_rounds: int
    max_model_len: int
    max_in_flight: int | None = None
    early_stop: int | None = None
    threads: int = 2
    schedule: str = "deterministic"
    rejoin_steps: int = 4
    stop_at_answer: bool = False
    answer_after_tools: bool = False
    think_end: str = "auto"
    dialect: str = "fenced"
    reasoning_effort: str = "high"
    force_first_call: bool = False
    policy: policies.Policy = policies.Policy()
    check_tokens: bool = True

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"scheduler schedule {self.schedule!r}: expected one of {SCHEDULES}")

    @classmethod
    def from_config(cls, params: dict, early_stop=None, threads: int = 2) -> "RunOptions":
        """From a stage's config sections (aimo.config.engine_params: sampling, tir, engine,
        scheduler), each complete; `early_stop` in place of the scheduler's where given."""
        sched, tir = params["scheduler"], params["tir"]
        return cls(
            params["sampling"],
            tir["max_rounds"],
            params["engine"]["max_model_len"],
            max_in_flight=sched["max_in_flight"],
            early_stop=sched["early_stop"] if early_stop is None else early_stop,
            threads=threads,
            schedule=sched["mode"],
            rejoin_steps=sched["rejoin_steps"],
            stop_at_answer=tir["stop_at_answer"],
            answer_after_tools=tir["answer_after_tools"],
            think_end=tir["think_end"],
            dialect=tir["dialect"],
            reasoning_effort=tir["reasoning_effort"],
            force_first_call=tir["force_first_call"],
            policy=policies.Policy.from_config(sched),
        )


def run(
    eng,
    requests,
    sandbox,
    options: RunOptions,
    stats=None,
    deadline=None,
    clock=time.monotonic,
    ids=None,
) -> list[dict]:
    """Produce one trace row (a dict of the TRACES columns) per request, in request order,
    as `options` (RunOptions) say.

    `deadline`: a `clock()` time, or a dict problem_id -> time, after which a problem's
    traces are cancelled.
    `stats`, if given, accumulates where the time went: wall_s, step_s (inside the engine's
    step), idle_s (nothing in the engine while code ran), wait_s and late_blocks (the
    deterministic schedule held the engine for blocks not back when due), steps and
    running_sum (requests in the engine, summed over steps), continuations with their prompt
    and prefix-cache hit tokens, cancelled_<reason>, held_by_deadline (samples never started
    because they could not finish by their problem's deadline), tokens_rebuilt (the token
    invariant failed and the ids were re-tokenised from the text; 0 expected) and
    in_flight_max.
    `ids`, if given (a dict), gets each trace's token ids (prompt and all it wrote) by trace_id:
    what a forced answer (`force`) continues.
    Whatever ends the run, an exception included, nothing of it stays in the engine.
    """
    stats = {} if stats is None else stats
    if options.schedule == "deterministic":
        if not eng.exact_steps:
            raise ValueError(
                f"the deterministic schedule needs a backend whose step is one engine step, "
                f"and engine.backend {eng.name} with this engine's core in another process is "
                "not: use engine.backend vllm (the stages start its core in this process), or "
                "set scheduler.mode: free"
            )
        # nothing cached from earlier runs: a rerun in this process prefills as the first did
        eng.reset_cache()
    loop = _Loop(eng, sandbox, options, clock)
    cap = options.max_in_flight or default_max_in_flight(
        eng, options.sampling, options.max_model_len
    )
    lives = loop.start(requests, deadline)
    try:
        loop.drive(lives, cap)
    finally:
        loop.close()
    for key, value in loop.stats.items():  # *_max are peaks, the rest totals
        stats[key] = (
            max(stats.get(key, 0), value) if key.endswith("_max") else stats.get(key, 0) + value
        )
    if ids is not None:
        ids.update((live.trace.request.trace_id, list(live.ids)) for live in lives)
    return [row(live.trace) for live in lives]


def force(eng, prompts, max_tokens: int, stop, deadline=None, clock=time.monotonic) -> list:
    """Greedy short continuations of token-id `prompts` (a trace's own ids and the question
    that asks for its answer) through the engine's step API, as the loop drives it, never past
    `deadline`: per prompt (text, token count), or None where it had not finished by then (its
    request is aborted). The engine must hold nothing else (`run` leaves it empty)."""
    greedy = {"temperature": 0.0, "top_p": 1.0, "top_logprobs": 0}
    params = round_params(greedy, None, max_tokens, stop)
    _Loop.runs += 1
    open_ = {f"{_Loop.runs}:force#{i}": i for i in range(len(prompts))}
    text, count, done = [""] * len(prompts), [0] * len(prompts), [None] * len(prompts)
    for rid, i in open_.items():
        eng.add(rid, prompts[i], params)
    try:
        while open_ and (deadline is None or clock() < deadline):
            for out in eng.step():
                i = open_.get(out.request_id)
                if i is None:
                    continue
                text[i] += out.text
                count[i] += len(out.token_ids)
                if out.finished:
                    done[i] = (text[i], count[i])
                    del open_[out.request_id]
    finally:
        if open_:  # past the deadline (or an error): nothing stays in the engine
            _abort_quietly(eng, list(open_))
    return done


def _abort_quietly(eng, rids):
    try:
        eng.abort(rids)
    except Exception as exc:  # a dead engine: nothing is running in it anyway
        log.warning("aborting %d requests failed: %s: %s", len(rids), type(exc).__name__, exc)


class _Loop:
    runs = 0

    def __init__(self, eng, sandbox, options: RunOptions, clock):
        self.engine, self.tok = eng, eng.tokenizer
        self.sandbox, self.clock, o = sandbox, clock, options
        self.sampling, self.max_rounds, self.max_model_len = (
            o.sampling,
            o.max_rounds,
            o.max_model_len,
        )
        self.check, self.early_stop, self.policy = o.check_tokens, o.early_stop, o.policy
        self.stop_at_answer, self.answer_after_tools = o.stop_at_answer, o.answer_after_tools
        self.dialect = dialects.get(o.dialect, o.reasoning_effort)
        self.special = set(getattr(self.tok, "all_special_ids", ()))
        self.force_first_call = o.force_first_call
        self.skip_special = not self.dialect.keep_special
        self.think_end = resolve_think_end(
            o.think_end, getattr(self.tok, "chat_template", None), self.dialect.think_end
        )
        self.rejoin_steps = o.rejoin_steps if o.schedule == "deterministic" else None  # None: free
        self.top_k = o.sampling["top_logprobs"]
        self.pool = ThreadPoolExecutor(max(1, o.threads), thread_name_prefix="aimo-tir")
        self.in_engine, self.in_sandbox, self.waiting = {}, {}, deque()
        self.step_no, self.launches = 0, 0  # engine steps taken; code blocks launched
        # seconds a running trace takes per token (one engine step and its outputs), averaged
        # over the recent steps: what finish_by_deadline predicts with; None before a step
        self.per_token = None
        self.stats = Counter()
        _Loop.runs += 1
        self.run_no = _Loop.runs  # request ids stay unique when the same trace is asked again

    # -- start and end -------------------------------------------------------------------
    def start(self, requests, deadline):
        problems, lives = {}, []
        for req in requests:
            prompt = self.dialect.prompt(self.tok, req.messages)
            # the chat template writes any BOS itself; vLLM adds none to token-id prompts
            ids = self.tok.encode(prompt, add_special_tokens=False)
            limit = deadline.get(req.problem_id) if isinstance(deadline, dict) else deadline
            problem = problems.setdefault(
                req.problem_id, policies.Problem(self.policy, self.early_stop, limit)
            )
            problem.open += 1
            tail = self.sampling["tail_tokens"]
            trace = Trace(
                req,
                prompt,
                prompt_tokens=len(ids),
                think_end=self.think_end,
                entropy=Entropy(tail=tail),
                confidence=Confidence(
                    window=self.sampling["conf_window"],
                    stride=self.sampling["conf_stride"],
                    tail=tail,
                ),
            )
            live = _Live(trace, ids, len(ids), problem)
            if self.force_first_call:  # the opening is the trace's text, not its prompt
                trace.text = self.dialect.opening
                live.ids = ids + self.tok.encode(trace.text, add_special_tokens=False)
            lives.append(live)
            self.waiting.append(live)
        self.problems = problems
        return lives

    def close(self):
        # an exception may leave requests in the engine: they would share the batch with the
        # next run's and keep a later step (a forced answer) waiting on them
        if self.in_engine:
            _abort_quietly(self.engine, list(self.in_engine))
            self.in_engine.clear()
        for fut, live in self.in_sandbox.items():
            if fut.cancel():
                _close_quietly(live.session)
            else:  # running: its session closes when it returns
                fut.add_done_callback(lambda _, s=live.session: _close_quietly(s))
        # never wait for a cancelled block (its session closes when it returns); blocks
        # still queued never run
        self.pool.shutdown(wait=False, cancel_futures=True)

    def finish(self, live: _Live, reason: str):
        t = live.trace
        if t.finish_reason is not None:
            return
        t.finish_reason = reason
        if live.new_ids or live.new_text:  # a round cut short: keep what it wrote
            t.text += live.new_text
            live.ids += live.new_ids
            t.completion_tokens += len(live.new_ids)
            t.round_tokens.append(len(live.new_ids))
            live.new_ids, live.new_text = [], ""
        live.problem.open -= 1
        live.problem.running -= live.started
        if live.session is not None and not live.cancelled:
            live.session.close()
            live.session = None
        if reason in CANCELLED:
            self.stats["cancelled_" + reason] += 1
            return
        problem, answer = live.problem, None
        if problem.needs_answers:
            answer = row(t)["answer_int"]
            answer = answer if answer is not None and in_range(answer) else None
        min_conf = t.confidence.summary()["min_conf"] if problem.needs_warmup else None
        # a prompt too long wrote nothing: no length to predict from
        tokens = None if reason == Finish.PROMPT_TOO_LONG else t.completion_tokens
        action = problem.finished(answer, tokens, min_conf)
        if action is not None:
            self.cancel(problem, action)

    def cancel(self, problem: policies.Problem, reason: Finish):
        rids = [rid for rid, live in self.in_engine.items() if live.problem is problem]
        if rids:
            self.engine.abort(rids)  # no output comes for these
        for rid in rids:
            self.finish(self.in_engine.pop(rid), reason)
        for fut, live in list(self.in_sandbox.items()):
            if live.problem is problem:
                del self.in_sandbox[fut]
                live.cancelled = True
                if fut.cancel():  # still queued: it never runs
                    _close_quietly(live.session)
                else:
                    fut.add_done_callback(lambda _, s=live.session: _close_quietly(s))
                self.finish(live, reason)
        for live in [w for w in self.waiting if w.problem is problem]:
            self.waiting.remove(live)
            self.finish(live, Finish.NOT_STARTED)
        problem.deadline = None

    # -- one round of one trace ------------------------------------------------------------
    def launch(self, live: _Live):
        t = live.trace
        if len(live.ids) >= self.max_model_len:
            return self.finish(live, Finish.PROMPT_TOO_LONG if live.round == 0 else Finish.LENGTH)
        budget = min(
            self.sampling["max_tokens"] - t.completion_tokens, self.max_model_len - len(live.ids)
        )
        if budget <= 0:
            return self.finish(live, Finish.LENGTH)
        live.rid = f"{self.run_no}:{t.request.trace_id}#{live.round}"
        live.first_output = True
        seed = derive_seed(t.request.seed, live.round)
        params = round_params(self.sampling, seed, budget, self.dialect.stop, self.skip_special)
        self.engine.add(live.rid, live.ids, params)
        self.in_engine[live.rid] = live
        if live.round:
            self.stats["continuations"] += 1
            self.stats["continuation_prompt_tokens"] += len(live.ids)

    def generated(self, live: _Live, comp: Output):
        """A round ended in the engine: run its code block, or end the trace."""
        t, new_ids, new_text = live.trace, live.new_ids, live.new_text
        live.new_ids, live.new_text = [], ""
        t.completion_tokens += len(new_ids)
        t.round_tokens.append(len(new_ids))
        if comp.cumulative_logprob is None:
            t.logprobs_known = False
        else:
            t.logprob_sum += comp.cumulative_logprob
        stopped = comp.finish_reason == "stop"
        at_fence = stopped and comp.stop_reason in self.dialect.stop
        # a forced first call's opening is the text before the first round's
        opened = self.dialect.opening if self.force_first_call and live.round == 0 else ""
        called = at_fence or (stopped and self.dialect.unclosed(opened + new_text))
        code = self.dialect.code(opened + new_text) if called else None
        told = code is not None and len(t.blocks) >= self.max_rounds
        if told and self.answer_after_tools and not live.told:
            live.told = True  # the block does not run: its output says so, once
        elif code is None or told:
            t.text += new_text
            live.ids += new_ids
            reason = (
                Finish.MAX_ROUNDS if code else (Finish.STOP if at_fence else comp.finish_reason)
            )
            return self.finish(live, reason)
        # Keep the model's own tokens as far as they spell the text that follows (up to the
        # fence); the rest of it is tokenized with the output block once the code has run.
        sep = self.dialect.close(new_text)
        target = t.text + new_text + sep + self.dialect.follows
        keep = len(new_ids)
        while not at_fence and keep and new_ids[keep - 1] in self.special:
            keep -= 1  # a call ended by the end of turn: that token is the tool turn's to write
        while keep and not target.startswith(
            decode(self.tok, live.ids[live.prompt_len :] + new_ids[:keep], self.skip_special)
        ):
            keep -= 1
        live.ids += new_ids[:keep]
        t.text += new_text + sep
        live.code = code
        if live.told:
            return self.executed(live, _Told())
        if live.session is None:
            live.session = self.sandbox.session(seed=sandbox_seed(t.request.seed))
        live.due = self.step_no + (self.rejoin_steps or 0)
        live.launched, self.launches = self.launches, self.launches + 1
        self.in_sandbox[self.pool.submit(live.session.run, code)] = live

    def executed(self, live: _Live, result):
        """A code block returned: append its output and send the continuation."""
        t = live.trace
        if not isinstance(result, _Told):
            t.blocks.append(
                {
                    "code": live.code,
                    "output": result.output,
                    "status": result.status,
                    "wall_s": result.wall_s,
                }
            )
        covered = decode(self.tok, live.ids[live.prompt_len :], self.skip_special)
        turn = self.dialect.result(self.tok, result.output)
        if self.dialect.special_turns:  # the text is what the turn's tokens decode to
            new = self.tok.encode(t.text[len(covered) :] + turn, add_special_tokens=False)
            live.ids += new
            t.text = covered + decode(self.tok, new, self.skip_special)
        else:
            t.text += turn
            live.ids += self.tok.encode(t.text[len(covered) :], add_special_tokens=False)
        if self.check and not tokens_match(self.tok, live, self.skip_special):
            self.stats["tokens_rebuilt"] += 1
            log.warning(
                "%s: token ids and text disagree after round %d",
                t.request.trace_id,
                live.round,
            )
            if not self.dialect.special_turns:  # the text spells every token: rebuild from it
                live.ids = live.ids[: live.prompt_len] + self.tok.encode(
                    t.text, add_special_tokens=False
                )
        live.round += 1
        self.launch(live)

    # -- the loop --------------------------------------------------------------------------
    def drive(self, lives, cap: int):
        started = self.clock()
        last_log = started
        while self.waiting or self.in_engine or self.in_sandbox:
            while self.waiting and len(self.in_engine) + len(self.in_sandbox) < cap:
                live = self.admit()
                if live is None:
                    break
                self.launch(live)
            in_flight = len(self.in_engine) + len(self.in_sandbox)
            self.stats["in_flight_max"] = max(self.stats["in_flight_max"], in_flight)
            now = self.clock()
            for problem in self.problems.values():
                action = problem.ends(now, self.per_token)
                if action is not None:
                    if now < problem.deadline:  # what it has left would not finish
                        self.stats["held_by_deadline"] += problem.open
                    self.cancel(problem, action)
            if self.rejoin_steps is not None and not self.rejoin_due():
                continue  # a due block is not back: no step until it is (or a deadline)
            if self.engine.busy():
                self.stats["steps"] += 1
                self.stats["running_sum"] += len(self.in_engine)
                tick = time.monotonic()
                outputs = self.engine.step()
                self.stats["step_s"] += time.monotonic() - tick
                self.step_no += 1
                for out in outputs:
                    self.take(out)
                took = time.monotonic() - tick
                self.per_token = (
                    took if self.per_token is None else 0.8 * self.per_token + 0.2 * took
                )
            elif self.in_sandbox and self.rejoin_steps is not None:
                # nothing to step: logical time moves on to the next block's due step
                self.step_no = max(self.step_no, min(v.due for v in self.in_sandbox.values()))
            elif self.in_sandbox:
                tick = time.monotonic()
                wait(list(self.in_sandbox), timeout=self._wait_s(), return_when=FIRST_COMPLETED)
                self.stats["idle_s"] += time.monotonic() - tick
            if self.rejoin_steps is None:
                self.rejoin([f for f in self.in_sandbox if f.done()])
            if time.monotonic() - last_log > 30:
                last_log = time.monotonic()
                self._progress(lives, started)
        self.stats["wall_s"] += self.clock() - started
        self._progress(lives, started)

    def admit(self) -> _Live | None:
        """The first waiting trace whose problem has room in its wave and time for it, taken
        out of waiting."""
        for i, live in enumerate(self.waiting):
            if live.problem.may_start(self.clock(), self.per_token):
                del self.waiting[i]
                live.started = True
                live.problem.running += 1
                return live
        return None

    def rejoin_due(self) -> bool:
        """Deterministic schedule: rejoin every block due by now, in (due step, launch) order,
        waiting for those not back yet. False if one is still out (a deadline may be near)."""
        due = sorted(
            (live.due, live.launched, fut)
            for fut, live in self.in_sandbox.items()
            if live.due <= self.step_no
        )
        late = [fut for *_, fut in due if not fut.done()]
        if late:
            busy = self.engine.busy()
            tick = time.monotonic()
            wait(late, timeout=self._wait_s())
            self.stats["wait_s" if busy else "idle_s"] += time.monotonic() - tick
            if not all(fut.done() for fut in late):
                return False
            self.stats["late_blocks"] += len(late) if busy else 0
        self.rejoin([fut for *_, fut in due])
        return True

    def rejoin(self, futures):
        """Send the continuations of these returned blocks, in this order. One may end its
        trace at once (`length`) and cancel its problem, taking other blocks of the list out
        of `in_sandbox`: those are skipped."""
        for fut in futures:
            live = self.in_sandbox.pop(fut, None)
            if live is not None:
                self.executed(live, fut.result())

    def take(self, out):
        live = self.in_engine.get(out.request_id)
        if live is None:  # aborted, or not ours
            return
        if live.first_output:
            live.first_output = False
            if live.round:
                self.stats["cached_tokens"] += out.cached_tokens
        recorded = self.top_k and out.token_ids and self.fold(live, out)
        live.new_ids += out.token_ids
        live.new_text += out.text
        t = live.trace
        if t.think_end is not None and t.reasoning_tokens is None and self._left(live, out):
            t.reasoning_tokens = t.completion_tokens + len(live.new_ids)
        if out.finished:
            del self.in_engine[out.request_id]
            self.generated(live, out)
        elif self.stop_at_answer and "}" in out.text and self._answered(live):
            self.cut(live, out.request_id, out, Finish.STOP)
        elif recorded and self._low(live):
            self.cut(live, out.request_id, out, Finish.PRUNED)

    def cut(self, live: _Live, rid: str, comp: Output, reason: str):
        """End the round in flight now, keeping what it wrote."""
        self.engine.abort([rid])
        del self.in_engine[rid]
        if comp.cumulative_logprob is None:  # the round's so far (DELTA outputs too)
            live.trace.logprobs_known = False
        else:
            live.trace.logprob_sum += comp.cumulative_logprob
        self.finish(live, reason)

    def _low(self, live: _Live) -> bool:
        """Pruning: the window just recorded is below the problem's threshold, and the
        problem keeps a trace (one finished, or another still open)."""
        return live.problem.may_prune(live.trace.confidence.means[-1])

    def _left(self, live: _Live, out: Output) -> bool:
        """The output just taken wrote the end of the trace's thinking."""
        tag = live.trace.think_end
        return tag in (live.trace.text[-len(tag) :] + live.new_text)[-len(out.text) - len(tag) :]

    def _answered(self, live: _Live) -> bool:
        """The round in flight has written a final answer (a closed \\boxed{...}); with a
        thinking channel, after its end."""
        text, tag = live.new_text, live.trace.think_end
        if tag is not None:
            if live.trace.reasoning_tokens is None:
                return False
            at = text.find(tag)
            text = text if at < 0 else text[at + len(tag) :]
        return ANSWER_MARK in text and extract_answer(text[text.rfind(ANSWER_MARK) :]) is not None

    def fold(self, live: _Live, comp: Output) -> bool:
        """Fold the new tokens' top-k log-probabilities into the trace's entropies and
        confidences, noting where an answer marker starts (the tail entropy is of the tokens
        before it). True if a window confidence was recorded."""
        t, n = live.trace, len(ANSWER_MARK)
        before = (t.text[-n:] + live.new_text[-n:])[-n:]  # not the whole round: hot path
        if ANSWER_MARK in before + comp.text and ANSWER_MARK not in before:
            t.entropy.answer_starts()
        recorded = False
        for position in comp.top or ():
            t.entropy.add(position)
            recorded = t.confidence.add(position) or recorded
        return recorded

    def _wait_s(self):
        deadlines = [
            p.deadline for p in self.problems.values() if p.deadline is not None and p.open
        ]
        if not deadlines:
            return 1.0
        return min(1.0, max(0.0, min(deadlines) - self.clock()))

    def _progress(self, lives, started):
        done = sum(live.trace.finish_reason is not None for live in lives)
        tokens = sum(live.trace.completion_tokens + len(live.new_ids) for live in lives)
        elapsed = max(self.clock() - started, 1e-9)
        log.info(
            "%d/%d traces done, %d in the engine, %d running code, %d tokens, %.1f tokens/s",
            done,
            len(lives),
            len(self.in_engine),
            len(self.in_sandbox),
            tokens,
            tokens / elapsed,
        )
