from aimo import logs
from aimo.vote import vote

logs.setup(snakemake.log[0])
vote(snakemake.input.problems, snakemake.input.traces, snakemake.input.executions,
     snakemake.output.votes, strategy=snakemake.params.strategy,
     weights=snakemake.params.weights, critique_weight=snakemake.params.critique_weight,
     critique_replaces=snakemake.params.critique_replaces,
     count_cancelled=snakemake.params.count_cancelled)
