rule vote:
    input:
        problems=rules.problems.output.problems,
        traces=trace_files(),
        executions=execution_files(),
    output:
        votes="results/vote/votes.parquet",
    params:
        strategy=config["vote"]["strategy"],
        weights=config["vote"]["weights"],
        critique_weight=config["critique"]["weight"],
    log:
        "logs/vote.log",
    conda:
        "../envs/base.yaml"
    script:
        "../scripts/vote.py"
