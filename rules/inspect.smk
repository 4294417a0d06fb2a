# The trace inspector: a static site of every problem and trace, with flags (aimo/inspector).
rule inspect:
    input:
        problems=rules.problems.output.problems,
        traces=trace_files(),
        executions=execution_files(),
        submission=rules.submission.output.submission,
    output:
        # each page on its own in `snakemake --report` (a directory with htmlindex would need
        # --report report.zip); their links work from disk
        site=report(directory("results/inspect"), patterns=["{page}.html"], category="Inspect"),
    log:
        "logs/inspect.log",
    conda:
        "../envs/base.yaml"
    resources:
        mem_mb=table_mem_mb,
        runtime=table_runtime,
    params:
        vote=config["vote"],
        fallback=config["submission"]["fallback"],
    script:
        "../scripts/inspect.py"
