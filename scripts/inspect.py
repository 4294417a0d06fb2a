from aimo import logs
from aimo.inspector import Run, build_site, read_submission
from aimo.vote import VoteSettings

logs.setup(snakemake.log[0])
build_site(
    Run(
        name="results",
        problems=snakemake.input.problems,
        traces=list(snakemake.input.traces),
        executions=list(snakemake.input.executions),
        settings=VoteSettings.of(snakemake.params.vote),
        submitted=read_submission(snakemake.input.submission),
        fallback=snakemake.params.fallback,
    ),
    snakemake.output.site,
)
