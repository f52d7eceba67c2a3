rule run_carbon:
    """Energy x PUE x grid intensity, embodied emissions and money, per scenario."""
    input:
        hourly=hourly_csvs,
        summary=exp_path("energy/summary.parquet"),
        samples_download=exp_path("energy/samples/download.parquet"),
        samples_tokenize=exp_path("energy/samples/tokenize.parquet"),
        samples_pretrain=exp_path("energy/samples/pretrain.parquet"),
        samples_finetune=exp_path("energy/samples/finetune.parquet"),
        samples_fairness=exp_path("energy/samples/fairness.parquet"),
    output:
        carbon=exp_path("carbon/carbon.parquet"),
        emissions=exp_path("carbon/emissions.csv"),
        card=exp_path("carbon/co2_eq_emissions.json"),
        energy=exp_path("energy/samples/carbon.parquet"),
    log:
        log_path("carbon"),
    benchmark:
        bench_path("carbon")
    conda:
        ENV
    threads: res("carbon", "threads")
    resources:
        mem_mb=res("carbon", "mem_mb"),
        runtime=res("carbon", "runtime"),
    params:
        cfg=stage_params("carbon"),
        io=io_json,
    shell:
        "ecoeval stage carbon --params {params.cfg:q} --io {params.io:q} > {log:q} 2>&1"
