"""The report inside the real pipeline: tiny config through Snakemake, then the report's own checks.

- model cards land in every model folder and Snakemake then has nothing to do (`-n`);
- `snakemake --report` packs the report() outputs with captions and categories;
- `ecoeval report` rebuilds the same tables from the stored files alone.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from pipeline_helpers import snakemake

pytestmark = pytest.mark.slow


@pytest.fixture()
def run(tiny_pipeline):
    return tiny_pipeline


def test_model_cards_in_every_model_folder_and_nothing_left_to_do(run):
    from huggingface_hub import ModelCard

    results = run / "results"
    for exp in ("skewed", "balanced"):
        blocks = json.loads((results / exp / "carbon" / "co2_eq_emissions.json").read_text())
        for stage in ("pretrain", "finetune"):
            card = ModelCard.load(results / exp / stage / "model" / "README.md")
            assert card.data.co2_eq_emissions == blocks["models"][stage]["co2_eq_emissions"]
            assert card.data.datasets and card.data.metrics
            copy = results / "report" / "model_cards" / exp / stage / "README.md"
            assert copy.read_text() == (results / exp / stage / "model" / "README.md").read_text()
    dry = snakemake(run, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]


def test_summary_and_pages_from_the_real_stages(run):
    from ecoeval.report.plots import PLOTS

    results = run / "results"
    summary = pd.read_parquet(results / "report" / "summary.parquet")
    assert sorted(summary["experiment"]) == ["balanced", "skewed"]
    assert summary[["energy_j", "co2e_kg", "finetune_accuracy", "crows_pairs_score", "model_params"]].notna().all().all()
    assert (summary["co2e_kg_low"] <= summary["co2e_kg"]).all() and (summary["co2e_kg"] <= summary["co2e_kg_high"]).all()
    html = (results / "report" / "report.html").read_text()
    assert html.count('<img src="data:image/png;base64,') == len(PLOTS), "a plot had nothing to draw on real results"
    assert sorted(p.name for p in (results / "report" / "figures").glob("*.png")) == sorted(f"{p.key}.png" for p in PLOTS)


def test_snakemake_report_packs_captioned_outputs(run):
    out = run / "report.html"
    snakemake(run, "--report", str(out))
    text = out.read_text()
    # the categories, every captioned output and its caption text are embedded in the one file
    for needle in ("Figures", "report.md", "summary.parquet", "pareto.png", "training_curves.png",
                   "it opens offline", "cell for cell"):
        assert needle in text, needle


def test_regenerated_report_has_the_same_tables(run, tmp_path):
    from ecoeval.cli import main

    results = run / "results"
    assert main(["report", "--results", str(results), "--out", str(tmp_path)]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(results / "report" / "summary.parquet"), pd.read_parquet(tmp_path / "summary.parquet"))
    assert (tmp_path / "report.md").read_text() == (results / "report" / "report.md").read_text()
    assert (tmp_path / "report.html").read_text() == (results / "report" / "report.html").read_text()
