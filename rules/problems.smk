rule problems:
    input:
        problems=config["problems"],
    output:
        problems="results/problems.parquet",
    log:
        "logs/problems.log",
    conda:
        "../envs/base.yaml"
    resources:
        mem_mb=table_mem_mb,
        runtime=table_runtime,
    script:
        "../scripts/problems.py"
