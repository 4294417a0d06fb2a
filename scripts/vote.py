from aimo import logs
from aimo.vote import vote

logs.setup(snakemake.log[0])
vote(
    snakemake.input.problems,
    snakemake.input.traces,
    snakemake.input.executions,
    snakemake.output.votes,
    snakemake.params.vote,
)
