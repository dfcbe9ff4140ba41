"""Paired tests and multiple-testing corrections: known answers, and agreement with scipy."""
import math

import numpy as np
import pytest
from scipy import stats

from irdistill.errors import IrdistillError
from irdistill.evaluation.significance import (adjust, bonferroni, compare_to_baseline, holm,
                                               paired_pvalue)

# fixed per-query values of two systems (40 queries), reproducible
RNG = np.random.default_rng(7)
A = RNG.uniform(0, 1, 40)
B = np.clip(A - 0.1 + RNG.normal(0, 0.1, 40), 0, 1)


def test_t_test_known_answer():
    # differences 1..5: t = 3 / (sqrt(2.5) / sqrt(5)) = 4.2426, 4 degrees of freedom
    p = paired_pvalue([2, 3, 4, 5, 6], [1, 1, 1, 1, 1], "t")
    assert p == pytest.approx(0.0132356, abs=1e-6)


def test_wilcoxon_known_answer():
    # five positive differences, exact null distribution: P(W = 0 or 15) = 2 / 2^5
    assert paired_pvalue([2, 3, 4, 5, 6], [1, 1, 1, 1, 1], "wilcoxon") == pytest.approx(0.0625)


@pytest.mark.parametrize("test,scipy_fn", [("t", stats.ttest_rel), ("wilcoxon", stats.wilcoxon)])
def test_agrees_with_scipy_on_fixed_data(test, scipy_fn):
    assert paired_pvalue(A, B, test) == pytest.approx(scipy_fn(A, B).pvalue, rel=1e-12)
    # two-sided: swapping the systems gives the same p-value
    assert paired_pvalue(B, A, test) == pytest.approx(paired_pvalue(A, B, test), rel=1e-12)


def test_degenerate_cases():
    assert paired_pvalue([0.5, 0.2, 0.1], [0.5, 0.2, 0.1], "t") == 1.0
    assert paired_pvalue([0.5, 0.2, 0.1], [0.5, 0.2, 0.1], "wilcoxon") == 1.0
    assert paired_pvalue([0.6, 0.3, 0.2], [0.5, 0.2, 0.1], "t") == 0.0  # constant shift
    assert math.isnan(paired_pvalue([0.6], [0.5], "t"))
    with pytest.raises(ValueError):
        paired_pvalue([1, 2], [1, 2, 3])
    with pytest.raises(IrdistillError, match="did you mean 'wilcoxon'"):
        paired_pvalue([1, 2], [2, 1], "wilcoxn")


def test_holm_and_bonferroni_worked_example():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.06
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert bonferroni(p) == pytest.approx([0.04, 0.16, 0.12, 0.02])
    assert adjust(p, "none") == p
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    # Holm is never more conservative than Bonferroni
    assert all(h <= b for h, b in zip(holm(A / 10), bonferroni(A / 10)))


def test_corrections_leave_nan_out_of_the_family():
    p = [0.01, math.nan, 0.02]
    h = holm(p)
    assert h[0] == pytest.approx(0.02) and math.isnan(h[1]) and h[2] == pytest.approx(0.02)
    assert bonferroni(p)[2] == pytest.approx(0.04)


def _per_query(values):
    return {f"q{i}": float(v) for i, v in enumerate(values)}


def test_compare_to_baseline_pairs_corrects_and_marks():
    per_query = {
        "base": {"d1": {"m": _per_query(B)}, "d2": {"m": _per_query(B)}},
        "better": {"d1": {"m": _per_query(A)}, "d2": {"m": _per_query(A)}},
        "worse": {"d1": {"m": _per_query(B - 0.2)}, "d2": {"m": _per_query(B)}},
    }
    table = compare_to_baseline(per_query, "base", correction="holm", family="table")
    assert len(table) == 4  # 2 systems x 2 datasets
    by = {(c.system, c.dataset): c for c in table}
    better = by[("better", "d1")]
    assert better.pvalues["t"] == pytest.approx(stats.ttest_rel(A, B).pvalue)
    assert better.delta == pytest.approx(float(np.mean(A - B)))
    assert better.wins + better.ties + better.losses == 40
    assert better.significant("t") == 1
    assert by[("worse", "d1")].significant("t") == -1
    assert by[("worse", "d2")].significant("t") == 0  # identical to the baseline
    assert by[("worse", "d2")].pvalues["t"] == 1.0
    raw = [c.pvalues["t"] for c in table]
    assert [c.adjusted["t"] for c in table] == pytest.approx(holm(raw))
    # per dataset, each family has 2 members instead of 4
    per_ds = compare_to_baseline(per_query, "base", correction="bonferroni", family="dataset")
    for c in per_ds:
        assert c.adjusted["wilcoxon"] == pytest.approx(min(1.0, 2 * c.pvalues["wilcoxon"]))


def test_compare_pairs_only_shared_queries_and_checks_names():
    per_query = {"base": {"d": {"m": {"q1": 0.1, "q2": 0.2, "q3": 0.3}}},
                 "sys": {"d": {"m": {"q2": 0.5, "q3": 0.6, "q4": 0.9}}}}
    (cmp,) = compare_to_baseline(per_query, "base")
    assert set(cmp.deltas) == {"q2", "q3"} and cmp.deltas["q2"] == pytest.approx(0.3)
    with pytest.raises(IrdistillError, match="unknown baseline system 'bse'"):
        compare_to_baseline(per_query, "bse")
    with pytest.raises(IrdistillError, match="correction"):
        compare_to_baseline(per_query, "base", correction="sidak")
