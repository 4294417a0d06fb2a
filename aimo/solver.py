"""What the three engine stages (generate, reflexion, critique) share: an engine and a sandbox,
started once, that turn TIR requests into trace rows through the scheduler, and the reading of
a stage's problems.
"""

import contextlib
import json
import logging
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq

from aimo import devices, engines, scheduler
from aimo.sandbox import Limits, Sandbox
from aimo.schemas import EXECUTIONS, TRACES
from aimo.tables import read_table

log = logging.getLogger("aimo.solver")


def model_identity(model_dir) -> dict:
    """What the model is: its directory and the SOURCE.json written when it was provided."""
    source = Path(model_dir, "SOURCE.json")
    info = json.loads(source.read_text()) if source.is_file() else {}
    return {"dir": str(model_dir), **info}


def read_problems(problems_path) -> dict:
    """problem_id -> problem text, from the problems stage's table."""
    return {r["problem_id"]: r["problem"] for r in pq.read_table(problems_path).to_pylist()}


def stage_inputs(problems_path, trace_paths, execution_paths):
    """What reflexion and critique read: (problem_id -> text, the trace rows, trace_id -> its
    execution row); a trace without an execution row is a ValueError naming the files."""
    traces = [t for p in trace_paths for t in read_table(p, TRACES).to_pylist()]
    execs = {
        e["trace_id"]: e for p in execution_paths for e in read_table(p, EXECUTIONS).to_pylist()
    }
    missing = [t["trace_id"] for t in traces if t["trace_id"] not in execs]
    if missing:
        raise ValueError(
            f"{', '.join(map(str, execution_paths))}: no execution rows for traces "
            f"{missing[:5]} (of {len(missing)}) of "
            f"{', '.join(map(str, trace_paths))}; rerun the execute stage"
        )
    return read_problems(problems_path), traces, execs


class Solver:
    """An engine and a sandbox, started once, that turn TIR requests into trace rows.

    Use as a context manager; the engine starts on entry and is shut down on exit, so a stage
    with nothing to do should not enter one. `params` is the stage's config: its aimo.config.ENGINE_KEYS
    sections (aimo.config.engine_params), each complete (defaults filled in).
    """

    def __init__(
        self, model_dir, params: dict, threads: int = 2, on_engine_death=None, step_timeout_s=None
    ):
        self.model_dir, self.params, self.threads = model_dir, params, threads
        self.on_engine_death = on_engine_death  # None: a dead engine ends the process
        self.step_timeout_s = step_timeout_s  # with on_engine_death: a longer step is a death
        self.engine_dead = False
        self.stepping = None  # monotonic time the engine step in progress began
        self.stats = {
            "engine_start_s": 0.0,
            "loop_s": 0.0,
            "completion_tokens": 0,
            "sandbox_s": 0.0,
        }

    def __enter__(self):
        started = time.time()
        # what starts is stopped in reverse on exit, or at once if a later part fails to start
        # (no half solver): the sandbox, the watch (before the engine's shutdown, which it
        # would take for a death), the engine
        with contextlib.ExitStack() as stack:
            self.engine = engines.load(
                self.model_dir,
                self.params,
                in_process=self.params["scheduler"]["mode"] == "deterministic",
            )
            stack.callback(self.engine.close)
            self.watch = self.engine.watch(on_death=self.on_engine_death)
            stack.callback(self.watch.stop)
            self.sandbox = stack.enter_context(
                Sandbox(Limits(**self.params["sandbox"]), workers=self.threads)
            )
            self.started = stack.pop_all()
        if self.on_engine_death is not None and self.step_timeout_s:
            self._watch_steps()
        self.stats["engine_start_s"] = time.time() - started
        return self

    def _watch_steps(self):
        """A step that does not return within step_timeout_s (a hung core) is reported as the
        engine's death: on_engine_death unblocks it (engine.unblock) and the next problem
        restarts the engine."""
        eng, step = self.engine, self.engine.step

        def timed_step():
            self.stepping = time.monotonic()
            try:
                return step()
            finally:
                self.stepping = None

        eng.step = timed_step

        def watch():
            while not self.watch.stopped.wait(0.5):
                began = self.stepping
                if began is not None and time.monotonic() - began > self.step_timeout_s:
                    log.error("an engine step has not returned in %.0f s", self.step_timeout_s)
                    self.watch.stopped.set()
                    self.on_engine_death("a hung engine step", 0)

        threading.Thread(target=watch, name="engine-step-watch", daemon=True).start()

    def __exit__(self, *exc):
        return self.started.__exit__(*exc)

    def run(self, requests, early_stop=None, deadline=None, ids=None) -> list[dict]:
        """Trace rows for `requests`, in order. `early_stop` and `deadline` default to the
        config's (`scheduler`); `ids` gets each trace's token ids; see `scheduler.run`."""
        started = time.time()
        try:
            options = scheduler.RunOptions.from_config(
                self.params, early_stop=early_stop, threads=self.threads
            )
            rows = scheduler.run(
                self.engine, requests, self.sandbox, options, self.stats, deadline=deadline, ids=ids
            )
        except Exception:
            # vLLM may notice a dead engine core before the watch does: say which one died
            dead = self.watch.dead()
            if dead:
                self.engine_dead = True
                log.error(
                    "the engine's process %s (pid %d) died (killed for memory? see dmesg); "
                    "no output is written",
                    *dead,
                )
            raise
        self.stats["loop_s"] += time.time() - started
        self.stats["completion_tokens"] += sum(r["completion_tokens"] for r in rows)
        self.stats["sandbox_s"] += sum(r["exec_s"] for r in rows)
        s = self.stats
        log.info(
            "%d traces: loop %.1f s, %d tokens (%.1f tokens/s), sandbox %.1f s, "
            "%.1f running per engine step",
            len(rows),
            s["loop_s"],
            s["completion_tokens"],
            s["completion_tokens"] / max(s["loop_s"], 1e-9),
            s["sandbox_s"],
            s.get("running_sum", 0) / max(s.get("steps", 0), 1),
        )
        return rows

    def metadata(self) -> dict:
        """Run metadata for the shard file: model, engine, dtype, sampling, timings."""
        return {
            "model": model_identity(self.model_dir),
            "engine": self.engine.version(),
            "dtype": devices.resolve_dtype(self.params["model"]["dtype"], devices.has_gpu()),
            "sampling": self.params["sampling"],
            "seed": self.params["samples"]["seed"],
            "max_rounds": self.params["tir"]["max_rounds"],
            "scheduler": self.params["scheduler"],
            **self.stats,
        }
