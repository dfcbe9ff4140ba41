"""Paired significance tests of systems against a baseline, with multiple-testing correction.

Systems are compared query by query on one dataset and one measure: the paired t-test
(:func:`scipy.stats.ttest_rel`) and the Wilcoxon signed-rank test (:func:`scipy.stats.wilcoxon`,
zero differences dropped as scipy does by default), as PyTerrier's ``pt.Experiment`` does. The
p-values of a family of comparisons are then corrected with Holm's step-down method or with
Bonferroni.

Why Holm is written here rather than imported: scipy offers only Benjamini-Hochberg
(``scipy.stats.false_discovery_control``), and statsmodels' ``multipletests`` would bring
statsmodels, pandas and patsy (tens of megabytes) for a dozen lines. Both corrections are
tested against a worked example.

Several seeds of one system: a system's per-query value is the mean of its seeds' values for
that query, and the pairing is made on those means (see ``docs/experiments.md``).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from irdistill.errors import IrdistillError, unknown_name

TESTS = ("t", "wilcoxon")
TEST_NAMES = {"t": "paired t-test", "wilcoxon": "Wilcoxon signed-rank test"}
CORRECTIONS = ("holm", "bonferroni", "none")
FAMILIES = ("table", "dataset")
EPS = 1e-12


def paired_pvalue(a: Sequence[float], b: Sequence[float], test: str = "t") -> float:
    """Two-sided p-value of a paired test of ``a`` against ``b`` (one value per query each).

    Returns 1.0 when every difference is zero (no evidence of a difference), 0.0 for a t-test
    whose differences are all equal and non-zero (scipy would divide by a zero spread), and
    NaN with fewer than two pairs. Differences within 1e-12 count as equal.
    """
    if test not in TESTS:
        raise unknown_name("significance test", test, TESTS)
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.shape} vs {y.shape}")
    if len(x) < 2:
        return math.nan
    d = x - y
    if np.all(np.abs(d) <= EPS):  # float noise of averaged values is no difference
        return 1.0

    if test == "t":
        if np.ptp(d) <= EPS:
            return 0.0
        return float(stats.ttest_rel(x, y).pvalue)
    return float(stats.wilcoxon(x, y).pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979), in the order given. NaNs are left out
    of the family and stay NaN.

    The i-th smallest of m p-values becomes ``max_{j <= i} min(1, (m - j + 1) p_(j))``.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    running = 0.0
    for rank, index in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[index]))
        out[index] = running
    return out.tolist()


def bonferroni(pvalues: Sequence[float]) -> list[float]:
    """Bonferroni-adjusted p-values: ``min(1, m p)`` with m the number of non-NaN p-values."""
    p = np.asarray(pvalues, dtype=float)
    m = int((~np.isnan(p)).sum())
    return np.minimum(1.0, p * m).tolist()


def adjust(pvalues: Sequence[float], correction: str = "holm") -> list[float]:
    if correction == "holm":
        return holm(pvalues)
    if correction == "bonferroni":
        return bonferroni(pvalues)
    if correction == "none":
        return [float(p) for p in pvalues]
    raise unknown_name("correction", correction, CORRECTIONS)


@dataclass
class PairedComparison:
    """One system against the baseline on one dataset and one measure."""

    system: str
    baseline: str
    dataset: str
    measure: str
    mean: float  # the system's mean over the paired queries
    baseline_mean: float
    deltas: dict[str, float]  # query id -> system - baseline
    pvalues: dict[str, float] = field(default_factory=dict)  # test -> raw p-value
    adjusted: dict[str, float] = field(default_factory=dict)  # test -> corrected p-value

    @property
    def delta(self) -> float:
        return self.mean - self.baseline_mean

    @property
    def queries(self) -> int:
        return len(self.deltas)

    @property
    def wins(self) -> int:
        return sum(1 for d in self.deltas.values() if d > 0)

    @property
    def losses(self) -> int:
        return sum(1 for d in self.deltas.values() if d < 0)

    @property
    def ties(self) -> int:
        return sum(1 for d in self.deltas.values() if d == 0)

    def significant(self, test: str = "t", alpha: float = 0.05) -> int:
        """+1 for a significant win, -1 for a significant loss, 0 otherwise (corrected p)."""
        p = self.adjusted.get(test, math.nan)
        if math.isnan(p) or p >= alpha or self.delta == 0:
            return 0
        return 1 if self.delta > 0 else -1


def compare_to_baseline(per_query: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]],
                        baseline: str, *, tests: Sequence[str] = TESTS,
                        correction: str = "holm", family: str = "table"
                        ) -> list[PairedComparison]:
    """Paired comparisons of every system with ``baseline``.

    ``per_query[system][dataset][measure][query_id]`` holds one value per query (already
    averaged over seeds). Only queries that both systems have are paired. The correction runs
    over a family of comparisons: with ``family="table"`` all systems x datasets of one
    measure and test (the conservative choice: one table, one family); with
    ``family="dataset"`` the systems of each dataset separately (as ``pt.Experiment`` does for
    its single dataset).
    """
    if baseline not in per_query:
        raise unknown_name("baseline system", baseline, per_query)
    if family not in FAMILIES:
        raise unknown_name("correction family", family, FAMILIES)
    for test in tests:
        if test not in TESTS:
            raise unknown_name("significance test", test, TESTS)
    if correction not in CORRECTIONS:
        raise unknown_name("correction", correction, CORRECTIONS)
    base = per_query[baseline]
    out: list[PairedComparison] = []
    for system, datasets in per_query.items():
        if system == baseline:
            continue
        for dataset, measures in datasets.items():
            for measure, values in measures.items():
                ref = base.get(dataset, {}).get(measure)
                if ref is None:
                    continue
                qids = sorted(set(values) & set(ref))
                if not qids:
                    raise IrdistillError(f"'{system}' and '{baseline}' share no query on "
                                         f"{dataset}", hint="were they evaluated on the same "
                                                            "queries?")
                a = [values[q] for q in qids]
                b = [ref[q] for q in qids]
                cmp = PairedComparison(system, baseline, dataset, measure,
                                       float(np.mean(a)), float(np.mean(b)),
                                       {q: x - y for q, x, y in zip(qids, a, b)})
                cmp.pvalues = {t: paired_pvalue(a, b, t) for t in tests}
                out.append(cmp)
    for test in tests:
        groups: dict[tuple, list[PairedComparison]] = {}
        for cmp in out:
            key = (cmp.measure,) if family == "table" else (cmp.measure, cmp.dataset)
            groups.setdefault(key, []).append(cmp)
        for members in groups.values():
            for cmp, p in zip(members, adjust([c.pvalues[test] for c in members], correction)):
                cmp.adjusted[test] = p
    return out
