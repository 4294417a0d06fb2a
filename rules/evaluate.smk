from aimo.evaluate import VOTE_KEYS


rule evaluate:
    input:
        problems=rules.problems.output.problems,
        traces=trace_files(),
        executions=execution_files(),
    output:
        metrics="results/evaluate/metrics.parquet",
        per_problem="results/evaluate/per_problem.parquet",
        report=report("results/evaluate/report.md", category="Evaluation"),
        maj_at_k=report("results/evaluate/maj_at_k.png", category="Evaluation"),
        tokens=report("results/evaluate/accuracy_vs_tokens.png", category="Evaluation"),
        selection=report("results/evaluate/selection.png", category="Evaluation"),
    log:
        "logs/evaluate.log",
    benchmark:
        "benchmarks/evaluate.tsv"
    conda:
        "../envs/base.yaml"
    resources:
        mem_mb=table_mem_mb,
        runtime=table_runtime,
    params:
        evaluate=config["evaluate"],
        # the vote keys the evaluation reads: all of VoteSettings, strategy too (correct_rank)
        vote={k: v for k, v in config["vote"].items() if k in VOTE_KEYS},
    script:
        "../scripts/evaluate.py"
