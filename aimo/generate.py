"""The generate stage: N samples per problem, one shard of sample indices at a time.

Shard k holds samples [k*shard_size, (k+1)*shard_size) of every problem, so raising N adds
shards and leaves the old ones valid. Each sample's seed comes from (global seed, problem id,
sample index) alone, and every round's from that seed and the round; see the README for what
that makes reproducible under continuous batching.
"""

import logging

import pyarrow.parquet as pq

from aimo import tir
from aimo.schemas import TRACES
from aimo.solver import Solver
from aimo.tables import write_table

log = logging.getLogger("aimo.generate")


def generate_shard(problems_path, model_dir, out, shard: int, params: dict, threads: int = 2):
    """Write shard `shard` of the generate stage to `out`."""
    problems = pq.read_table(problems_path).to_pylist()
    size = params["samples"]["shard_size"]
    samples = range(shard * size, (shard + 1) * size)
    requests = tir.requests(problems, samples, params["samples"]["seed"])
    log.info(
        "shard %d: %d problems x samples %d..%d = %d traces",
        shard,
        len(problems),
        shard * size,
        (shard + 1) * size - 1,
        len(requests),
    )
    with Solver(model_dir, params, threads) as solver:
        rows = solver.run(requests)
        meta = solver.metadata()
    meta.update(
        shard=shard,
        samples=[shard * size, (shard + 1) * size],
        sample_seed=params["samples"]["seed"],
    )
    write_table(rows, out, TRACES, metadata=meta)
    return rows
