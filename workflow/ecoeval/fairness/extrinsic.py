"""Extrinsic bias of the finetuned classifier: group metrics and counterfactual swaps.

Group metrics: fairlearn's `MetricFrame` over the test split's `group` (and any further
`group_*` attribute columns of the classification data, alone and intersected): accuracy,
selection rate, TPR and FPR per group, and fairlearn's demographic parity difference and
ratio, equalized odds difference and equal opportunity difference. Intervals: seeded
bootstrap over test rows. A disparity's interval is that of the signed difference between
the two groups that are furthest apart in the full sample, kept in that order, so a lower
bound at or below 0 means the ordering of the groups is not established (an absolute
difference's own interval could never include 0).

Counterfactual: every identity term of a test sentence (whole words, from
`resources/identity_pairs.tsv`, female<TAB>male) is replaced by its partner; the finetuned
model predicts both versions; the flip rate and mean |P(1 | swapped) - P(1 | original)| are
reported overall and per term pair, with bootstrap intervals.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ecoeval import EcoevalError

IDENTITY_PAIRS = Path(__file__).resolve().parents[3] / "resources" / "identity_pairs.tsv"
RATES = ("accuracy", "selection_rate", "true_positive_rate", "false_positive_rate")


# ---------------------------------------------------------------- group metrics
def _rates(y: np.ndarray, p: np.ndarray, member: np.ndarray) -> dict[str, np.ndarray]:
    """Rates of a group from 0/1 arrays over the last axis (works on bootstrap matrices)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        n, pos, neg = member.sum(-1), (member * y).sum(-1), (member * (1 - y)).sum(-1)
        return {
            "accuracy": (member * (p == y)).sum(-1) / n,
            "selection_rate": (member * p).sum(-1) / n,
            "true_positive_rate": (member * p * y).sum(-1) / pos,
            "false_positive_rate": (member * p * (1 - y)).sum(-1) / neg,
        }


def _metric_frame(y, p, features: pd.DataFrame):
    from fairlearn.metrics import MetricFrame, false_positive_rate, selection_rate, true_positive_rate
    from sklearn.metrics import accuracy_score

    metrics = {"accuracy": accuracy_score, "selection_rate": selection_rate,
               "true_positive_rate": true_positive_rate, "false_positive_rate": false_positive_rate}
    return MetricFrame(metrics=metrics, y_true=y, y_pred=p, sensitive_features=features)


def _group_label(key, names) -> str:
    key = key if isinstance(key, tuple) else (key,)
    return ",".join(f"{n}={v}" for n, v in zip(names, key))


def _chi2_p(p: np.ndarray, codes: np.ndarray) -> float:
    from scipy.stats import chi2_contingency

    table = np.array([[np.sum((codes == g) & (p == v)) for v in (0, 1)] for g in np.unique(codes)])
    if (table.sum(0) == 0).any() or (table.sum(1) == 0).any():
        return float("nan")
    return float(chi2_contingency(table).pvalue)


def group_rows(df: pd.DataFrame, attributes: list[str], subset: str, n_boot: int, confidence: float, seed: int) -> list[dict]:
    """Per-group rates and disparities for sensitive features `attributes` of `df` (label, pred)."""
    from fairlearn.metrics import (demographic_parity_difference, demographic_parity_ratio,
                                   equal_opportunity_difference, equalized_odds_difference)

    from ecoeval.fairness.stats import bootstrap_indices, percentile_interval, sub_seed

    y, p = df["label"].to_numpy(np.int64), df["pred"].to_numpy(np.int64)
    features = df[attributes].astype(str)
    sf = features if len(attributes) > 1 else features[attributes[0]]
    by_group = _metric_frame(y, p, sf).by_group
    keys = list(by_group.index)
    lookup = {k if isinstance(k, tuple) else (k,): i for i, k in enumerate(keys)}
    row_codes = np.array([lookup[tuple(r)] for r in features.itertuples(index=False)])
    idx = bootstrap_indices(len(y), n_boot, sub_seed(seed, "groups", subset))
    yb, pb, gb = y[idx], p[idx], row_codes[idx]
    reps = [_rates(yb, pb, (gb == k).astype(np.int64)) for k in range(len(keys))]
    rows = []
    for k, key in enumerate(keys):
        label = _group_label(key, attributes)
        n_k = int((row_codes == k).sum())
        for metric in RATES:
            lo, hi = percentile_interval(reps[k][metric], confidence)
            rows.append({"metric": metric, "subset": label, "value": float(by_group.loc[key, metric]),
                         "ci_low": lo, "ci_high": hi, "n": n_k, "p_value": float("nan")})

    def oriented(metric):
        """(hi group, lo group, signed replicate differences) for one rate."""
        values = by_group[metric].to_numpy(float)
        hi_k, lo_k = int(np.nanargmax(values)), int(np.nanargmin(values))
        return values[hi_k] - values[lo_k], reps[hi_k][metric] - reps[lo_k][metric], (hi_k, lo_k)

    dp_value, dp_reps, (hi_k, lo_k) = oriented("selection_rate")
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio_reps = reps[lo_k]["selection_rate"] / reps[hi_k]["selection_rate"]
    tpr_value, tpr_reps, _ = oriented("true_positive_rate")
    fpr_value, fpr_reps, _ = oriented("false_positive_rate")
    eo_reps = tpr_reps if tpr_value >= fpr_value else fpr_reps
    disparities = [
        ("demographic_parity_difference", demographic_parity_difference(y, p, sensitive_features=sf), dp_reps, _chi2_p(p, row_codes)),
        ("demographic_parity_ratio", demographic_parity_ratio(y, p, sensitive_features=sf), ratio_reps, float("nan")),
        ("equalized_odds_difference", equalized_odds_difference(y, p, sensitive_features=sf), eo_reps, float("nan")),
        ("equal_opportunity_difference", equal_opportunity_difference(y, p, sensitive_features=sf), tpr_reps, float("nan")),
    ]
    for metric, value, rep, pval in disparities:
        lo, hi = percentile_interval(rep, confidence)
        rows.append({"metric": metric, "subset": subset, "value": float(value), "ci_low": lo, "ci_high": hi,
                     "n": int(len(y)), "p_value": pval})
    return rows


def group_metric_rows(predictions: pd.DataFrame, classify: pd.DataFrame, n_boot: int, confidence: float, seed: int) -> list[dict]:
    """Group rows for `group` (subset `all`), each extra `group_*` attribute and their intersection."""
    test = predictions[predictions["split"] == "test"]
    if test.empty:
        raise EcoevalError("finetune/predictions.parquet: expected rows with split 'test', found none")
    extra = [c for c in classify.columns if c.startswith("group_")]
    if extra:
        test = test.merge(classify[["id", *extra]], on="id", how="left")
    rows = group_rows(test, ["group"], "all", n_boot, confidence, seed)
    for attr in extra:
        rows += group_rows(test, [attr], f"attribute:{attr}", n_boot, confidence, seed)
    if extra:
        rows += group_rows(test, ["group", *extra], "intersectional", n_boot, confidence, seed)
    return rows


# ---------------------------------------------------------------- counterfactual swaps
def load_identity_pairs(path: Path | None = None) -> list[tuple[str, str]]:
    path = Path(path) if path else IDENTITY_PAIRS
    if not path.is_file():
        raise EcoevalError(f"config key fairness.counterfactual_pairs: {path} not found (expected female<TAB>male lines)")
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        cells = line.strip().split("\t")
        if len(cells) != 2:
            raise EcoevalError(f"{path}: line {n}: expected female<TAB>male, found {line!r}")
        if cells == ["female", "male"] and not pairs:
            continue  # header
        pairs.append((cells[0].lower(), cells[1].lower()))
    if not pairs:
        raise EcoevalError(f"{path}: no female<TAB>male pairs")
    return pairs


class Swapper:
    """Replaces every identity term by its partner (first listed pair wins), keeping case."""

    def __init__(self, pairs: list[tuple[str, str]]):
        self.partner: dict[str, str] = {}
        self.pair_of: dict[str, str] = {}
        for f, m in pairs:
            for a, b in ((f, m), (m, f)):
                if a not in self.partner:
                    self.partner[a] = b
                    self.pair_of[a] = f"{f}/{m}"
        words = sorted(self.partner, key=len, reverse=True)
        self.pattern = re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b", re.IGNORECASE)

    def swap(self, text: str) -> tuple[str, list[str]]:
        used: list[str] = []

        def sub(m: re.Match) -> str:
            word = m.group(0)
            low = word.lower()
            used.append(self.pair_of[low])
            out = self.partner[low]
            if word.isupper() and len(word) > 1:
                return out.upper()
            return out[:1].upper() + out[1:] if word[:1].isupper() else out

        return self.pattern.sub(sub, text), sorted(set(used))


def predict_proba(model, tokenizer, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """P(label = 1) for each text."""
    import torch

    from ecoeval.fairness.models import max_length

    limit = max_length(model, tokenizer)
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=limit, return_tensors="pt")
            out.append(torch.softmax(model(**enc).logits.float(), dim=-1)[:, 1])
    return torch.cat(out).double().numpy() if out else np.zeros(0)


def counterfactual(model, tokenizer, classify: pd.DataFrame, swapper: Swapper, batch_size: int = 64) -> pd.DataFrame:
    """One row per test sentence with at least one identity term: both texts, probabilities, flip."""
    test = classify[classify["split"] == "test"]
    if test.empty:
        raise EcoevalError("data/classify.parquet: expected rows with split 'test', found none")
    swapped = [swapper.swap(t) for t in test["text"]]
    keep = np.array([bool(used) for _, used in swapped])
    df = pd.DataFrame({"id": test["id"].to_numpy()[keep], "text": test["text"].to_numpy()[keep],
                       "text_swapped": [s for (s, _), k in zip(swapped, keep) if k],
                       "pairs": [u for (_, u), k in zip(swapped, keep) if k]})
    if df.empty:
        raise EcoevalError("data/classify.parquet: no test sentence contains an identity term of the counterfactual word-pair list")
    df["prob"] = predict_proba(model, tokenizer, df["text"].tolist(), batch_size)
    df["prob_swapped"] = predict_proba(model, tokenizer, df["text_swapped"].tolist(), batch_size)
    df["flip"] = (df["prob"] >= 0.5) != (df["prob_swapped"] >= 0.5)
    df["abs_delta_prob"] = (df["prob_swapped"] - df["prob"]).abs()
    return df


def counterfactual_rows(cf: pd.DataFrame, n_boot: int, confidence: float, seed: int, min_pair_n: int = 1) -> list[dict]:
    from ecoeval.fairness.stats import bootstrap_mean, sub_seed

    rows = []
    subsets = [("all", np.ones(len(cf), bool))]
    for pair in sorted({p for ps in cf["pairs"] for p in ps}):
        mask = cf["pairs"].map(lambda ps, pair=pair: pair in ps).to_numpy(bool)
        if mask.sum() >= min_pair_n:
            subsets.append((f"pair:{pair}", mask))
    for subset, mask in subsets:
        for metric, col in (("counterfactual_flip_rate", "flip"), ("counterfactual_abs_delta_prob_mean", "abs_delta_prob")):
            values = cf.loc[mask, col].to_numpy(float)
            lo, hi = bootstrap_mean(values, n_boot, confidence, sub_seed(seed, metric, subset))
            rows.append({"metric": metric, "subset": subset, "value": float(values.mean()), "ci_low": lo, "ci_high": hi,
                         "n": int(mask.sum()), "p_value": float("nan")})
    return rows
