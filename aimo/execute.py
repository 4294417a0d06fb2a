"""The execute stage: re-run every trace's code, fresh, in the sandbox, to verify it.

Each trace gets a new session and its blocks run in order, so a block only sees what the
trace's own earlier blocks defined. Traces run in parallel, one block index at a time.
"""

import logging
import time
from dataclasses import dataclass

from aimo.answers import printed_integer
from aimo.sandbox import Limits, Sandbox
from aimo.schemas import EXECUTIONS, NO_CODE, OK, TIMEOUT, TRACES
from aimo.tables import read_table, write_table
from aimo.tir import sandbox_seed

log = logging.getLogger("aimo.execute")


def _run_chunk(codes, seeds, sandbox):
    """Run the blocks of several traces: one fresh session each, seeded as the TIR run seeded
    it, block k of all at once."""
    results = [[] for _ in codes]
    sessions = [
        sandbox.session(seed=sandbox_seed(seed)) if c else None for c, seed in zip(codes, seeds)
    ]
    try:
        for index in range(max((len(c) for c in codes), default=0)):
            todo = [i for i, c in enumerate(codes) if index < len(c)]
            for i, res in zip(
                todo, sandbox.run_round([(sessions[i], codes[i][index]) for i in todo])
            ):
                results[i].append(res)
    finally:
        for s in sessions:
            if s is not None:
                s.close()
    return results


def execute_traces(traces, sandbox, chunk: int = 16) -> list[dict]:
    """EXECUTIONS rows for `traces` (TRACES rows as dicts). Traces run `chunk` at a time,
    so a big shard never holds more than `chunk` live sessions."""
    codes = [[b["code"] for b in (t["code_blocks"] or [])] for t in traces]
    seeds = [t["seed"] for t in traces]
    results = []
    for start in range(0, len(codes), chunk):
        results += _run_chunk(codes[start : start + chunk], seeds[start : start + chunk], sandbox)
    return [execution_row(trace, res) for trace, res in zip(traces, results)]


def execution_row(trace: dict, res) -> dict:
    """The EXECUTIONS row of `trace` from the results of its blocks, in order (objects with
    status, stdout, error and wall_s: ExecResults, or `BlockResult`s of blocks already run).

    A trace's failure is its FIRST failing block, here and in reflexion (which judges a repair
    attempt by this row of its own blocks): one policy, the one that names the root cause. The
    blocks run in order in one session, so a block that fails leaves the session without what
    it was to define, and what fails after it (a NameError, a wrong value) follows from it.
    Reporting the last failure would send the repair after a symptom."""
    bad = [r for r in res if r.status != OK]
    last = res[-1] if res else None
    printed = printed_integer(last.stdout) if last else None
    answer = trace["answer_int"]
    return {
        "trace_id": trace["trace_id"],
        "problem_id": trace["problem_id"],
        "exec_status": bad[0].status if bad else (OK if res else NO_CODE),
        "exec_output": last.stdout if last else None,
        "exec_error": bad[0].error if bad else None,
        "printed_int": printed,
        "agrees": None if printed is None or answer is None else printed == answer,
        "n_code_calls": len(res),
        "n_code_errors": len(bad),
        "n_code_timeouts": sum(r.status == TIMEOUT for r in res),
        "exec_s": sum(r.wall_s for r in res),
    }


@dataclass
class BlockResult:
    """A code block's result as the TIR run recorded it (its output is stdout and error)."""

    status: str
    stdout: str
    error: str | None
    wall_s: float


def executions_from_blocks(traces) -> list[dict]:
    """EXECUTIONS rows from the blocks the TIR run already ran (no re-run): what the online
    solver votes with, where there is no time for the execute stage."""
    rows = []
    for t in traces:
        res = [
            BlockResult(
                b["status"], b["output"], b["output"] if b["status"] != OK else None, b["wall_s"]
            )
            for b in (t["code_blocks"] or [])
        ]
        rows.append(execution_row(t, res))
    return rows


def execute_shard(traces_path, out, limits: dict, threads: int = 2):
    """Write the EXECUTIONS table of the TRACES shard `traces_path` to `out`."""
    traces = read_table(traces_path, TRACES).to_pylist()
    started = time.time()
    with Sandbox(Limits(**limits), workers=threads) as sandbox:
        rows = execute_traces(traces, sandbox, chunk=8 * max(threads, 1))
    elapsed = time.time() - started
    calls = sum(r["n_code_calls"] for r in rows)
    log.info(
        "executed %d code blocks of %d traces in %.1f s (%d errors, %d timeouts)",
        calls,
        len(rows),
        elapsed,
        sum(r["n_code_errors"] for r in rows),
        sum(r["n_code_timeouts"] for r in rows),
    )
    write_table(rows, out, EXECUTIONS, metadata={"traces": str(traces_path), "wall_s": elapsed})
    return rows
