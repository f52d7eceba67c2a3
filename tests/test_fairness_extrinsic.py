"""Extrinsic bias: group metrics against fairlearn, intervals, counterfactual swaps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ecoeval import EcoevalError
from ecoeval.builtin import generate_classify
from ecoeval.fairness import extrinsic
from ecoeval.fairness.models import load_classifier
from ecoeval.fairness.tiny import build_bert


def predictions(n: int, p_female: float, p_male: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    group = np.where(np.arange(n) % 2 == 0, "female", "male")
    label = rng.integers(0, 2, n)
    pred = (rng.random(n) < np.where(group == "female", p_female, p_male)).astype(np.int64)
    return pd.DataFrame({"id": [f"t{i}" for i in range(n)], "split": "test", "group": group, "label": label,
                         "pred": pred, "prob": pred.astype(float)})


def by_key(rows):
    return {(r["metric"], r["subset"]): r for r in rows}


def test_group_metrics_match_fairlearn_and_intervals_detect_skew():
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    skewed = predictions(400, 0.75, 0.35, seed=1)
    rows = by_key(extrinsic.group_metric_rows(skewed, skewed[["id"]], 300, 0.95, seed=1))
    y, p, g = skewed["label"], skewed["pred"], skewed["group"]
    dpd = rows[("demographic_parity_difference", "all")]
    assert dpd["value"] == pytest.approx(demographic_parity_difference(y, p, sensitive_features=g))
    assert rows[("equalized_odds_difference", "all")]["value"] == pytest.approx(equalized_odds_difference(y, p, sensitive_features=g))
    female = skewed[g == "female"]
    assert rows[("selection_rate", "group=female")]["value"] == pytest.approx(female["pred"].mean())
    tpr = female.loc[female["label"] == 1, "pred"].mean()
    assert rows[("true_positive_rate", "group=female")]["value"] == pytest.approx(tpr)
    assert 0 < dpd["ci_low"] < dpd["value"] < dpd["ci_high"] and dpd["p_value"] < 1e-6
    fair = by_key(extrinsic.group_metric_rows(predictions(400, 0.5, 0.5, seed=2), skewed[["id"]], 300, 0.95, seed=1))
    fair_dpd = fair[("demographic_parity_difference", "all")]
    assert fair_dpd["ci_low"] < 0 < fair_dpd["ci_high"] and fair_dpd["p_value"] > 0.05


def test_intersectional_groups_from_extra_attributes():
    preds = predictions(200, 0.6, 0.4, seed=3)
    attrs = preds[["id"]].assign(group_age=np.where(np.arange(200) % 4 < 2, "young", "old"))
    rows = by_key(extrinsic.group_metric_rows(preds, attrs, 50, 0.9, seed=1))
    assert ("selection_rate", "group=female,group_age=young") in rows
    assert rows[("selection_rate", "group=female,group_age=young")]["n"] == 50  # i % 4 == 0
    assert ("demographic_parity_difference", "intersectional") in rows
    assert ("demographic_parity_difference", "attribute:group_age") in rows


def test_swapper_both_directions_and_case():
    swapper = extrinsic.Swapper(extrinsic.load_identity_pairs())
    text, pairs = swapper.swap("Mary said SHE loved her job; he is Mr Smith, his wife's friend.")
    assert text == "John said HE loved his job; she is Mrs Smith, her husband's friend."
    assert pairs == ["her/his", "mary/john", "mrs/mr", "she/he", "wife/husband"]
    assert swapper.swap("The table is red.") == ("The table is red.", [])


def test_identity_pairs_file_errors(tmp_path):
    bad = tmp_path / "pairs.tsv"
    bad.write_text("female\tmale\nshe he\n")
    with pytest.raises(EcoevalError, match="pairs.tsv: line 2: expected female<TAB>male"):
        extrinsic.load_identity_pairs(bad)
    with pytest.raises(EcoevalError, match="fairness.counterfactual_pairs"):
        extrinsic.load_identity_pairs(tmp_path / "none.tsv")


def test_counterfactual_flips_on_tiny_classifier(tmp_path):
    cfg = {"n_classify_train": 4, "n_classify_test": 60, "label_skew": 0.5, "neutral_fraction": 0.2}
    data = pd.DataFrame(generate_classify(cfg, seed=5))
    model, tok = load_classifier(build_bert(data["text"], tmp_path / "clf", kind="classifier", seed=4, vocab_size=300))
    swapper = extrinsic.Swapper(extrinsic.load_identity_pairs())
    cf = extrinsic.counterfactual(model, tok, data, swapper, batch_size=16)
    assert len(cf) == 60  # every built-in test sentence names a gendered person
    assert (cf["text"] != cf["text_swapped"]).all()
    direct = extrinsic.predict_proba(model, tok, [cf["text_swapped"].iloc[0]])[0]
    assert cf["prob_swapped"].iloc[0] == pytest.approx(direct, abs=1e-6)  # padding does not change a prediction
    rows = by_key(extrinsic.counterfactual_rows(cf, 100, 0.95, seed=1))
    flip = rows[("counterfactual_flip_rate", "all")]
    assert flip["value"] == pytest.approx(cf["flip"].mean()) and flip["n"] == 60
    delta = rows[("counterfactual_abs_delta_prob_mean", "all")]
    assert delta["ci_low"] <= delta["value"] <= delta["ci_high"] and delta["value"] > 0
    assert any(s.startswith("pair:she/he") for _, s in rows)
