rule run_report:
    """One HTML page, a Markdown twin, summary.parquet, figures and model cards across experiments."""
    input:
        # everything ecoeval.report reads from each experiment's folder (docs/outputs.md)
        energy=per_experiment("energy/summary.parquet"),
        samples=per_experiment(
            *(
                f"energy/samples/{s}.parquet"
                for s in (
                    "download",
                    "tokenize",
                    "pretrain",
                    "finetune",
                    "fairness",
                    "energy",
                    "carbon",
                )
            )
        ),
        carbon=per_experiment("carbon/carbon.parquet"),
        co2_card=per_experiment("carbon/co2_eq_emissions.json"),
        intrinsic=per_experiment("fairness/intrinsic.parquet"),
        extrinsic=per_experiment("fairness/extrinsic.parquet"),
        pretrain_metrics=per_experiment("pretrain/metrics.parquet"),
        pretrain_log=per_experiment("pretrain/log.parquet"),
        finetune_metrics=per_experiment("finetune/metrics.parquet"),
        finetune_log=per_experiment("finetune/log.parquet"),
        provenance=per_experiment("data/provenance.json"),
        # the model cards are written into these folders (their times are kept; docs/outputs.md)
        models=per_experiment("pretrain/model", "finetune/model"),
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
        markdown=report(
            f"{RESULTS}/report/report.md",
            caption="../workflow/report/markdown.rst",
            category="Report",
        ),
        figures=report(
            directory(f"{RESULTS}/report/figures"),
            patterns=["{name}.png"],
            caption="../workflow/report/figures.rst",
            category="Figures",
        ),
        cards=directory(f"{RESULTS}/report/model_cards"),
    log:
        f"{RESULTS}/report/logs/report.log",
    benchmark:
        f"{RESULTS}/report/benchmarks/report.tsv"
    conda:
        ENV
    threads: res("report", "threads")
    resources:
        mem_mb=res("report", "mem_mb"),
        runtime=res("report", "runtime"),
    params:
        cfg=report_params,
        # outputs only: the stage reads its inputs from the folders in cfg (lists do not fit --io)
        io=lambda wildcards, output, threads: json.dumps(
            {"input": {}, "output": dict(output.items()), "threads": threads}
        ),
    shell:
        "ecoeval stage report --params {params.cfg:q} --io {params.io:q} > {log:q} 2>&1"
