"""Model cards: a README.md with Hugging Face YAML front matter for every trained model.

The cards are written to the report's own `model_cards/<experiment>/<stage>/README.md`
(declared outputs of the report rule) and, in the pipeline, copied into each model folder.
A model folder is a `directory()` output of an earlier rule; Snakemake 9 takes such a
folder's modification time from its `.snakemake_timestamp` file (or, without one, from the
folder itself), so the copy keeps both times as they were and downstream outputs stay
up to date. See docs/outputs.md.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from ecoeval.io import write_text
from ecoeval.report.collect import Experiment, carbon_totals

G_PER_KG = 1000.0
STAGE_INFO = {
    "pretrain": {"training_type": "pre-training", "pipeline_tag": "fill-mask", "metrics": ["perplexity"],
                 "what": "a BERT-style masked language model pretrained from scratch by ecoeval"},
    "finetune": {"training_type": "fine-tuning", "pipeline_tag": "text-classification", "metrics": ["accuracy", "f1"],
                 "what": "a sequence classifier finetuned by ecoeval from the pretrained model of the same experiment"},
}


def _datasets(exp: Experiment, stage: str) -> list[str]:
    kinds = ["pretrain"] if stage == "pretrain" else ["pretrain", "classify"]
    names = []
    for kind in kinds:
        rec = exp.provenance.get(kind) or {}
        src = rec.get("source", "unknown")
        files = rec.get("files") or []
        if src == "hf":  # location hf://datasets/<name>@<revision>
            loc = str(files[0].get("location", "")) if files else ""
            names.append(loc.removeprefix("hf://datasets/").split("@")[0] or f"hf-{kind}")
        elif src == "builtin":
            names.append(f"ecoeval-builtin-{kind}")
        else:
            names.append(Path(str(files[0].get("location"))).name if files else f"{src}-{kind}")
    return list(dict.fromkeys(names))


def co2_block(exp: Experiment, stage: str) -> dict:
    """The model-index `co2_eq_emissions` block: from carbon/co2_eq_emissions.json, else carbon.parquet."""
    models = exp.co2_card.get("models", exp.co2_card) if isinstance(exp.co2_card, dict) else {}
    card = models.get(stage) if isinstance(models, dict) else None
    if isinstance(card, dict) and "co2_eq_emissions" in card:
        card = card["co2_eq_emissions"]
    if isinstance(card, dict) and "emissions" in card:
        return {k: card[k] for k in ("emissions", "source", "training_type", "geographical_location", "hardware_used") if k in card}
    scenario = exp.scenarios()[0]
    rows = exp.carbon[(exp.carbon["stage"] == stage) & (exp.carbon["scenario"] == scenario)]
    region = str(rows["region"].iloc[0]) if "region" in rows and len(rows) else scenario
    devices = exp.energy[exp.energy["stage"] == stage]
    hardware = ", ".join(sorted({f"{r.device} ({r.method})" for r in devices.itertuples()})) or "unknown"
    return {
        "emissions": round(float(rows["co2e_kg"].sum()) * G_PER_KG, 6),
        "source": f"ecoeval measurement, carbon scenario {scenario}",
        "training_type": STAGE_INFO[stage]["training_type"],
        "geographical_location": region,
        "hardware_used": hardware,
    }


def _fmt(v: float, digits: int = 4) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}g}"


def model_card(exp: Experiment, stage: str, summary_row: dict) -> str:
    from huggingface_hub import ModelCardData

    info = STAGE_INFO[stage]
    co2 = co2_block(exp, stage)
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag=info["pipeline_tag"],
        tags=["ecoeval", exp.name],
        datasets=_datasets(exp, stage),
        metrics=info["metrics"],
        co2_eq_emissions=co2,
    )
    lines = [
        "---",
        data.to_yaml(),
        "---",
        "",
        f"# {exp.name} / {stage}",
        "",
        f"This is {info['what']} (experiment `{exp.name}`). Figures, assumptions and provenance: "
        "`results/report/report.html`.",
        "",
        "## Results",
        "",
    ]
    if stage == "pretrain":
        lines += [
            f"- parameters: {summary_row.get('model_params')}",
            f"- training tokens: {summary_row.get('pretrain_tokens')}, steps: {summary_row.get('pretrain_steps')}, "
            f"wall time: {_fmt(summary_row.get('pretrain_wall_s'))} s",
            f"- validation loss: {_fmt(summary_row.get('pretrain_eval_loss'))}, perplexity: {_fmt(summary_row.get('pretrain_perplexity'))}",
            f"- CrowS-Pairs score: {_fmt(summary_row.get('crows_pairs_score'))} "
            f"[{_fmt(summary_row.get('crows_pairs_ci_low'))}, {_fmt(summary_row.get('crows_pairs_ci_high'))}] (50 = unbiased)",
        ]
    else:
        lines += [
            f"- test accuracy: {_fmt(summary_row.get('finetune_accuracy'))}, macro F1: {_fmt(summary_row.get('finetune_macro_f1'))}",
            f"- demographic parity difference: {_fmt(summary_row.get('demographic_parity_difference'))}",
            f"- equalized odds difference: {_fmt(summary_row.get('equalized_odds_difference'))}",
            f"- counterfactual flip rate: {_fmt(summary_row.get('counterfactual_flip_rate'))}",
        ]
    e = exp.energy[exp.energy["stage"] == stage]
    lines += ["", "## Energy and carbon of this training stage", ""]
    for r in e.itertuples():
        lines.append(f"- {r.device}/{r.domain}: {_fmt(float(r.energy_j))} J ({r.method})")
    totals = exp.carbon[exp.carbon["stage"] == stage]
    for sc in exp.scenarios():
        t = totals[totals["scenario"] == sc]
        if len(t):
            lines.append(
                f"- scenario {sc}: {_fmt(float(t['co2e_kg'].sum()) * G_PER_KG)} g CO2e "
                f"[{_fmt(float(t['co2e_kg_low'].sum()) * G_PER_KG)}, {_fmt(float(t['co2e_kg_high'].sum()) * G_PER_KG)}], "
                f"{_fmt(float(t['cost_usd'].sum()))} USD"
            )
    all_stages = carbon_totals(exp)
    first = all_stages.iloc[0]
    lines += [
        "",
        f"The whole pipeline of this experiment (all stages, scenario {first['scenario']}): "
        f"{_fmt(float(first['co2e_kg']) * G_PER_KG)} g CO2e.",
        "",
    ]
    return "\n".join(lines)


def write_cards(exp: Experiment, summary_row: dict, cards_dir: Path, into_model_folders: bool) -> list[Path]:
    """Write both cards under `cards_dir/<experiment>/`, and optionally into the model folders."""
    written = []
    for stage in STAGE_INFO:
        text = model_card(exp, stage, summary_row)
        written.append(write_text(text, cards_dir / exp.name / stage / "README.md"))
        folder = exp.folder / stage / "model"
        if into_model_folders and folder.is_dir():
            written.append(write_into_folder_keeping_mtime(folder, "README.md", text))
    return written


def write_into_folder_keeping_mtime(folder: Path, name: str, text: str) -> Path:
    """Write `folder/name` atomically, then restore the times Snakemake reads for `folder`."""
    stamp = folder / ".snakemake_timestamp"
    keep = [(p, p.stat()) for p in (folder, stamp) if p.exists()]
    target = folder / name
    if target.is_file() and target.read_text(encoding="utf-8") == text:
        return target
    write_text(text, target)
    for p, st in keep:
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    return target
