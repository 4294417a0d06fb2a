"""The execute stage: re-run every trace's code, fresh, in the sandbox, to verify it.

Each trace gets a new session and its blocks run in order, so a block only sees what the
trace's own earlier blocks defined. Traces run in parallel, one block index at a time.
"""

import logging
import time

from aimo.executions import execution_row
from aimo.sandbox import Limits, Sandbox
from aimo.schemas import EXECUTIONS, TRACES
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
