"""Fusion of runs: reciprocal rank fusion, weighted sums of normalised scores, interpolation.

:func:`fuse` combines any number of runs per query:

* ``rrf`` (Cormack, Clarke and Buettcher 2009, "Reciprocal Rank Fusion outperforms Condorcet
  and individual Rank Learning Methods", SIGIR): ``sum_i w_i / (k + rank_i(d))``, ``k = 60``,
  ranks from 1 in each run's order (by score, ties as trec_eval breaks them: document id
  descending, see :func:`irdistill.data.trec.ranked`; the rank column of a file is ignored).
* ``wsum`` / ``combsum`` (Fox and Shaw 1994, CombSUM; weighted as a linear combination, Vogt
  and Cottrell 1999): ``sum_i w_i * norm_i(d)``; weights default to 1 each, which is CombSUM.
* ``combmnz`` (Fox and Shaw 1994): the weighted sum times the number of runs that retrieved d.

Normalisation is per query over the documents each run retrieved (its top-``depth``):
``minmax`` (Lee 1997): ``(s - min) / (max - min)``; ``zscore`` (Montague and Aslam 2001, "zero
mean, unit variance"): ``(s - mean) / std`` with the population standard deviation; ``none``.
A query whose documents all have one score normalises to 0 (both, as ranx does).

Missing documents: a document that a run did not retrieve (for a query) gets nothing from that
run, i.e. 0 is added *after* normalisation, as ranx does. With ``minmax`` that is the value of
the run's worst retrieved document; with ``zscore`` it is the run's *mean*, so there a missing
document ranks above the run's below-average documents: prefer ``minmax`` (the default) or
``rrf`` when the runs retrieve different documents. A query missing from a run entirely is
fused from the runs that have it (:func:`fuse_files` names how many each run lacks).

Why not ranx (the issue asked to prefer it): ranx 0.3.21 computes the same values
(``scripts/check_fusion_ranx.py``: random runs with missing documents, within 1e-15 for rrf,
wsum with min-max and z-score, combsum and combmnz), but

* it refuses runs whose query sets differ (an ``AssertionError``), which fused first stages
  often are (a dense run without some query, a run cut to judged queries);
* it breaks score ties by the order of the input, not as trec_eval does, so rrf over a run
  with tied scores depends on line order, and disagrees with how ``evaluate`` ranks that run;
* on this machine (2 cores) ``import ranx`` took 4-6 s, and the first call of each method
  4-33 s more while numba compiled it (0.02-0.07 s afterwards, from numba's cache);
* it brings numba, llvmlite, seaborn, fastparquet, cbor2 and cramjam into every installation.

The formulas are a few lines each, pinned down by hand-computed values in
``tests/test_fusion.py``; the script above checks them against ranx again when either changes.

:func:`interpolate` is the two-run case that the demo uses: ``alpha * minmax(rerank) +
(1 - alpha) * minmax(first)`` over the re-ranked documents. Interpolating with the first stage
is a standard way to keep its lexical evidence (e.g. Wang, Zhuang and Zuccon 2021, "BERT-based
Dense Retrievers Require Interpolation with BM25", ICTIR). ``alpha`` must be chosen on queries
that are not the test queries: :func:`tune_alpha` does so on held-out queries.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from irdistill.data.trec import Qrels, Run, ranked, read_run, write_run
from irdistill.errors import IrdistillError, suggest
from irdistill.evaluation.metrics import evaluate
from irdistill.io import check_output_file
from irdistill.provenance import file_fingerprint, read_run_provenance, write_run_provenance

METHODS = ("rrf", "wsum", "combsum", "combmnz")
NORMS = ("minmax", "zscore", "none")
#: ranx's names for the same things
ALIASES = {"sum": "combsum", "mnz": "combmnz", "min-max": "minmax", "zmuv": "zscore"}
RRF_K = 60


def _minmax(scores: Mapping[str, float]) -> dict[str, float]:
    low, high = min(scores.values()), max(scores.values())
    span = high - low
    return {d: (s - low) / span if span > 0 else 0.0 for d, s in scores.items()}


def _zscore(scores: Mapping[str, float]) -> dict[str, float]:
    values = list(scores.values())
    mean = math.fsum(values) / len(values)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
    return {d: (s - mean) / std if std > 0 else 0.0 for d, s in scores.items()}


def normalise(scores: Mapping[str, float], norm: str) -> dict[str, float]:
    """One query's scores normalised: ``minmax``, ``zscore`` or ``none``."""
    norm = _name("normalisation", norm, NORMS)
    if not scores or norm == "none":
        return dict(scores)
    return _minmax(scores) if norm == "minmax" else _zscore(scores)


def _name(kind: str, value: str, choices: Sequence[str]) -> str:
    value = ALIASES.get(value, value)
    if value not in choices:
        raise IrdistillError(f"unknown fusion {kind} '{value}'", hint=suggest(str(value), choices))
    return value


def check_fusion(n_runs: int, method: str = "rrf", norm: str | None = None,
                 weights: Sequence[float] | None = None, k: float = RRF_K,
                 depth: int | None = None) -> tuple[str, str, list[float]]:
    """Check the settings of :func:`fuse` before any run is read; returns the method, the
    normalisation (``None``: ``none`` for rrf, ``minmax`` otherwise) and the weights."""
    method = _name("method", method, METHODS)
    if n_runs < 1:
        raise IrdistillError("fusion needs at least one run")
    if norm is None:
        norm = "none" if method == "rrf" else "minmax"
    norm = _name("normalisation", norm, NORMS)
    if method == "rrf" and norm != "none":
        raise IrdistillError(f"rrf fuses ranks, so normalisation '{norm}' would change nothing",
                             hint="leave the normalisation out (or 'none') with rrf")
    if weights is None:
        weights = [1.0] * n_runs
    weights = [float(w) for w in weights]
    if len(weights) != n_runs:
        raise IrdistillError(f"{len(weights)} weights for {n_runs} runs",
                             hint="give one weight per run, in the order of the runs")
    if any(not math.isfinite(w) or w < 0 for w in weights) or not any(weights):
        raise IrdistillError(f"weights {weights} must be finite, at least 0, and not all 0")
    if not (math.isfinite(k) and k >= 0):
        raise IrdistillError(f"rrf k={k} must be a finite number, at least 0 (the paper's is 60)")
    if depth is not None and depth < 1:
        raise IrdistillError(f"depth {depth} must be at least 1")
    return method, norm, weights


def fuse(runs: Sequence[Run], method: str = "rrf", norm: str | None = None,
         weights: Sequence[float] | None = None, k: float = RRF_K,
         depth: int | None = None) -> Run:
    """Fuse ``runs`` per query (see the module docstring for the formulas and conventions).

    ``method``: ``rrf`` (default), ``wsum`` = ``combsum`` (weighted sum of normalised scores),
    ``combmnz``. ``norm``: ``minmax`` (default of the score methods), ``zscore`` or ``none``; rrf
    takes none. ``weights``: one per run (default 1 each). ``k``: rrf's constant. ``depth``: fuse
    each run's top-``depth`` documents of each query (default: all). The result holds every
    query of any run and, for each, every document any run retrieved.

    >>> fuse([{"q": {"a": 2.0, "b": 1.0}}, {"q": {"b": 5.0}}], k=60)["q"]["b"] == 1/62 + 1/61
    True
    """
    method, norm, weights = check_fusion(len(runs), method, norm, weights, k, depth)
    fused: Run = {}
    for qid in sorted({q for run in runs for q in run}):
        total: dict[str, float] = {}
        hits: dict[str, int] = {}
        for run, weight in zip(runs, weights):
            if qid not in run:
                continue
            ranking = ranked(run[qid], depth)
            if method == "rrf":
                contrib = {d: 1.0 / (k + rank) for rank, (d, _) in enumerate(ranking, start=1)}
            else:
                contrib = normalise(dict(ranking), norm)
            for d, value in contrib.items():
                total[d] = total.get(d, 0.0) + weight * value
                hits[d] = hits.get(d, 0) + 1
        if method == "combmnz":
            total = {d: s * hits[d] for d, s in total.items()}
        fused[qid] = total
    return fused


@dataclass
class FusionResult:
    run: Run
    path: Path
    provenance: Path
    notes: list[str] = field(default_factory=list)


def fuse_files(paths: Sequence[str | Path], output: str | Path, method: str = "rrf",
               norm: str | None = None, weights: Sequence[float] | None = None,
               k: float = RRF_K, depth: int | None = None) -> FusionResult:
    """Read TREC runs, fuse them and write the fused run with its provenance beside it
    (``OUT.trec`` -> ``OUT.provenance.json``: the settings and every input's fingerprint).

    Every input and setting is checked before anything is written. This is ``irdistill fuse``.
    """
    output = check_output_file(output, "output run")
    if len(paths) < 2:
        raise IrdistillError(f"fusion needs at least two runs, got {len(paths)}",
                             hint="irdistill fuse RUN RUN [RUN ...] --output OUT.trec")
    method, norm, weights = check_fusion(len(paths), method, norm, weights, k, depth)
    runs = [read_run(p) for p in paths]
    fused = fuse(runs, method, norm, weights, k, depth)
    notes = [f"{p}: {missing} of the {len(fused)} queries are not in this run (fused from the "
             "other runs)" for p, missing in zip(paths, (len(set(fused) - set(r)) for r in runs))
             if missing]
    write_run(output, fused, tag=f"fuse-{method}", digits=10)  # rrf sums differ past 6 digits
    inputs = []
    for p, weight in zip(paths, weights):
        record = {"weight": weight, **file_fingerprint(p)}
        produced = read_run_provenance(p)
        if produced:  # what made each input, when irdistill did
            record["produced_by"] = {key: produced[key] for key in ("kind", "config_hash",
                                                                   "created") if key in produced}
        inputs.append(record)
    provenance = write_run_provenance(
        output, kind="fuse",
        config={"method": method, "norm": norm, "weights": weights,
                "k": k if method == "rrf" else None, "depth": depth,
                "missing_documents": "contribute 0 after normalisation"},
        inputs=inputs, data={"queries": len(fused),
                             "documents": sum(len(d) for d in fused.values())})
    return FusionResult(fused, output, provenance, notes)


def interpolate(first: Run, reranked: Run, alpha: float) -> Run:
    """Fuse per query over the documents of ``reranked`` (all must be in ``first``)."""
    if not 0.0 <= alpha <= 1.0:
        raise IrdistillError(f"interpolation weight {alpha} is outside [0, 1]")
    fused: Run = {}
    for qid, docs in reranked.items():
        if not docs:
            fused[qid] = {}
            continue
        base = first.get(qid, {})
        missing = [d for d in docs if d not in base]
        if missing:
            raise IrdistillError(f"document '{missing[0]}' of query '{qid}' is not in the "
                                 "first-stage run", hint="interpolate with the run that was "
                                                         "re-ranked")
        a, b = _minmax(docs), _minmax({d: base[d] for d in docs})
        fused[qid] = {d: alpha * a[d] + (1 - alpha) * b[d] for d in docs}
    return fused


def tune_alpha(first: Run, reranked: Run, qrels: Qrels, measure: str = "nDCG@10",
               grid: Sequence[float] = tuple(i / 10 for i in range(11))) -> tuple[float, float]:
    """The weight of the grid with the best ``measure`` on these (held-out) queries."""
    best = None
    for alpha in grid:
        value = evaluate(interpolate(first, reranked, alpha), qrels, [measure]).aggregate[measure]
        if best is None or value > best[1]:
            best = (alpha, value)
    return best
