rule submission:
    input:
        problems=rules.problems.output.problems,
        votes=rules.vote.output.votes,
    output:
        submission="results/submission.csv",
    params:
        fallback=config["submission"]["fallback"],
    log:
        "logs/submission.log",
    resources:
        mem_mb=table_mem_mb,
        runtime=table_runtime,
    conda:
        "../envs/base.yaml"
    script:
        "../scripts/submission.py"
