"""The generate stage: N samples per problem, one shard of sample indices at a time.

Shard k holds samples [k*shard_size, (k+1)*shard_size) of every problem, so raising N adds
shards and leaves the old ones valid. Each sample's seed comes from (global seed, problem id,
sample index) alone, so a shard is reproducible whatever else the run holds.
"""
import json
import logging
import time
from pathlib import Path

import pyarrow.parquet as pq

from aimo import engine, prompts, tir
from aimo.sandbox import Limits, Sandbox
from aimo.schemas import TRACES
from aimo.tables import write_table

log = logging.getLogger("aimo.generate")


def model_identity(model_dir) -> dict:
    """What the model is: its directory and the SOURCE.json written when it was provided."""
    source = Path(model_dir, "SOURCE.json")
    info = json.loads(source.read_text()) if source.is_file() else {}
    return {"dir": str(model_dir), **info}


def shard_requests(problems, shard: int, shard_size: int, seed: int):
    """The generate requests of `shard`: every problem x the shard's sample indices."""
    requests = []
    for row in problems:
        for sample in range(shard * shard_size, (shard + 1) * shard_size):
            pid = row["problem_id"]
            requests.append(tir.Request(
                trace_id=f"{pid}:{sample}", problem_id=pid, sample=sample,
                seed=tir.derive_seed(seed, pid, sample), messages=prompts.tir_messages(row["problem"])))
    return requests


class Solver:
    """An engine and a sandbox, started once, that turn TIR requests into trace rows.

    Use as a context manager; the engine starts on entry, so a stage with nothing to do
    should not enter one.
    """

    def __init__(self, model_dir, params: dict, threads: int = 2):
        self.model_dir, self.params, self.threads = model_dir, params, threads
        self.stats = {"engine_start_s": 0.0, "loop_s": 0.0, "engine_s": 0.0, "sandbox_wait_s": 0.0,
                      "completion_tokens": 0, "sandbox_s": 0.0}

    def __enter__(self):
        started, eng = time.time(), self.params["engine"]
        self.llm = engine.load(self.model_dir, dtype=self.params["model"]["dtype"],
                               max_model_len=eng["max_model_len"], seed=self.params["samples"]["seed"],
                               gpu_memory_utilization=eng["gpu_memory_utilization"])
        self.watch = engine.EngineWatch()
        self.sandbox = Sandbox(Limits(**self.params["sandbox"]), workers=self.threads).__enter__()
        self.stats["engine_start_s"] = time.time() - started
        return self

    def __exit__(self, *exc):
        self.watch.stop()
        self.sandbox.__exit__(*exc)

    def run(self, requests) -> list[dict]:
        """Trace rows for `requests`, in order."""
        started = time.time()
        rows = tir.run(self.llm, requests, self.sandbox, self.params["sampling"],
                       self.params["tir"]["max_rounds"], self.params["engine"]["max_model_len"],
                       self.stats)
        self.stats["loop_s"] += time.time() - started
        self.stats["completion_tokens"] += sum(r["completion_tokens"] for r in rows)
        self.stats["sandbox_s"] += sum(r["exec_s"] for r in rows)
        s = self.stats
        log.info("%d traces: loop %.1f s, %d tokens (%.1f tokens/s), sandbox %.1f s", len(rows),
                 s["loop_s"], s["completion_tokens"], s["completion_tokens"] / max(s["loop_s"], 1e-9),
                 s["sandbox_s"])
        return rows

    def metadata(self) -> dict:
        """Run metadata for the shard file: model, engine, dtype, sampling, timings."""
        return {"model": model_identity(self.model_dir), "engine": engine.engine_version(),
                "dtype": engine.resolve_dtype(self.params["model"]["dtype"], engine.has_gpu()),
                "sampling": self.params["sampling"],
                "max_rounds": self.params["tir"]["max_rounds"], **self.stats}


def generate_shard(problems_path, model_dir, out, shard: int, params: dict, threads: int = 2):
    """Write shard `shard` of the generate stage to `out`."""
    problems = pq.read_table(problems_path).to_pylist()
    size = params["samples"]["shard_size"]
    requests = shard_requests(problems, shard, size, params["samples"]["seed"])
    log.info("shard %d: %d problems x samples %d..%d = %d traces", shard, len(problems),
             shard * size, (shard + 1) * size - 1, len(requests))
    with Solver(model_dir, params, threads) as solver:
        rows = solver.run(requests)
        meta = solver.metadata()
    meta.update(shard=shard, samples=[shard * size, (shard + 1) * size])
    write_table(rows, out, TRACES, metadata=meta)
    return rows
