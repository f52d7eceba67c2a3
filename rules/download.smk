rule run_download:
    """Fetch or generate the pretraining corpus, the labelled set and the probe set."""
    input:
        local=local_data_files,
    output:
        pretrain=exp_path("data/pretrain.parquet"),
        classify=exp_path("data/classify.parquet"),
        probe=exp_path("data/probe.parquet"),
        provenance=exp_path("data/provenance.json"),
        energy=exp_path("energy/samples/download.parquet"),
    log:
        log_path("download"),
    benchmark:
        bench_path("download")
    conda:
        ENV
    threads: res("download", "threads")
    resources:
        mem_mb=res("download", "mem_mb"),
        runtime=res("download", "runtime"),
    params:
        cfg=stage_params("download"),
        io=io_json,
    shell:
        "ecoeval stage download --params {params.cfg:q} --io {params.io:q} > {log:q} 2>&1"
