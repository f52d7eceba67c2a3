rule run_tokenize:
    """Train (or load) a WordPiece tokenizer, encode and pack into blocks."""
    input:
        pretrain=exp_path("data/pretrain.parquet"),
        classify=exp_path("data/classify.parquet"),
    output:
        tokenizer=directory(exp_path("tokenizer")),
        pretrain_tokens=exp_path("tokens/pretrain.parquet"),
        classify_tokens=exp_path("tokens/classify.parquet"),
        energy=exp_path("energy/samples/tokenize.parquet"),
    log:
        log_path("tokenize"),
    benchmark:
        bench_path("tokenize")
    conda:
        ENV
    threads: res("tokenize", "threads")
    resources:
        mem_mb=res("tokenize", "mem_mb"),
        runtime=res("tokenize", "runtime"),
    params:
        cfg=stage_params("tokenize"),
        io=io_json,
    shell:
        "ecoeval stage tokenize --params {params.cfg:q} --io {params.io:q} > {log:q} 2>&1"
