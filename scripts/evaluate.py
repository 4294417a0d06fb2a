from aimo import logs
from aimo.evaluate import evaluate

logs.setup(snakemake.log[0])
cfg = snakemake.params.evaluate
evaluate(
    snakemake.input.problems,
    snakemake.input.traces,
    snakemake.input.executions,
    ks=cfg["ks"],
    n_subsets=cfg["n_subsets"],
    settings=snakemake.params.vote,
    outputs=dict(snakemake.output.items()),
)
