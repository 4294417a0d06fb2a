# Re-run every trace's code, fresh, in the sandbox: one rule for the traces of every stage.
rule execute:
    input:
        shard=shard("{stage}"),
    output:
        shard=shard("{stage}", executions=True),
    log:
        "logs/execute/{stage}/shard-{shard}.log",
    benchmark:
        "benchmarks/execute/{stage}/shard-{shard}.tsv"
    conda:
        "../envs/base.yaml"
    threads: 2
    resources:
        mem_mb=sandbox_mem_mb,
        runtime=execute_runtime,
    params:
        sandbox=config["sandbox"],
    script:
        "../scripts/execute.py"
