from aimo import logs
from aimo.submission import write_submission

logs.setup(snakemake.log[0])
write_submission(
    snakemake.input.problems,
    snakemake.input.votes,
    snakemake.output.submission,
    fallback=snakemake.params.fallback,
)
