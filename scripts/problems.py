from aimo import logs, problems

logs.setup(snakemake.log[0])
problems.normalize(snakemake.input.problems, snakemake.output.problems)
