"""Seeded bootstrap intervals and exact tests shared by every fairness metric."""

from __future__ import annotations

from typing import Callable

import numpy as np


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """An (n_boot, n) matrix of row indices drawn with replacement; same seed, same matrix."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(n_boot, n)) if n else np.zeros((n_boot, 0), dtype=np.int64)


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (NaN replicates ignored)."""
    samples = np.asarray(samples, dtype=float)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(samples, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def bootstrap(
    statistic: Callable[[np.ndarray], float], n: int, n_boot: int, confidence: float, seed: int
) -> tuple[float, float]:
    """Percentile interval of `statistic(indices)` over `n_boot` resamples of `n` rows."""
    if n == 0:
        return float("nan"), float("nan")
    idx = bootstrap_indices(n, n_boot, seed)
    return percentile_interval(np.array([statistic(row) for row in idx]), confidence)


def bootstrap_mean(values: np.ndarray, n_boot: int, confidence: float, seed: int) -> tuple[float, float]:
    """Percentile interval of the mean of `values` (vectorised)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return float("nan"), float("nan")
    idx = bootstrap_indices(values.size, n_boot, seed)
    return percentile_interval(values[idx].mean(axis=1), confidence)


def binomial_p(successes: int, trials: int, p: float = 0.5) -> float:
    """Two-sided exact binomial test (scipy) of `successes` out of `trials` against `p`."""
    from scipy.stats import binomtest

    if trials == 0:
        return float("nan")
    return float(binomtest(int(successes), int(trials), p, alternative="two-sided").pvalue)


def sub_seed(seed: int, *names: str) -> int:
    """A stable per-metric seed: the same metric always gets the same bootstrap draws."""
    import zlib

    return (int(seed) * 1_000_003 + zlib.crc32("/".join(names).encode())) % (2**32)
