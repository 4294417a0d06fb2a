rule submission:
    input:
        problems=rules.problems.output.problems,
        votes=rules.vote.output.votes,
    output:
        submission="results/submission.csv",
    log:
        "logs/submission.log",
    conda:
        "../envs/base.yaml"
    resources:
        mem_mb=table_mem_mb,
        runtime=table_runtime,
    params:
        fallback=config["submission"]["fallback"],
    script:
        "../scripts/submission.py"
