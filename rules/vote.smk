rule vote:
    input:
        problems=rules.problems.output.problems,
        traces=trace_files(),
        executions=execution_files(),
    output:
        votes="results/vote/votes.parquet",
    params:
        vote=config["vote"],
    log:
        "logs/vote.log",
    resources:
        mem_mb=table_mem_mb,
        runtime=table_runtime,
    conda:
        "../envs/base.yaml"
    script:
        "../scripts/vote.py"
