from pathlib import Path

from aimo import logs
from aimo.evaluate import evaluate

logs.setup(snakemake.log[0])
cfg = snakemake.params.evaluate
evaluate(snakemake.input.problems, snakemake.input.traces, snakemake.input.executions,
         Path(snakemake.output.report).parent, ks=cfg["ks"], n_subsets=cfg["n_subsets"],
         weights=snakemake.params.weights, critique_weight=snakemake.params.critique_weight,
         critique_replaces=snakemake.params.critique_replaces,
         count_cancelled=snakemake.params.count_cancelled)
