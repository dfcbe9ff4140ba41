"""Interpolation of a re-ranker's scores with the first stage's.

``alpha * minmax(rerank) + (1 - alpha) * minmax(first)``, normalised per query over the
re-ranked documents. Interpolating with the first stage is a standard way to keep its
lexical evidence (e.g. Wang, Zhuang and Zuccon 2021, "BERT-based Dense Retrievers Require
Interpolation with BM25", ICTIR). ``alpha`` must be chosen on queries that are not the test
queries: :func:`tune_alpha` does so on held-out queries.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from irdistill.data.trec import Qrels, Run
from irdistill.errors import IrdistillError


def _minmax(scores: Mapping[str, float]) -> dict[str, float]:
    low, high = min(scores.values()), max(scores.values())
    span = high - low
    return {d: (s - low) / span if span > 0 else 0.0 for d, s in scores.items()}


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
    from irdistill.evaluation.metrics import evaluate

    best = None
    for alpha in grid:
        value = evaluate(interpolate(first, reranked, alpha), qrels, [measure]).aggregate[measure]
        if best is None or value > best[1]:
            best = (alpha, value)
    return best
