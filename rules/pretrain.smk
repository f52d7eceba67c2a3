rule run_pretrain:
    """Masked-LM pretraining of a BERT-style model."""
    input:
        tokenizer=exp_path("tokenizer"),
        tokens=exp_path("tokens/pretrain.parquet"),
    output:
        model=directory(exp_path("pretrain/model")),
        log=exp_path("pretrain/log.parquet"),
        metrics=exp_path("pretrain/metrics.parquet"),
        energy=exp_path("energy/samples/pretrain.parquet"),
    log:
        log_path("pretrain"),
    benchmark:
        bench_path("pretrain")
    conda:
        ENV
    threads: res("pretrain", "threads")
    resources:
        mem_mb=res("pretrain", "mem_mb"),
        runtime=res("pretrain", "runtime"),
        gpu=gpus("pretrain"),
    params:
        cfg=stage_params("pretrain"),
        io=io_json,
    shell:
        "ecoeval stage pretrain --params {params.cfg:q} --io {params.io:q} > {log:q} 2>&1"
