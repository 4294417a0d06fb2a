# The guard matters: vLLM's engine process re-imports the main module on some platforms.
if __name__ == "__main__":
    from aimo import logs
    from aimo.generate import generate_shard

    logs.setup(snakemake.log[0])
    generate_shard(
        snakemake.input.problems,
        snakemake.input.model,
        snakemake.output.shard,
        int(snakemake.wildcards.shard),
        snakemake.params.generate,
        snakemake.threads,
    )
