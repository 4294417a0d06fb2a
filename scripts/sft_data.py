from aimo import logs, sft_data

logs.setup(snakemake.log[0])
with sft_data.clean_errors():
    sft_data.prepare(snakemake.input.data, snakemake.output.data, **snakemake.params.sft_data)
