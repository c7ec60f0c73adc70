"""Per-item statistics: bootstrap CIs of means, paired comparisons, a non-inferiority verdict.

Everything resamples *items*: a cell's metrics share one set of bootstrap resamples (paired across
metrics), and two cells compared on a task share them too (paired across cells), so per-item
difficulty cancels out of a difference. CIs are percentile bootstrap intervals; resampling uses a
fixed seed, so the same inputs give the same numbers. Corpus-level metrics (BLEU, macro-F1) are
not means of per-item values and get no CI here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as sps

Verdict = Literal["yes", "no", "inconclusive"]

DEFAULT_SAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95
_BLOCK = 256
"""Bootstrap resamples drawn at once (bounds memory at _BLOCK × n item indices)."""


@dataclass(frozen=True)
class Interval:
    """A mean over n items with its bootstrap confidence interval [lo, hi]."""

    n: int
    mean: float
    lo: float
    hi: float

    def contains(self, value: float) -> bool:
        return self.lo <= value <= self.hi


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of A and B on the same items: mean(A − B) with its CI, a p-value, d_z."""

    diff: Interval
    p_value: float
    d_z: float | None
    """Standardized mean difference mean(d) / sd(d); None when every difference is equal."""


def _index_blocks(n: int, samples: int, seed: int) -> Iterator[np.ndarray]:
    """Bootstrap resamples of item indices 0..n-1, in blocks of rows (the same for the same seed)."""
    rng = np.random.default_rng(seed)
    for start in range(0, samples, _BLOCK):
        yield rng.integers(0, n, size=(min(_BLOCK, samples - start), n))


def _interval(values: np.ndarray, boot_means: np.ndarray, confidence: float) -> Interval:
    alpha = 1.0 - confidence
    lo, hi = np.quantile(boot_means, [alpha / 2, 1 - alpha / 2])
    mean = float(values.mean())
    return Interval(int(values.size), mean, min(float(lo), mean), max(float(hi), mean))


def bootstrap_means(columns: Mapping[str, np.ndarray], samples: int = DEFAULT_SAMPLES, seed: int = 0,
                    confidence: float = DEFAULT_CONFIDENCE) -> dict[str, Interval]:
    """Mean and percentile-bootstrap CI of each column; all columns (same length) share the resamples."""
    arrays = {name: np.asarray(values, dtype=float) for name, values in columns.items()}
    sizes = {a.size for a in arrays.values()}
    if len(sizes) > 1:
        raise ValueError(f"columns differ in length: {sorted(sizes)}")
    n = sizes.pop() if sizes else 0
    if n == 0:
        raise ValueError("no items: a bootstrap needs at least one value")
    boots: dict[str, list[np.ndarray]] = {name: [] for name in arrays}
    for idx in _index_blocks(n, samples, seed):
        for name, values in arrays.items():
            boots[name].append(values[idx].mean(axis=1))
    return {name: _interval(arrays[name], np.concatenate(boots[name]), confidence) for name in arrays}


def bootstrap_ci(values: np.ndarray | list[float], samples: int = DEFAULT_SAMPLES, seed: int = 0,
                 confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """Mean and percentile-bootstrap CI of one sample of per-item values."""
    return bootstrap_means({"x": np.asarray(values, dtype=float)}, samples, seed, confidence)["x"]


def sign_flip_pvalue(diffs: np.ndarray, resamples: int = DEFAULT_SAMPLES, seed: int = 0) -> float:
    """Two-sided paired permutation test of mean(d) = 0: signs of the differences flipped at random
    (scipy.stats.permutation_test; exact when 2^n ≤ resamples)."""
    diffs = np.asarray(diffs, dtype=float)
    if not np.any(diffs):
        return 1.0
    result = sps.permutation_test((diffs,), lambda x, axis: np.mean(x, axis=axis), permutation_type="samples",
                                  vectorized=True, n_resamples=resamples, alternative="two-sided",
                                  rng=np.random.default_rng(seed))
    return float(result.pvalue)


def cohens_dz(diffs: np.ndarray) -> float | None:
    """Effect size of paired differences, mean / sample sd; None when the sd is 0 (or n < 2)."""
    diffs = np.asarray(diffs, dtype=float)
    if diffs.size < 2:
        return None
    sd = float(diffs.std(ddof=1))
    return float(diffs.mean()) / sd if sd > 0 and math.isfinite(sd) else None


def paired_compare(a: np.ndarray, b: np.ndarray, samples: int = DEFAULT_SAMPLES, seed: int = 0,
                   confidence: float = DEFAULT_CONFIDENCE) -> Comparison:
    """Compare A with B item by item (a[i] and b[i] are the same item): mean(A − B), CI, p, d_z."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in shape: {a.shape} vs {b.shape}")
    diffs = a - b
    return Comparison(bootstrap_ci(diffs, samples, seed, confidence), sign_flip_pvalue(diffs, samples, seed),
                      cohens_dz(diffs))


def non_inferiority(diff: Interval, margin: float) -> Verdict:
    """Is A competitive with B (A no worse than B by more than `margin`), from the CI of mean(A − B)?

    yes: the whole CI lies above −margin; no: the whole CI lies below −margin; else inconclusive.
    """
    if diff.lo > -margin:
        return "yes"
    if diff.hi < -margin:
        return "no"
    return "inconclusive"
