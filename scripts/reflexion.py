# The guard matters: vLLM's engine process re-imports the main module on some platforms.
if __name__ == "__main__":
    from aimo import logs
    from aimo.reflexion import reflexion_shard

    logs.setup(snakemake.log[0])
    params = dict(snakemake.params.generate, reflexion=snakemake.params.reflexion)
    reflexion_shard(
        snakemake.input.problems,
        snakemake.input.traces,
        snakemake.input.executions,
        snakemake.input.model,
        snakemake.output.shard,
        params,
        snakemake.threads,
    )
