"""The aggregated report: HTML page, Markdown twin, summary.parquet, figures and model cards.

`run` is the pipeline stage (rule run_report); `ecoeval report --results DIR --out DIR`
rebuilds the same report from a results folder's stored files, without any training.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ecoeval import EcoevalError
from ecoeval.config import experiment_config

log = logging.getLogger("ecoeval.report")

OUTPUT_NAMES = ("summary", "html", "markdown", "figures", "cards")


def default_outputs(out_dir: str | Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    return {
        "summary": out_dir / "summary.parquet",
        "html": out_dir / "report.html",
        "markdown": out_dir / "report.md",
        "figures": out_dir / "figures",
        "cards": out_dir / "model_cards",
    }


def build_report(
    experiments: dict[str, str | Path],
    outputs: dict[str, Path],
    configs: dict[str, dict] | None = None,
    environment: dict | None = None,
    model_folders: bool = True,
):
    """Read every experiment's results and write all report outputs. Returns the Content."""
    import pandas as pd

    from ecoeval.io import atomic_dir, write_parquet, write_text
    from ecoeval.report import collect, plots, render
    from ecoeval.report.cards import write_cards

    if not experiments:
        raise EcoevalError("report: no experiments given (params.experiments is empty)")
    outputs = {**default_outputs(Path(outputs["summary"]).parent), **{k: Path(v) for k, v in outputs.items()}}
    configs = configs or {}
    environment = environment if environment is not None else collect.environment_info()
    exps = [collect.load_experiment(name, folder, configs.get(name)) for name, folder in experiments.items()]

    summary = collect.summary_table(exps)
    tables = [
        render.Table("summary", "Summary per experiment", "summary", summary,
                     "co2e_kg, co2e_kg_low, co2e_kg_high, embodied_co2e_kg and cost_usd: all stages, scenario co2e_scenario (the first configured)."),
        render.Table("energy", "Energy per stage and device", "energy", collect.energy_table(exps),
                     "energy_j: the whole device; attributed_energy_j: the share of this process tree."),
        render.Table("formula", "Formula estimate C = N x T x P beside the measured energy", "energy", collect.formula_table(exps),
                     "formula_energy_j = formula_steps x formula_step_time_s x formula_power_w; measured_energy_j sums all devices of the stage."),
        render.Table("carbon", "Carbon and cost per scenario (all stages)", "carbon", collect.carbon_table(exps),
                     "Bounds summed over stages (errors taken as fully correlated); embodied_share = embodied / (operational + embodied)."),
        render.Table("carbon_stages", "Carbon and cost per stage and scenario", "carbon", collect.carbon_stage_table(exps)),
        render.Table("training", "Training and evaluation metrics", "training", _metrics_table(exps, pd)),
        render.Table("fairness", "Fairness metrics", "fairness", collect.fairness_table(exps),
                     "value with [ci_low, ci_high] bootstrap interval; n: items; p_value: test against no bias where defined."),
        render.Table("assumptions", "Assumptions", "assumptions", collect.assumptions_table(exps)),
        render.Table("provenance", "Provenance", "provenance", collect.provenance_table(exps, environment)),
    ]
    figures = plots.draw_all(exps, summary)
    methods = sorted({m for x in exps for m in x.energy["method"]})
    content = render.Content(
        title=f"ecoeval report: {', '.join(experiments)}",
        experiments=list(experiments),
        methods=methods,
        tables=tables,
        figures=figures,
        blocks=[render.config_block(x.name, x.config) for x in exps if x.config is not None],
        missing=[m for x in exps for m in x.missing],
    )

    with atomic_dir(outputs["figures"]) as tmp:
        _readable(tmp)
        for key, png in figures.items():
            if png is not None:
                (tmp / f"{key}.png").write_bytes(png)
    with atomic_dir(outputs["cards"]) as tmp:
        _readable(tmp)
        for x, row in zip(exps, summary.to_dict("records")):
            write_cards(x, row, tmp, into_model_folders=model_folders)
    figures_rel = Path(os.path.relpath(outputs["figures"], outputs["markdown"].parent)).as_posix()
    write_text(render.render_markdown(content, figures_rel), outputs["markdown"])
    write_text(render.render_html(content), outputs["html"])
    meta = {
        "experiments": {k: str(v) for k, v in experiments.items()},
        "experiment_order": list(experiments),
        "configs": configs,
        "environment": environment,
    }
    write_parquet(summary, outputs["summary"], metadata=meta)
    log.info("report: %d experiments, %d figures -> %s", len(exps), sum(v is not None for v in figures.values()), outputs["html"])
    return content


def _readable(folder: Path) -> None:
    """A temporary folder is private (0700); the output folder gets the usual mode (0777 & ~umask)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)


def _metrics_table(exps, pd):
    frames = []
    for x in exps:
        for stage, df in (("pretrain", x.pretrain_metrics), ("finetune", x.finetune_metrics)):
            d = df[["metric", "split", "value"]].copy()
            d.insert(0, "stage", stage)
            d.insert(0, "experiment", x.name)
            frames.append(d)
    return pd.concat(frames, ignore_index=True)


def run(params: dict, inputs: dict[str, Path], outputs: dict[str, Path], monitor) -> None:
    """Pipeline stage: params `experiments` (name -> results folder), `experiment_order`, and
    `config` (the validated config; each experiment's is merged here) or `configs` (name ->
    merged config); writes every output."""
    experiments = params.get("experiments")
    if not isinstance(experiments, dict) or not experiments:
        raise EcoevalError("params.experiments: expected a mapping of experiment name -> results folder")
    # the params JSON has sorted keys; `experiment_order` (config order), where given, restores it
    order = [e for e in params.get("experiment_order") or [] if e in experiments]
    experiments = {e: experiments[e] for e in order + [e for e in experiments if e not in order]}
    missing = [k for k in ("summary", "html", "markdown") if k not in outputs]
    if missing:
        raise EcoevalError(f"report outputs: missing {missing} (rule run_report in rules/report.smk)")
    configs = params.get("configs")
    if configs is None and params.get("config"):
        configs = {e: experiment_config(params["config"], e) for e in experiments if e in params["config"]["experiments"]}
    build_report(experiments, outputs, configs=configs, model_folders=True)


# -- the command -------------------------------------------------------------------------


def _previous(results: Path, out: Path) -> dict:
    """The metadata (experiment order, configs, environment) of an earlier summary.parquet, if any."""
    from ecoeval.io import read_metadata

    for path in (out / "summary.parquet", results / "report" / "summary.parquet"):
        if path.is_file():
            return read_metadata(path)
    return {}


def _cmd_report(args) -> int:
    from ecoeval.report import collect

    results, out = Path(args.results), Path(args.out)
    found = collect.discover(results)
    prev = _previous(results, out)
    if args.experiments:
        unknown = [e for e in args.experiments if e not in found]
        if unknown:
            raise EcoevalError(f"--experiments: {unknown} not found in {results} (have: {', '.join(found)})")
        names = list(args.experiments)
    else:
        order = prev.get("experiment_order") or []
        names = [n for n in order if n in found] + [n for n in found if n not in order]
    if args.config:
        from ecoeval.config import load_config

        cfg = load_config(args.config)
        configs = {n: experiment_config(cfg, n) for n in names if n in cfg["experiments"]}
    else:
        configs = {n: c for n, c in (prev.get("configs") or {}).items() if n in names}
    experiments = {n: found[n] for n in names}
    build_report(experiments, default_outputs(out), configs=configs, environment=prev.get("environment"),
                 model_folders=args.model_folders)
    print(f"report: {len(names)} experiments -> {out / 'report.html'}")
    return 0


def add_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="rebuild the report (HTML, Markdown, summary.parquet, figures, model cards) from stored results",
        description="Rebuild the aggregated report from a results folder's stored Parquet and JSON files, "
        "without rerunning any stage. Configs and environment are taken from an earlier summary.parquet "
        "when present, or from --config.",
    )
    p.add_argument("--results", required=True, help="results folder holding one subfolder per experiment")
    p.add_argument("--out", required=True, help="output folder (summary.parquet, report.html, report.md, figures/, model_cards/)")
    p.add_argument("--experiments", nargs="+", help="experiment names, in report order (default: all found)")
    p.add_argument("--config", help="config file to show each experiment's configuration from")
    p.add_argument("--model-folders", action="store_true", help="also copy the model cards into the model folders")
    p.set_defaults(func=_cmd_report)
