rule problems:
    input:
        problems=config["problems"],
    output:
        problems="results/problems.parquet",
    log:
        "logs/problems.log",
    resources:
        mem_mb=table_mem_mb,
        runtime=table_runtime,
    conda:
        "../envs/base.yaml"
    script:
        "../scripts/problems.py"
