"""WEAT / SEAT association tests (Caliskan et al. 2017; May et al. 2019) on a masked LM's encoder.

Tests use SEAT's JSON layout: `{"targ1": {"category": ..., "examples": [...]}, "targ2": ...,
"attr1": ..., "attr2": ...}`. An example (a word or a sentence) is embedded as the mean of
the encoder's last hidden states over its non-special tokens. Effect size:
(mean_x s(x) - mean_y s(y)) / std_{w in X u Y} s(w) (sample std), with
s(w) = mean_a cos(w, a) - mean_b cos(w, b). p-value: one-sided permutation test of
sum_x s(x) - sum_y s(y) over equal-size re-partitions of X u Y, exact when there are few
partitions, else `n_permutations` seeded random ones, p = (k + 1) / (n + 1).

The built-in tests (`resources/fairness/*.json`) are generated from the built-in data's
word lists by `builtin_tests()`; `python -m ecoeval.fairness.weat` rewrites them.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np

from ecoeval import EcoevalError

FAIRNESS_RESOURCES = Path(__file__).resolve().parents[3] / "resources" / "fairness"
SETS = ("targ1", "targ2", "attr1", "attr2")
# SEAT's bleached sentence templates (May et al. 2019) for single words
SEAT_TEMPLATES = ("This is {}.", "That is {}.", "There is {}.", "Here is {}.", "{} is here.", "{} is there.")


def load_test(path: Path) -> dict:
    try:
        test = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise EcoevalError(f"association test {path}: not a readable JSON file ({exc})") from None
    for key in SETS:
        examples = test.get(key, {}).get("examples") if isinstance(test.get(key), dict) else None
        if not examples or not all(isinstance(e, str) for e in examples):
            raise EcoevalError(f"association test {path}: expected {key}.examples as a non-empty list of strings (SEAT layout)")
    return test


def test_files(path: Path | None) -> list[Path]:
    """The JSON tests at `path` (a file or a folder of *.json / *.jsonl files)."""
    if path is None:
        return []
    path = Path(path)
    if path.is_dir():
        files = sorted([*path.glob("*.json"), *path.glob("*.jsonl")])
        if not files:
            raise EcoevalError(f"config key fairness.seat_path: folder {path} has no *.json or *.jsonl tests")
        return files
    if not path.is_file():
        raise EcoevalError(f"config key fairness.seat_path: {path} not found")
    return [path]


def builtin_tests() -> dict[str, dict]:
    """Occupation x gender tests from the built-in word lists: a word-level WEAT and a sentence SEAT."""
    from ecoeval.builtin import GENDERS, PRONOUNS, load_lexicon

    lex = load_lexicon()
    occ = {g: [o for o, s, _ in lex.occupations if s == g] for g in GENDERS}
    terms = {g: [*lex.names_of(g), *dict.fromkeys(PRONOUNS[g].values())] for g in GENDERS}

    def test(words_of, category):
        return {
            "targ1": {"category": "female-stereotyped occupations", "examples": words_of(occ["female"], True)},
            "targ2": {"category": "male-stereotyped occupations", "examples": words_of(occ["male"], True)},
            "attr1": {"category": f"female {category}", "examples": words_of(terms["female"], False)},
            "attr2": {"category": f"male {category}", "examples": words_of(terms["male"], False)},
        }

    def words(ws, _):
        return list(ws)

    def sentences(ws, is_occupation):
        article = (lambda w: f"an {w}" if w[0] in "aeiou" else f"a {w}") if is_occupation else (lambda w: w)
        return [t.format(article(w))[:1].upper() + t.format(article(w))[1:] for w in ws for t in SEAT_TEMPLATES]

    return {
        "weat_occupation_gender": test(words, "names and pronouns"),
        "seat_occupation_gender": test(sentences, "names and pronouns"),
    }


def write_builtin_tests(folder: Path = FAIRNESS_RESOURCES) -> list[Path]:
    from ecoeval.io import write_text

    return [write_text(json.dumps(t, indent=1) + "\n", folder / f"{name}.json") for name, t in builtin_tests().items()]


def embed(model, tokenizer, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Mean of the last hidden states over non-special, non-padding tokens (float64 rows)."""
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, return_tensors="pt",
                            return_special_tokens_mask=True)
            keep = (enc.pop("special_tokens_mask") == 0) & (enc["attention_mask"] == 1)
            hidden = model(**enc, output_hidden_states=True).hidden_states[-1]
            w = keep.unsqueeze(-1).to(hidden.dtype)
            out.append((hidden * w).sum(1) / w.sum(1).clamp(min=1))
    return torch.cat(out).double().numpy()


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.clip(np.linalg.norm(v, axis=1, keepdims=True), 1e-12, None)


def effect_size_and_p(X, Y, A, B, n_permutations: int, seed: int) -> tuple[float, float, np.ndarray]:
    """WEAT effect size, permutation p-value and the association s(w) of every target."""
    X, Y, A, B = (_unit(np.asarray(m, dtype=np.float64)) for m in (X, Y, A, B))
    targets = np.vstack([X, Y])
    s = (targets @ A.T).mean(1) - (targets @ B.T).mean(1)
    nx = len(X)
    std = s.std(ddof=1)
    effect = float((s[:nx].mean() - s[nx:].mean()) / std) if std > 0 else float("nan")
    total = s.sum()
    observed = 2 * s[:nx].sum() - total
    n_total = len(s)
    if math.comb(n_total, nx) <= n_permutations:
        stats = np.array([2 * s[list(c)].sum() - total for c in itertools.combinations(range(n_total), nx)])
        p = float((stats >= observed - 1e-12).mean())
    else:
        rng = np.random.default_rng(seed)
        idx = np.argsort(rng.random((n_permutations, n_total)), axis=1)[:, :nx]
        stats = 2 * s[idx].sum(1) - total
        p = float(((stats >= observed - 1e-12).sum() + 1) / (n_permutations + 1))
    return effect, p, s


def weat_rows(model, tokenizer, tests: dict[str, dict], n_permutations: int, n_boot: int, confidence: float, seed: int,
              batch_size: int = 64) -> list[dict]:
    """One `weat_effect_size` row per test (subset = test name) with a bootstrap interval over targets."""
    from ecoeval.fairness.stats import bootstrap_indices, percentile_interval, sub_seed

    def effect_of(sx, sy):
        sd = np.concatenate([sx, sy]).std(ddof=1)
        return (sx.mean() - sy.mean()) / sd if sd > 0 else np.nan

    rows = []
    for name, test in tests.items():
        X, Y, A, B = (embed(model, tokenizer, test[k]["examples"], batch_size) for k in SETS)
        effect, p, s = effect_size_and_p(X, Y, A, B, n_permutations, sub_seed(seed, "weat", name))
        sx, sy = s[:len(X)], s[len(X):]
        # interval over the target examples (X and Y resampled separately, attribute sets fixed)
        ix = bootstrap_indices(len(sx), n_boot, sub_seed(seed, "weat-boot-x", name))
        iy = bootstrap_indices(len(sy), n_boot, sub_seed(seed, "weat-boot-y", name))
        lo, hi = percentile_interval(np.array([effect_of(sx[a], sy[b]) for a, b in zip(ix, iy)]), confidence)
        rows.append({"metric": "weat_effect_size", "subset": name, "value": effect, "ci_low": lo, "ci_high": hi,
                     "n": int(len(s)), "p_value": p})
    return rows


if __name__ == "__main__":  # regenerate resources/fairness/ from the built-in word lists
    for path in write_builtin_tests():
        print(path)
