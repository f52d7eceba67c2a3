"""The aggregated report, on synthetic results written to the data contracts (docs/contracts.md)."""

from __future__ import annotations

import io
import json
import math
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ecoeval import EcoevalError
from ecoeval.energy import SAMPLE_SCHEMA
from ecoeval.io import read_metadata, read_parquet, write_json, write_parquet

STAGES = ["download", "tokenize", "pretrain", "finetune", "fairness"]
SCENARIOS = [("us", "USA", 1.1, 379.0, "codecarbon global_energy_mix (2022)", 2022),
             ("fixed", None, 1.5, 400.0, "config", None)]
EXPERIMENTS = {"skewed": 0.9, "balanced": 0.5}
T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def _samples(stage: str, wall_s: float, cpu_w: float, rng: np.random.Generator) -> pa.Table:
    t = np.linspace(0.0, wall_s, 12)
    rows = {k: [] for k in SAMPLE_SCHEMA.names}
    for device, domain, watts in (("cpu", "package", cpu_w), ("ram", "dram", 0.5)):
        power = watts * (1 + 0.1 * rng.standard_normal(len(t)))
        energy = np.concatenate([[0.0], np.cumsum(power[1:] * np.diff(t))])
        rows["t_s"] += t.tolist()
        rows["timestamp_utc"] += [T0 + timedelta(seconds=float(s)) for s in t]
        rows["device"] += [device] * len(t)
        rows["domain"] += [domain] * len(t)
        rows["energy_j"] += energy.tolist()
        rows["power_w"] += power.tolist()
        rows["utilization"] += (np.full(len(t), 0.8) if device == "cpu" else np.full(len(t), np.nan)).tolist()
        rows["method"] += ["estimate"] * len(t)
        rows["step"] += [-1] * len(t)
    rows["utilization"] = [None if isinstance(u, float) and math.isnan(u) else u for u in rows["utilization"]]
    if "attributed_energy_j" in rows:  # the monitor's optional columns, if its schema has them
        rows["attributed_energy_j"] = [0.9 * e for e in rows["energy_j"]]
    n = len(rows["t_s"])
    return pa.table({k: v if v else [None] * n for k, v in rows.items()}, schema=SAMPLE_SCHEMA)


def _metrics(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["metric", "split", "value"])


def _log(steps: int, start: float, rng) -> pd.DataFrame:
    step = np.arange(1, steps + 1)
    loss = start * np.exp(-step / steps) + 0.05 * rng.random(steps)
    return pd.DataFrame({"step": step.astype("int64"), "loss": loss, "lr": np.full(steps, 1e-3),
                         "tokens": (step * 512).astype("int64"), "wall_s": step * 0.1})


def _fair(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["metric", "subset", "value", "ci_low", "ci_high", "n", "p_value"]).astype({"n": "int64"})


def make_experiment(folder: Path, name: str, rate: float, seed: int) -> None:
    """One experiment's results folder, every file per docs/contracts.md, numbers from `seed`."""
    rng = np.random.default_rng(seed)
    wall = {"download": 1.0, "tokenize": 2.0, "pretrain": 12.0, "finetune": 6.0, "fairness": 3.0}
    energy_rows = []
    for stage in STAGES:
        table = _samples(stage, wall[stage], 20.0 if stage in ("pretrain", "finetune") else 8.0, rng)
        meta = {"stage": stage, "experiment": name, "wall_s": wall[stage], "steps": [],
                "assumptions": {"cpu_tdp_w": 20.0, "cpu_tdp_source": "default 10 W per logical CPU",
                                "ram_w_per_gb": 0.375, "logical_cpus": 2}}
        write_parquet(table, folder / "energy" / "samples" / f"{stage}.parquet", metadata=meta)
        df = table.to_pandas()
        for (device, domain), g in df.groupby(["device", "domain"]):
            e = float(g["energy_j"].max())
            row = {"experiment": name, "stage": stage, "device": device, "domain": domain, "method": "estimate",
                   "energy_j": e, "attributed_energy_j": 0.9 * e, "wall_s": wall[stage], "mean_power_w": e / wall[stage],
                   "n_samples": len(g), "formula_steps": None, "formula_step_time_s": None, "formula_power_w": None,
                   "formula_energy_j": None}
            if stage in ("pretrain", "finetune"):
                steps = 20 if stage == "pretrain" else 10
                row.update(formula_steps=steps, formula_step_time_s=wall[stage] / steps * 0.8,
                           formula_power_w=e / wall[stage], formula_energy_j=steps * wall[stage] / steps * 0.8 * e / wall[stage])
            energy_rows.append(row)
    energy = pd.DataFrame(energy_rows).astype({"formula_steps": "float64"})
    write_parquet(energy, folder / "energy" / "summary.parquet")

    carbon_rows = []
    for stage in STAGES:
        kwh = float(energy.loc[energy["stage"] == stage, "energy_j"].sum()) / 3.6e6
        for sc, region, pue, intensity, source, year in SCENARIOS:
            co2 = kwh * pue * intensity / 1000
            carbon_rows.append({"experiment": name, "stage": stage, "scenario": sc, "region": region, "energy_kwh": kwh,
                                "pue": pue, "energy_kwh_facility": kwh * pue, "intensity_g_per_kwh": intensity,
                                "intensity_source": source, "intensity_year": year, "co2e_kg": co2,
                                "co2e_kg_low": co2 * 0.7, "co2e_kg_high": co2 * 1.4, "embodied_kg_per_device": 100.0,
                                "embodied_source": "test", "embodied_co2e_kg": co2 * 0.25, "total_co2e_kg": co2 * 1.25,
                                "electricity_usd_per_kwh": 0.15, "cost_usd": kwh * pue * 0.15})
    carbon = pd.DataFrame(carbon_rows).astype({"intensity_year": "Int64"})
    write_parquet(carbon, folder / "carbon" / "carbon.parquet", metadata={"energy_basis": "attributed"})
    if name == "skewed":  # the other experiment exercises the fallback from carbon.parquet
        block = {"source": "ecoeval", "geographical_location": "USA", "hardware_used": "cpu"}
        write_json({"scenario": "us", "models": {
            "pretrain": {"model_dir": "pretrain/model", "co2_eq_emissions": {"emissions": 0.0123, "training_type": "pre-training", **block}},
            "finetune": {"model_dir": "finetune/model", "co2_eq_emissions": {"emissions": 0.0061, "training_type": "fine-tuning", **block}}}},
            folder / "carbon" / "co2_eq_emissions.json")

    write_parquet(_metrics([("eval_loss", "validation", 5.0 + rng.random()), ("perplexity", "validation", 150.0),
                            ("train_steps", "train", 20), ("train_tokens", "train", 10240), ("train_wall_s", "train", 11.5),
                            ("model_params", "train", 123456), ("step_time_s", "train", 0.5)]),
                  folder / "pretrain" / "metrics.parquet")
    write_parquet(_log(20, 7.5, rng), folder / "pretrain" / "log.parquet")
    acc = 0.7 + 0.1 * rng.random()
    write_parquet(_metrics([("accuracy", "train", 0.9), ("accuracy", "test", acc), ("macro_f1", "train", 0.88),
                            ("macro_f1", "test", acc - 0.02), ("train_steps", "train", 10), ("train_tokens", "train", 4000),
                            ("train_wall_s", "train", 5.5), ("step_time_s", "train", 0.5)]),
                  folder / "finetune" / "metrics.parquet")
    write_parquet(_log(10, 0.7, rng), folder / "finetune" / "log.parquet")

    cp = 50 + 40 * (rate - 0.5) + rng.random()
    write_parquet(_fair([("crows_pairs", "all", cp, cp - 6, cp + 6, 200, 0.01),
                         ("crows_pairs", "bias:gender", cp + 2, cp - 8, cp + 10, 120, 0.02),
                         ("crows_pairs", "bias:race-color", cp - 3, cp - 13, cp + 7, 80, 0.3),
                         ("crows_pairs", "stereo", cp + 1, cp - 7, cp + 9, 150, 0.05),
                         ("crows_pairs", "antistereo", cp - 4, cp - 16, cp + 8, 50, 0.5),
                         ("crows_pairs_neutral", "all", 2.0, 0.5, 4.0, 200, None),
                         ("vocab_unk_word_share", "probe", 0.1, None, None, 300, None)]),
                  folder / "fairness" / "intrinsic.parquet")
    dp = 0.3 * (rate - 0.5) * 2 + 0.02
    write_parquet(_fair([("demographic_parity_difference", "all", dp, dp - 0.05, dp + 0.05, 400, None),
                         ("equalized_odds_difference", "all", dp * 0.8, dp * 0.8 - 0.06, dp * 0.8 + 0.06, 400, None),
                         ("counterfactual_flip_rate", "all", 0.1 * rate, 0.05 * rate, 0.15 * rate, 400, None),
                         ("counterfactual_flip_rate", "pair:he/she", 0.12 * rate, 0.05 * rate, 0.2 * rate, 200, None),
                         ("counterfactual_abs_delta_prob_mean", "all", 0.05 * rate, 0.03 * rate, 0.07 * rate, 400, None),
                         ("demographic_parity_ratio", "all", 1 - dp, 0.9 - dp, 1.05 - dp, 400, None),
                         ("accuracy", "group=female", acc + 0.02, acc - 0.03, acc + 0.07, 200, None),
                         ("accuracy", "group=male", acc - 0.02, acc - 0.07, acc + 0.03, 200, None),
                         ("selection_rate", "group=female", 0.5 + dp / 2, 0.45, 0.6 + dp, 200, None),
                         ("selection_rate", "group=male", 0.5 - dp / 2, 0.4 - dp, 0.55, 200, None)]),
                  folder / "fairness" / "extrinsic.parquet")

    write_json({kind: {"source": "builtin", "files": [{"location": f"builtin:{kind}", "sha256": f"{seed:02d}" * 32}],
                       "license": "CC0-1.0", "rows": {"train": 100}, "generator": {"stereotype_rate": rate}}
                for kind in ("pretrain", "classify", "probe")}, folder / "data" / "provenance.json")
    for stage in ("pretrain", "finetune"):
        model = folder / stage / "model"
        model.mkdir(parents=True)
        (model / "config.json").write_text("{}\n")
        (model / ".snakemake_timestamp").write_text("")


def make_results(root: Path) -> dict[str, Path]:
    folders = {}
    for i, (name, rate) in enumerate(EXPERIMENTS.items()):
        folders[name] = root / name
        make_experiment(folders[name], name, rate, seed=11 + i)
    return folders


CONFIGS = {name: {"experiment": name, "seed": 7, "data": {"builtin": {"stereotype_rate": rate}},
                  "carbon": {"scenarios": [{"name": "us", "region": "USA", "pue": 1.1, "mode": "annual",
                                            "electricity_usd_per_kwh": 0.15, "lifetime_years": 4, "utilization": 0.5,
                                            "embodied_kg": 100.0}]}}
           for name, rate in EXPERIMENTS.items()}
ENVIRONMENT = {"ecoeval": "0.1.0", "git_commit": "0" * 40, "hardware.cpu_model": "test cpu", "package.torch": "2.13.0"}


def report_outputs(out: Path) -> dict[str, Path]:
    from ecoeval.report import default_outputs

    return default_outputs(out)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Synthetic results for two experiments and the report built from them by the stage."""
    from ecoeval.report import build_report

    root = tmp_path_factory.mktemp("results")
    folders = make_results(root)
    outputs = report_outputs(root / "report")
    content = build_report(folders, outputs, configs=CONFIGS, environment=ENVIRONMENT, model_folders=True)
    return root, folders, outputs, content


def test_summary_has_one_row_per_experiment_with_documented_columns(built, repo):
    root, folders, outputs, _ = built
    summary = read_parquet(outputs["summary"]).to_pandas()
    assert list(summary["experiment"]) == ["skewed", "balanced"]
    required = ["experiment", "model_params", "pretrain_tokens", "pretrain_wall_s", "energy_j", "energy_method",
                "co2e_kg", "co2e_kg_low", "co2e_kg_high", "cost_usd", "finetune_accuracy", "crows_pairs_score",
                "crows_pairs_ci_low", "crows_pairs_ci_high", "demographic_parity_difference",
                "equalized_odds_difference", "counterfactual_flip_rate"]
    assert all(c in summary.columns for c in required), set(required) - set(summary.columns)
    # every column is documented in docs/outputs.md
    doc = (repo / "docs" / "outputs.md").read_text()
    undocumented = [c for c in summary.columns if f"`{c}`" not in doc]
    assert not undocumented, undocumented


def test_summary_numbers_trace_back_to_the_stage_files(built):
    root, folders, outputs, _ = built
    s = read_parquet(outputs["summary"]).to_pandas().set_index("experiment")
    for name, folder in folders.items():
        energy = pd.read_parquet(folder / "energy/summary.parquet")
        carbon = pd.read_parquet(folder / "carbon/carbon.parquet")
        first = carbon[carbon["scenario"] == "us"]
        assert s.loc[name, "energy_j"] == pytest.approx(energy["energy_j"].sum())
        assert s.loc[name, "energy_method"] == "estimate"
        assert s.loc[name, "energy_basis"] == "attributed"
        assert s.loc[name, "co2e_scenario"] == "us"
        assert s.loc[name, "co2e_kg"] == pytest.approx(first["co2e_kg"].sum())
        assert s.loc[name, "co2e_kg_low"] == pytest.approx(first["co2e_kg_low"].sum())
        assert s.loc[name, "co2e_kg_high"] == pytest.approx(first["co2e_kg_high"].sum())
        assert s.loc[name, "cost_usd"] == pytest.approx(first["cost_usd"].sum())
        assert s.loc[name, "co2e_kg_low"] < s.loc[name, "co2e_kg"] < s.loc[name, "co2e_kg_high"]
        ft = pd.read_parquet(folder / "finetune/metrics.parquet")
        assert s.loc[name, "finetune_accuracy"] == ft.query("metric == 'accuracy' and split == 'test'")["value"].iloc[0]
        intr = pd.read_parquet(folder / "fairness/intrinsic.parquet").query("metric == 'crows_pairs' and subset == 'all'")
        assert s.loc[name, "crows_pairs_score"] == intr["value"].iloc[0]
        assert s.loc[name, "crows_pairs_ci_low"] == intr["ci_low"].iloc[0]
        extr = pd.read_parquet(folder / "fairness/extrinsic.parquet").set_index(["metric", "subset"])
        for m in ("demographic_parity_difference", "equalized_odds_difference", "counterfactual_flip_rate"):
            assert s.loc[name, m] == extr.loc[(m, "all"), "value"]
        assert s.loc[name, "model_params"] == 123456
        assert s.loc[name, "pretrain_tokens"] == 10240
    assert s.loc["skewed", "crows_pairs_score"] > s.loc["balanced", "crows_pairs_score"]


def test_html_is_self_contained_with_every_plot_inlined(built):
    _, _, outputs, content = built
    html = outputs["html"].read_text()
    # nothing fetched from anywhere: no external src/href, no scripts, no stylesheets links
    assert not re.search(r'(src|href)\s*=\s*"(?!data:|#)', html)
    assert "<script" not in html and "<link" not in html and "@import" not in html
    imgs = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]+)" data-plot="([a-z_]+)"', html)
    from ecoeval.report.plots import PLOTS

    assert sorted(k for _, _, k in imgs) == sorted(p.key for p in PLOTS)
    assert all(v is not None for v in content.figures.values())
    # every energy table row names its method
    assert "Energy methods" in html and "estimate" in html


def test_no_plot_is_an_empty_frame(built):
    """Each figure carries data: artists with points, and pixels beyond the axes frame."""
    from matplotlib.collections import Collection
    from PIL import Image

    from ecoeval.report import collect
    from ecoeval.report.plots import PLOTS, png_bytes

    root, folders, _, _ = built
    exps = [collect.load_experiment(n, f, CONFIGS[n]) for n, f in folders.items()]
    summary = collect.summary_table(exps)
    for p in PLOTS:
        fig = p.draw(exps, summary)
        assert fig is not None, p.key
        n_data = 0
        for ax in fig.axes:
            n_data += sum(len(line.get_xdata()) for line in ax.lines if line.get_linestyle() != "None" or line.get_marker() not in (None, "None", ""))
            n_data += sum(1 for patch in ax.patches if patch.get_height() != 0 or patch.get_width() != 0)
            n_data += sum(len(c.get_offsets()) + len(c.get_paths()) for c in ax.collections if isinstance(c, Collection))
        assert n_data >= 2, f"{p.key}: only {n_data} data artists"
        img = np.asarray(Image.open(io.BytesIO(png_bytes(fig))).convert("RGB")).astype(int)
        colored = (np.ptp(img, axis=2) > 60).mean()  # saturated (non-grey) pixels: data, not frame or text
        assert colored > 0.002, f"{p.key}: only {colored:.4%} coloured pixels"


def test_markdown_twin_has_the_same_tables_and_figure_files(built):
    from markupsafe import escape

    from ecoeval.report.render import cells

    _, _, outputs, content = built
    md = outputs["markdown"].read_text()
    html = outputs["html"].read_text()
    for t in content.tables:
        _, rows = cells(t.df)
        assert f"### {t.title}" in md
        for row in rows[:5]:
            assert "| " + " | ".join(c["text"].replace("|", "\\|") for c in row) + " |" in md
            assert all(str(escape(c["text"])) in html for c in row)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == len(content.figures)
    for link in links:
        png = outputs["markdown"].parent / link
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_assumptions_and_provenance_tables(built):
    _, _, _, content = built
    t = {x.key: x.df for x in content.tables}
    a = t["assumptions"]
    items = set(a["item"])
    assert {"cpu_tdp_w", "ram_w_per_gb", "pue", "intensity_g_per_kwh", "intensity_source", "intensity_year",
            "electricity_usd_per_kwh", "embodied_kg", "lifetime_years"} <= items
    tdp = a[(a["experiment"] == "skewed") & (a["item"] == "cpu_tdp_w")]
    assert list(tdp["value"]) == ["20"] and tdp["applies_to"].iloc[0] == ", ".join(STAGES)
    year = a[(a["item"] == "intensity_year") & (a["applies_to"] == "scenario us")]
    assert set(year["value"]) == {"2022"} and set(year["from"]) == {"carbon.parquet"}
    p = t["provenance"].set_index(["experiment", "item"])["value"]
    assert p[("skewed", "data.pretrain.sha256")].startswith("11" * 32)
    assert p[("(all)", "git_commit")] == "0" * 40
    assert len(p[("balanced", "config.sha256")]) == 64


def test_formula_table_sits_beside_measured(built):
    _, folders, _, content = built
    f = next(x.df for x in content.tables if x.key == "formula")
    assert set(f["stage"]) == {"pretrain", "finetune"} and len(f) == 4
    row = f[(f["experiment"] == "skewed") & (f["stage"] == "pretrain")].iloc[0]
    assert row["formula_energy_j"] == pytest.approx(row["formula_steps"] * row["formula_step_time_s"] * row["formula_power_w"])
    assert row["formula_over_measured"] == pytest.approx(0.8, rel=0.01)
    assert row["measured_method"] == "estimate"


def test_model_cards_have_hf_front_matter_and_keep_folder_mtimes(tmp_path):
    from huggingface_hub import ModelCard

    from ecoeval.report import collect
    from ecoeval.report.cards import write_cards

    folders = make_results(tmp_path)
    model = folders["balanced"] / "pretrain" / "model"
    old = 1_600_000_000
    for p in (model, model / ".snakemake_timestamp"):
        os.utime(p, (old, old))
    exps = [collect.load_experiment(n, f, CONFIGS[n]) for n, f in folders.items()]
    rows = collect.summary_table(exps).to_dict("records")
    cards = tmp_path / "cards"
    for x, row in zip(exps, rows):
        write_cards(x, row, cards, into_model_folders=True)
    assert model.stat().st_mtime == old and (model / ".snakemake_timestamp").stat().st_mtime == old
    for name, folder in folders.items():
        for stage in ("pretrain", "finetune"):
            card = ModelCard.load(folder / stage / "model" / "README.md")
            co2 = card.data.co2_eq_emissions
            assert co2["training_type"] == ("pre-training" if stage == "pretrain" else "fine-tuning")
            assert co2["emissions"] > 0 and co2["geographical_location"] == "USA"
            assert card.data.datasets and card.data.metrics
            assert (cards / name / stage / "README.md").read_text() == (folder / stage / "model" / "README.md").read_text()
    # skewed's block comes from carbon/co2_eq_emissions.json, balanced's from carbon.parquet (grams)
    assert ModelCard.load(folders["skewed"] / "pretrain/model/README.md").data.co2_eq_emissions["emissions"] == 0.0123
    carbon = pd.read_parquet(folders["balanced"] / "carbon/carbon.parquet").query("stage == 'pretrain' and scenario == 'us'")
    assert ModelCard.load(model / "README.md").data.co2_eq_emissions["emissions"] == pytest.approx(carbon["co2e_kg"].sum() * 1000, abs=1e-6)


def test_regenerating_from_stored_parquet_gives_the_same_report(built, tmp_path):
    """`ecoeval report` on the stored files alone (no training) rebuilds identical tables and pages."""
    from ecoeval.cli import main

    root, folders, outputs, _ = built
    out = tmp_path / "again"
    assert main(["report", "--results", str(root), "--out", str(out)]) == 0
    a = read_parquet(outputs["summary"]).to_pandas()
    b = read_parquet(out / "summary.parquet").to_pandas()
    pd.testing.assert_frame_equal(a, b)
    assert read_metadata(out / "summary.parquet") == read_metadata(outputs["summary"])
    assert (out / "report.md").read_text() == outputs["markdown"].read_text()
    assert (out / "report.html").read_text() == outputs["html"].read_text()
    assert (out / "summary.parquet").read_bytes() == outputs["summary"].read_bytes()


def test_stage_run_keeps_the_config_order(built, tmp_path):
    """`run` (what `ecoeval stage report` calls) restores the config order the params JSON sorted away."""
    from ecoeval.report import run

    root, folders, _, _ = built
    outputs = report_outputs(tmp_path)
    params = {"experiments": dict(sorted((k, str(v)) for k, v in folders.items())), "experiment_order": ["skewed", "balanced"],
              "configs": CONFIGS, "results_dir": str(root), "threads": 1}
    run(params, {}, {k: outputs[k] for k in ("summary", "html", "markdown", "figures", "cards")}, None)
    assert list(read_parquet(outputs["summary"]).column("experiment").to_pylist()) == ["skewed", "balanced"]
    assert (outputs["cards"] / "balanced" / "finetune" / "README.md").is_file()
    with pytest.raises(EcoevalError, match="params.experiments: expected a mapping"):
        run({"experiments": {}}, {}, outputs, None)


def test_missing_core_file_is_one_clear_error(tmp_path):
    from ecoeval.report import build_report

    folders = make_results(tmp_path)
    (folders["skewed"] / "carbon" / "carbon.parquet").unlink()
    with pytest.raises(EcoevalError, match=r"skewed/carbon/carbon.parquet: not found"):
        build_report(folders, report_outputs(tmp_path / "report"), environment=ENVIRONMENT)
    bad = pd.DataFrame({"metric": ["x"], "value": [1.0]})
    write_parquet(bad, folders["balanced"] / "pretrain" / "metrics.parquet")
    with pytest.raises(EcoevalError, match=r"balanced/pretrain/metrics.parquet: missing columns \['split'\]"):
        build_report({"balanced": folders["balanced"]}, report_outputs(tmp_path / "report"), environment=ENVIRONMENT)
    assert not (tmp_path / "report" / "summary.parquet").exists()


def test_cli_rejects_unknown_experiment(built, tmp_path, capsys):
    from ecoeval.cli import main

    root = built[0]
    assert main(["report", "--results", str(root), "--out", str(tmp_path), "--experiments", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--experiments: ['nope'] not found" in err


def test_hf_and_local_data_sources_in_provenance_and_cards(tmp_path):
    from ecoeval.report import collect
    from ecoeval.report.cards import _datasets

    folders = make_results(tmp_path)
    exp = collect.load_experiment("skewed", folders["skewed"], CONFIGS["skewed"])
    exp.provenance = {
        "pretrain": {"source": "hf", "license": "cc-by-sa-3.0", "files": [
            {"split": "train", "location": "hf://datasets/Salesforce/wikitext@b08601e", "split_spec": "train[:1000]"}]},
        "classify": {"source": "local", "license": "unknown", "files": [
            {"split": "train", "location": "/data/sst2/train.tsv", "sha256": "ab" * 32}]},
    }
    assert _datasets(exp, "finetune") == ["Salesforce/wikitext", "train.tsv"]
    p = collect.provenance_table([exp], ENVIRONMENT).set_index("item")["value"]
    assert p["data.pretrain.location"] == "hf://datasets/Salesforce/wikitext@b08601e (split train[:1000])"
    assert p["data.classify.sha256"] == f"{'ab' * 32} (/data/sst2/train.tsv)"
