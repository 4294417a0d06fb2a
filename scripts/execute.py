from aimo import logs
from aimo.execute import execute_shard

logs.setup(snakemake.log[0])
execute_shard(
    snakemake.input.shard, snakemake.output.shard, snakemake.params.sandbox, snakemake.threads
)
