"""labscale.stats: bootstrap CI coverage, paired tests, effect size and the non-inferiority verdict."""

from __future__ import annotations

import numpy as np
import pytest

from labscale.stats import (Interval, bootstrap_ci, bootstrap_means, cohens_dz, non_inferiority, paired_compare,
                            sign_flip_pvalue)

SIMULATIONS = 400


@pytest.mark.parametrize(("name", "draw", "true_mean"), [
    ("rouge-like beta(2,5), n=40", lambda rng: rng.beta(2, 5, size=40), 2 / 7),
    ("accuracy-like bernoulli(0.7), n=80", lambda rng: (rng.random(80) < 0.7).astype(float), 0.7),
])
def test_bootstrap_ci_covers_the_true_mean_at_the_nominal_rate(name: str, draw, true_mean: float) -> None:
    rng = np.random.default_rng(12345)
    covered = sum(bootstrap_ci(draw(rng), samples=1000, seed=i).contains(true_mean) for i in range(SIMULATIONS))
    assert 0.91 <= covered / SIMULATIONS <= 0.99, f"{name}: coverage {covered / SIMULATIONS:.3f}"


def test_paired_difference_ci_covers_the_true_difference_and_the_test_holds_its_level() -> None:
    rng = np.random.default_rng(7)
    covered = rejected = 0
    for i in range(SIMULATIONS):
        difficulty = rng.beta(2, 3, size=50)  # shared per item: pairing must cancel it
        a = np.clip(difficulty + rng.normal(0.03, 0.05, size=50), 0, 1)
        b = np.clip(difficulty + rng.normal(0.03, 0.05, size=50), 0, 1)
        result = paired_compare(a + 0.05, b, samples=1000, seed=i)
        covered += result.diff.contains(0.05)
        rejected += sign_flip_pvalue(a - b, resamples=500, seed=i) < 0.05  # null: no difference
    assert 0.91 <= covered / SIMULATIONS <= 0.99
    assert 0.01 <= rejected / SIMULATIONS <= 0.09


def test_metrics_of_a_cell_share_their_resamples_and_a_seed_fixes_them() -> None:
    x = np.random.default_rng(0).random(30)
    cis = bootstrap_means({"a": x, "b": x + 1.0, "c": x}, samples=500, seed=3)
    assert cis["a"] == cis["c"]
    assert cis["b"].lo == pytest.approx(cis["a"].lo + 1.0) and cis["b"].hi == pytest.approx(cis["a"].hi + 1.0)
    assert bootstrap_ci(x, samples=500, seed=3) == cis["a"] != bootstrap_ci(x, samples=500, seed=4)
    constant = bootstrap_ci([0.25] * 10)
    assert constant == Interval(10, 0.25, 0.25, 0.25)
    with pytest.raises(ValueError):
        bootstrap_ci([])


def test_sign_flip_pvalue_is_exact_for_few_items_and_one_when_nothing_differs() -> None:
    assert sign_flip_pvalue(np.array([0.1, 0.2, 0.3, 0.4, 0.5])) == pytest.approx(2 / 32)  # 2^5 sign patterns
    assert sign_flip_pvalue(np.zeros(20)) == 1.0


def test_cohens_dz() -> None:
    assert cohens_dz(np.array([1.0, 2.0, 3.0])) == pytest.approx(2.0)  # mean 2, sd 1
    assert cohens_dz(np.array([0.5, 0.5])) is None and cohens_dz(np.array([1.0])) is None


@pytest.mark.parametrize(("lo", "hi", "verdict"), [
    (-0.019, 0.05, "yes"), (0.01, 0.03, "yes"),
    (-0.10, -0.021, "no"),
    (-0.05, 0.01, "inconclusive"), (-0.02, 0.0, "inconclusive"),
])
def test_non_inferiority_verdict_from_the_interval(lo: float, hi: float, verdict: str) -> None:
    assert non_inferiority(Interval(100, (lo + hi) / 2, lo, hi), margin=0.02) == verdict


def test_non_inferiority_verdict_on_constructed_paired_data() -> None:
    rng = np.random.default_rng(1)
    reference = rng.beta(3, 4, size=200)
    noise = rng.normal(0, 0.01, size=200)

    def verdict(a: np.ndarray) -> str:
        return non_inferiority(paired_compare(a, reference, samples=1000).diff, margin=0.02)

    assert verdict(reference + noise) == "yes"                       # equal up to noise
    assert verdict(reference - 0.10 + noise) == "no"                 # clearly worse than the margin allows
    assert verdict(reference - 0.02 + rng.normal(0, 0.2, 200)) == "inconclusive"  # on the margin, noisy
