# The guard matters: torch and the tokenizers may start worker processes that re-import main.
if __name__ == "__main__":
    from aimo import logs, sft

    logs.setup(snakemake.log[0])
    with sft.clean_errors():
        sft.train(
            snakemake.input.data,
            snakemake.input.model,
            snakemake.output.adapter,
            snakemake.output.merged,
            snakemake.output.train_log,
            snakemake.output.loss_plot,
            snakemake.params.checkpoints,
            snakemake.params.sft,
            dtype=snakemake.params.dtype,
            threads=snakemake.threads,
        )
