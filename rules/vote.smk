rule vote:
    input:
        problems=rules.problems.output.problems,
        traces=trace_files(),
        executions=execution_files(),
    output:
        votes="results/vote/votes.parquet",
    log:
        "logs/vote.log",
    conda:
        "../envs/base.yaml"
    resources:
        mem_mb=table_mem_mb,
        runtime=table_runtime,
    params:
        vote=config["vote"],
    script:
        "../scripts/vote.py"
