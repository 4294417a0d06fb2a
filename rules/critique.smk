rule critique:
    input:
        problems=rules.problems.output.problems,
        traces=critique_inputs("traces"),
        executions=critique_inputs("executions"),
        model=model_dir(),
    output:
        shard="results/critique/shard-{shard}.parquet",
    log:
        "logs/critique/shard-{shard}.log",
    benchmark:
        "benchmarks/critique/shard-{shard}.tsv"
    conda:
        "../envs/engine.yaml"
    threads: 2
    resources:
        mem_mb=engine_job_mem_mb("critique"),
        runtime=engine_runtime("critique"),
        gpu=ENGINE_GPUS,
    params:
        generate=generate_params(),
        critique=config["critique"],
    script:
        "../scripts/critique.py"
