from aimo import logs, model

logs.setup(snakemake.log[0])
m = snakemake.params.model
model.provide(
    m["source"],
    m["name"],
    snakemake.output.model,
    path=m["path"],
    revision=m["revision"],
    dtype=m["dtype"],
)
