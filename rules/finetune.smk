rule run_finetune:
    """Sequence-classification finetuning from the pretrained model."""
    input:
        model=exp_path("pretrain/model"),
        tokens=exp_path("tokens/classify.parquet"),
    output:
        model=directory(exp_path("finetune/model")),
        log=exp_path("finetune/log.parquet"),
        metrics=exp_path("finetune/metrics.parquet"),
        predictions=exp_path("finetune/predictions.parquet"),
        energy=exp_path("energy/samples/finetune.parquet"),
    log:
        log_path("finetune"),
    benchmark:
        bench_path("finetune")
    conda:
        ENV
    threads: res("finetune", "threads")
    resources:
        mem_mb=res("finetune", "mem_mb"),
        runtime=res("finetune", "runtime"),
        gpu=gpus("finetune"),
    params:
        cfg=stage_params("finetune"),
        io=io_json,
    shell:
        "ecoeval stage finetune --params {params.cfg:q} --io {params.io:q} > {log:q} 2>&1"
