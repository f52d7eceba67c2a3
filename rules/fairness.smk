rule run_fairness:
    """Intrinsic bias of the pretrained LM and extrinsic bias of the classifier."""
    input:
        pretrained=exp_path("pretrain/model"),
        probe=exp_path("data/probe.parquet"),
        finetuned=exp_path("finetune/model"),
        predictions=exp_path("finetune/predictions.parquet"),
        classify=exp_path("data/classify.parquet"),
    output:
        intrinsic=exp_path("fairness/intrinsic.parquet"),
        extrinsic=exp_path("fairness/extrinsic.parquet"),
        per_item=exp_path("fairness/items.parquet"),
        energy=exp_path("energy/samples/fairness.parquet"),
    log:
        log_path("fairness"),
    benchmark:
        bench_path("fairness")
    conda:
        ENV
    threads: res("fairness", "threads")
    resources:
        mem_mb=res("fairness", "mem_mb"),
        runtime=res("fairness", "runtime"),
    params:
        cfg=stage_params("fairness"),
        io=io_json,
    shell:
        "ecoeval stage fairness --params {params.cfg:q} --io {params.io:q} > {log:q} 2>&1"
