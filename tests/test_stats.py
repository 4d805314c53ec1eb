"""Statistics: the paper's Table-4 p-values from the logged numbers (the C2F study's protocol), and
the sound protocols checked against scipy and against independent formulas on synthetic data."""
import math
import runpy

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from lwbench.reports import stats
from lwbench.studies.c2f_paper import protocol, reference

# docs/protocol.md §10.10 as printed (6 decimals): the stored full-precision logs must round to these.
PRINTED_13_3 = {
    ("gowalla", "coarse"): (".078770 .085647 .098436 .121331", ".067751 .097844 .140548 .223336"),
    ("gowalla", 2024): (".082907 .089734 .102093 .124682", ".071187 .101629 .143266 .225054"),
    ("yelp2020", 2025): (".017781 .022565 .030295 .043982", ".018904 .032213 .056083 .107226"),
    ("yelp2020", "coarse"): (".016661 .021364 .028731 .041736", ".017721 .030647 .053294 .101745"),
}
# docs/protocol.md §11: p-values computed from the full-precision logs.
COMPUTED_12 = {("gowalla", 2024): (0.000257948, 0.00778754), ("gowalla", 2025): (0.000150580, 0.00421218),
               ("gowalla", 2026): (0.000188249, 0.00428273), ("yelp2020", 2024): (0.00159099, 0.0254875),
               ("yelp2020", 2025): (0.00937659, 0.0658588), ("yelp2020", 2026): (0.00194967, 0.0215314)}


@pytest.mark.parametrize("key", list(PRINTED_13_3))
def test_stored_logs_round_to_the_printed_table(key):
    dataset, run = key
    for family, text in zip(("ndcg", "recall"), PRINTED_13_3[key]):
        printed = [float(v) for v in text.split()]
        assert np.allclose(np.round(reference.C2F_LOGS[dataset][run][family], 6), printed, atol=1e-12)


def test_table4_pvalues_from_the_logged_values():
    frame = protocol.paper_protocol_check()
    assert len(frame) == 6
    for _, row in frame.iterrows():
        expected_n, expected_r = COMPUTED_12[(row["dataset"], row["seed"])]
        assert row["p(ndcg)"] == pytest.approx(expected_n, rel=1e-5)
        assert row["p(recall)"] == pytest.approx(expected_r, rel=1e-5)
        assert row["ndcg matches"] and row["recall matches"]  # truncated to 5 decimals = Table 4
    gowalla = frame[(frame["dataset"] == "gowalla") & (frame["seed"] == 2024)].iloc[0]
    assert stats.format_p(gowalla["p(ndcg)"]) == "0.000258"
    assert stats.format_p(gowalla["p(recall)"]) == "0.00779"


def test_paper_protocol_is_the_textbook_paired_t_over_cutoffs():
    run = reference.C2F_LOGS["gowalla"][2024]["ndcg"]
    base = reference.C2F_LOGS["gowalla"]["coarse"]["ndcg"]
    diff = np.subtract(run, base)
    t = diff.mean() / (diff.std(ddof=1) / math.sqrt(4))
    result = protocol.paper_protocol(run, base)
    assert result.statistic == pytest.approx(t)
    assert result.pvalue == pytest.approx(2 * sps.t.sf(abs(t), 3))
    assert result.n == 4 and "cutoffs" in result.unit and "paper" in result.unit
    assert result.hypothesis == "H1: mean(C2F - LEGCF) != 0 (two-sided)"


def test_main_prints_the_table_and_succeeds(capsys):
    assert protocol.main() == 0
    out = capsys.readouterr().out
    assert "0.000258" in out and "0.00779" in out and "ttest_rel" in out


def test_the_study_prints_the_check_as_a_module(capsys):
    """``python -m lwbench.studies.c2f_paper``."""
    with pytest.raises(SystemExit) as exited:
        runpy.run_module("lwbench.studies.c2f_paper", run_name="__main__")
    assert exited.value.code == 0 and "0.00779" in capsys.readouterr().out


def synthetic_users(n=400, shift=0.01, seed=0):
    rng = np.random.default_rng(seed)
    users = rng.permutation(10_000)[:n]
    base = rng.uniform(0, 1, n)
    a = pd.Series(base + shift + rng.normal(0, 0.05, n), index=pd.Index(users, name="user"))
    b = pd.Series(base, index=pd.Index(users, name="user"))
    return a, b


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_per_user_tests_align_users_and_match_scipy(alternative):
    a, b = synthetic_users()
    shuffled = b.sample(frac=1.0, random_state=1)  # same users, other order: must be re-aligned
    t, w = stats.across_users(a, shuffled, labels=("X", "Y"), alternative=alternative)
    aligned = b.reindex(a.index).to_numpy()
    expected_t = sps.ttest_rel(a.to_numpy(), aligned, alternative=alternative)
    assert t.pvalue == pytest.approx(expected_t.pvalue) and t.statistic == pytest.approx(expected_t.statistic)
    low, high = sps.ttest_rel(a.to_numpy(), aligned).confidence_interval(0.95)
    assert (t.ci_low, t.ci_high) == (pytest.approx(low), pytest.approx(high))
    diff = a.to_numpy() - aligned
    assert t.effect == pytest.approx(diff.mean() / diff.std(ddof=1))
    assert w.pvalue == pytest.approx(sps.wilcoxon(diff, alternative=alternative).pvalue)
    assert t.n == w.n == len(a) and "users" in t.unit
    assert t.alternative == w.alternative == alternative
    assert {"two-sided": "!=", "greater": ">", "less": "<"}[alternative] in t.hypothesis
    assert "X - Y" in w.hypothesis


def test_per_user_tests_refuse_different_users():
    a, b = synthetic_users()
    with pytest.raises(ValueError, match="same test users"):
        stats.across_users(a, b.iloc[:-1])


def test_rank_biserial_matches_its_definition():
    rng = np.random.default_rng(3)
    diff = rng.normal(0.3, 1.0, 50)            # continuous: no ties, no zeros
    order = np.argsort(np.abs(diff))
    ranks = np.empty(50)
    ranks[order] = np.arange(1, 51)
    expected = (ranks[diff > 0].sum() - ranks[diff < 0].sum()) / (50 * 51 / 2)
    assert stats.rank_biserial(diff) == pytest.approx(expected)


def test_seed_tests_pair_by_seed_and_match_scipy():
    a = {2026: 0.31, 2024: 0.30, 2025: 0.35, 2027: 0.33}
    b = {2024: 0.28, 2025: 0.31, 2026: 0.30, 2027: 0.29}
    t, w = stats.across_seeds(a, b, labels=("C2F", "LEGCF"))
    seeds = sorted(a)
    expected = sps.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds])
    assert t.pvalue == pytest.approx(expected.pvalue)
    assert w.pvalue == pytest.approx(sps.wilcoxon([a[s] - b[s] for s in seeds]).pvalue)
    assert t.unit == "seeds 2024, 2025, 2026, 2027"
    mean, std = stats.mean_std([a[s] for s in seeds])
    assert t.mean_a == pytest.approx(mean) and std == pytest.approx(np.std([a[s] for s in seeds], ddof=1))
    with pytest.raises(ValueError, match=r"same seeds.*\[2024, 2025\]"):
        stats.across_seeds({2024: 1.0, 2025: 2.0}, {2024: 1.0, 2026: 2.0})


def holm_rejections(p, alpha):
    """Holm's step-down procedure as stated: reject the smallest p-values while p_(k) <= alpha / (m - k + 1)."""
    order = np.argsort(p)
    rejected = np.zeros(len(p), dtype=bool)
    for k, index in enumerate(order):
        if p[index] > alpha / (len(p) - k):
            break
        rejected[index] = True
    return rejected


def test_holm_adjusted_pvalues_reproduce_the_step_down_decisions():
    rng = np.random.default_rng(7)
    for _ in range(50):
        p = rng.uniform(0, 0.2, rng.integers(1, 12)) ** 2
        adjusted = stats.holm(p)
        assert np.all(adjusted >= p) and np.all(adjusted <= 1)
        for alpha in (0.001, 0.01, 0.05, 0.1):
            assert np.array_equal(adjusted <= alpha, holm_rejections(p, alpha))


def test_holm_skips_nan_and_is_set_on_comparisons():
    adjusted = stats.holm([0.01, math.nan, 0.04])
    assert math.isnan(adjusted[1]) and adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.04)
    a, b = synthetic_users(n=30)
    comparisons = stats.with_holm(stats.across_users(a, b))
    assert all(c.p_holm is not None and c.p_holm >= c.pvalue for c in comparisons)


def test_wilcoxon_reports_the_nonzero_pairs_it_ranks():
    a = np.array([0.3, 0.2, 0.25, 0.4, 0.1, 0.33])
    b = np.array([0.3, 0.1, 0.25, 0.2, 0.2, 0.30])   # two zero differences
    result = stats.wilcoxon(a, b, unit="toy")
    assert result.n == 6 and result.n_nonzero == 4
    assert result.pvalue == pytest.approx(sps.wilcoxon(a - b).pvalue)
    assert stats.paired_t(a, b, unit="toy").n_nonzero is None


@pytest.mark.parametrize("n_users", [2, 7, 1000, 5003])
def test_bootstrap_draws_in_bounded_blocks_and_gives_the_one_shot_interval(n_users, monkeypatch):
    """The per-user bootstrap draws its resamples a block at a time (memory bounded at any number of users)
    and gives, to the bit, the interval of one (resamples x users) draw with the same seed."""
    import tracemalloc
    values = np.random.default_rng(n_users).random(n_users)
    rng = np.random.default_rng(3)
    means = values[rng.integers(0, n_users, (200, n_users))].mean(axis=1)
    one_shot = (float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975)))
    monkeypatch.setattr(stats, "BOOTSTRAP_CHUNK_ELEMENTS", 10_000, raising=False)
    tracemalloc.start()
    try:
        got = stats.bootstrap_ci(values, resamples=200, seed=3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == one_shot
    # One block: at most max(n, 10,000) indices and as many values (8 bytes each), plus the 200 means.
    assert peak < 4 * 8 * max(n_users, 10_000) + 64_000, peak
