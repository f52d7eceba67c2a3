rule run_energy:
    """Integrate every stage's energy samples into per-stage, per-device energy."""
    input:
        download=exp_path("energy/samples/download.parquet"),
        tokenize=exp_path("energy/samples/tokenize.parquet"),
        pretrain=exp_path("energy/samples/pretrain.parquet"),
        finetune=exp_path("energy/samples/finetune.parquet"),
        fairness=exp_path("energy/samples/fairness.parquet"),
    output:
        summary=exp_path("energy/summary.parquet"),
        energy=exp_path("energy/samples/energy.parquet"),
    log:
        log_path("energy"),
    benchmark:
        bench_path("energy")
    conda:
        ENV
    threads: res("energy", "threads")
    resources:
        mem_mb=res("energy", "mem_mb"),
        runtime=res("energy", "runtime"),
    params:
        cfg=stage_params("energy"),
        io=io_json,
    shell:
        "ecoeval stage energy --params {params.cfg:q} --io {params.io:q} > {log:q} 2>&1"
