"""Significance tests for comparing two methods.

Every result says what was paired (the *unit*: e.g. seeds, or users of the fixed test set), which test
was used, and the alternative hypothesis, so that no p-value is printed without the question it
answers: a paired t-test and the Wilcoxon signed-rank test across seeds (the same seeds for both
methods), and the same two tests across the users of the fixed test set, from the saved per-user
metrics. Each comes with means, the 95% confidence interval of the mean paired difference, and an
effect size; :func:`holm` corrects a family of comparisons. A study that must reproduce a published
test names its own unit through :func:`paired_t`.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

ALTERNATIVES = ("two-sided", "greater", "less")


@dataclass(frozen=True)
class Comparison:
    """One paired test of ``a`` against ``b`` (differences are ``a - b``)."""

    test: str
    unit: str
    a: str
    b: str
    alternative: str
    n: int
    mean_a: float
    mean_b: float
    mean_diff: float
    ci_low: float          # 95% t-interval of the mean paired difference
    ci_high: float
    statistic: float
    pvalue: float
    effect: float
    effect_name: str
    p_holm: float | None = None
    n_nonzero: int | None = None   # Wilcoxon: the pairs with a non-zero difference, the ones it ranks

    @property
    def hypothesis(self) -> str:
        """The alternative hypothesis in words."""
        diff = f"{self.a} - {self.b}"
        if self.test == "paired t-test":
            relation = {"two-sided": "!=", "greater": ">", "less": "<"}[self.alternative]
            return f"H1: mean({diff}) {relation} 0 ({self.alternative})"
        where = {"two-sided": "not symmetric about 0", "greater": "shifted above 0",
                 "less": "shifted below 0"}[self.alternative]
        return f"H1: {diff} is {where} ({self.alternative})"

    def as_row(self) -> dict:
        return {**dataclasses.asdict(self), "hypothesis": self.hypothesis}


def _scipy_stats():
    """``scipy.stats``, imported when a test runs: importing it costs every command about half a second."""
    from scipy import stats
    return stats


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {', '.join(ALTERNATIVES)}, got {alternative!r}")


def _paired(a, b) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a paired test needs two 1-d samples of the same length, got shapes {a.shape} and {b.shape}")
    if len(a) == 0:
        raise ValueError("a paired test needs at least one pair")
    return a, b


def mean_ci(values, level: float = 0.95) -> tuple[float, float]:
    """Two-sided t confidence interval of the mean (NaN for fewer than two values)."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    half = _scipy_stats().t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return float(values.mean() - half), float(values.mean() + half)


# Resampled indices drawn at once by :func:`bootstrap_ci` (16 MiB of int64, as much again for the values they
# gather): memory stays bounded whatever the number of test users (1,000 x 52,643 Gowalla users at once was 420 MB
# of indices and 420 MB of gathered values).
BOOTSTRAP_CHUNK_ELEMENTS = 2**21


def bootstrap_ci(values, level: float = 0.95, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (e.g. of one run's per-user metrics: the test users'
    sampling noise, not the seed's); seeded, so a report is the same every time. The resamples are drawn
    and averaged a block of rows at a time (:data:`BOOTSTRAP_CHUNK_ELEMENTS`): the generator yields the same
    indices in the same order as one ``(resamples, n)`` draw, so the interval is the same to the bit."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    rows = max(1, BOOTSTRAP_CHUNK_ELEMENTS // n)
    means = np.concatenate([values[rng.integers(0, n, (min(rows, resamples - start), n))].mean(axis=1)
                            for start in range(0, resamples, rows)])
    return float(np.quantile(means, 0.5 - level / 2)), float(np.quantile(means, 0.5 + level / 2))


def rank_biserial(diff) -> float:
    """Matched-pairs rank-biserial correlation ``(R+ - R-) / (R+ + R-)`` over the non-zero differences
    (the effect size that goes with the signed-rank test; in [-1, 1])."""
    diff = np.asarray(diff, dtype=np.float64)
    diff = diff[diff != 0]
    if len(diff) == 0:
        return 0.0
    ranks = _scipy_stats().rankdata(np.abs(diff))
    return float((ranks[diff > 0].sum() - ranks[diff < 0].sum()) / ranks.sum())


def _base(a: np.ndarray, b: np.ndarray, unit: str, labels: tuple[str, str], alternative: str) -> dict:
    diff = a - b
    low, high = mean_ci(diff)
    return dict(unit=unit, a=labels[0], b=labels[1], alternative=alternative, n=len(a), mean_a=float(a.mean()),
                mean_b=float(b.mean()), mean_diff=float(diff.mean()), ci_low=low, ci_high=high)


def paired_t(a, b, *, unit: str, labels: tuple[str, str] = ("A", "B"), alternative: str = "two-sided") -> Comparison:
    """``scipy.stats.ttest_rel(a, b)``; effect size Cohen's d_z = mean(diff) / sd(diff)."""
    _check_alternative(alternative)
    a, b = _paired(a, b)
    diff = a - b
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # n < 2 or zero variance: NaN, said in the output
        result = _scipy_stats().ttest_rel(a, b, alternative=alternative)
        sd = diff.std(ddof=1) if len(diff) > 1 else math.nan
        effect = diff.mean() / sd if sd > 0 else math.nan
    return Comparison(test="paired t-test", statistic=float(result.statistic), pvalue=float(result.pvalue),
                      effect=float(effect), effect_name="Cohen's d_z", **_base(a, b, unit, labels, alternative))


def wilcoxon(a, b, *, unit: str, labels: tuple[str, str] = ("A", "B"), alternative: str = "two-sided") -> Comparison:
    """``scipy.stats.wilcoxon(a - b)`` (zero differences dropped, scipy's default); effect size the
    matched-pairs rank-biserial correlation."""
    _check_alternative(alternative)
    a, b = _paired(a, b)
    diff = a - b
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all differences zero: p = 1
        result = _scipy_stats().wilcoxon(diff, alternative=alternative)
    return Comparison(test="Wilcoxon signed-rank", statistic=float(result.statistic), pvalue=float(result.pvalue),
                      effect=rank_biserial(diff), effect_name="rank-biserial r", n_nonzero=int(np.count_nonzero(diff)),
                      **_base(a, b, unit, labels, alternative))


def paired_tests(a, b, **kwargs) -> list[Comparison]:
    """The paired t-test and the Wilcoxon signed-rank test of the same pairs."""
    return [paired_t(a, b, **kwargs), wilcoxon(a, b, **kwargs)]


def across_seeds(a: Mapping[int, float], b: Mapping[int, float], *, labels: tuple[str, str] = ("A", "B"),
                 alternative: str = "two-sided") -> list[Comparison]:
    """Paired tests over seeds: ``a`` and ``b`` map seed -> metric and must have the same seeds."""
    if set(a) != set(b):
        raise ValueError(f"seed tests need the same seeds for both methods: {labels[0]} has "
                         f"{sorted(a)}, {labels[1]} has {sorted(b)}; run the missing seeds first")
    seeds = sorted(a)
    unit = f"seeds {', '.join(str(s) for s in seeds)}"
    return paired_tests([a[s] for s in seeds], [b[s] for s in seeds], unit=unit, labels=labels,
                        alternative=alternative)


def across_users(a: pd.Series, b: pd.Series, *, labels: tuple[str, str] = ("A", "B"),
                 alternative: str = "two-sided", unit: str = "users of the fixed test set") -> list[Comparison]:
    """Paired tests over users: ``a`` and ``b`` are per-user metrics indexed by user id (see
    :func:`lwbench.grid.runner.load_per_user`) on the same test set; they are aligned by user id."""
    if len(a.index) != len(b.index) or set(a.index) != set(b.index):
        raise ValueError(f"per-user tests need the same test users for both runs ({len(a)} vs {len(b)} users "
                         "differ); compare runs on the same dataset and the same fixed split")
    b = b.reindex(a.index)
    return paired_tests(a.to_numpy(), b.to_numpy(), unit=f"{len(a)} {unit}", labels=labels, alternative=alternative)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down; NaN entries are left out of the family and stay NaN)."""
    p = np.asarray(pvalues, dtype=np.float64)
    adjusted = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def with_holm(comparisons: list[Comparison]) -> list[Comparison]:
    """The comparisons with ``p_holm`` set, treating them as one family."""
    adjusted = holm([c.pvalue for c in comparisons])
    return [dataclasses.replace(c, p_holm=float(p)) for c, p in zip(comparisons, adjusted)]


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN std for a single value)."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else math.nan


def format_p(p: float | None) -> str:
    if p is None or math.isnan(p):
        return "n/a"
    return f"{p:.3g}"
