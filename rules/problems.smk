rule problems:
    input:
        problems=config["problems"],
    output:
        problems="results/problems.parquet",
    log:
        "logs/problems.log",
    conda:
        "../envs/base.yaml"
    script:
        "../scripts/problems.py"
