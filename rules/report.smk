rule run_report:
    """One HTML page, a Markdown twin, summary.parquet and model cards across experiments."""
    input:
        energy=per_experiment("energy/summary.parquet"),
        carbon=per_experiment("carbon/carbon.parquet"),
        intrinsic=per_experiment("fairness/intrinsic.parquet"),
        extrinsic=per_experiment("fairness/extrinsic.parquet"),
        pretrain_metrics=per_experiment("pretrain/metrics.parquet"),
        finetune_metrics=per_experiment("finetune/metrics.parquet"),
    output:
        summary=report(
            f"{RESULTS}/report/summary.parquet",
            caption="../workflow/report/summary.rst",
            category="Report",
        ),
        html=report(
            f"{RESULTS}/report/report.html",
            caption="../workflow/report/report.rst",
            category="Report",
        ),
        markdown=f"{RESULTS}/report/report.md",
    log:
        f"{RESULTS}/report/logs/report.log",
    benchmark:
        f"{RESULTS}/report/benchmarks/report.tsv"
    params:
        cfg=report_params,
        io=io_json,
    threads: res("report", "threads")
    resources:
        mem_mb=res("report", "mem_mb"),
        runtime=res("report", "runtime"),
    conda:
        ENV
    shell:
        "ecoeval stage report --params {params.cfg:q} --io {params.io:q} > {log:q} 2>&1"
