"""Measures with ir_measures: aggregate and per-query values, graded qrels kept graded.

Queries are handled explicitly rather than silently:

* judged queries absent from the run score 0 (the system returned nothing for them), and
  are counted in ``missing``;
* run queries without judgements cannot be scored; they are left out and counted in
  ``unjudged``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import ir_measures

from irdistill.data.trec import Qrels, Run
from irdistill.errors import IrdistillError

log = logging.getLogger(__name__)

DEFAULT_MEASURES = ("nDCG@10", "RR@10")


def parse_measures(names) -> list:
    measures = []
    for name in names:
        try:
            measures.append(ir_measures.parse_measure(name))
        except (ValueError, NameError, SyntaxError, TypeError):
            raise IrdistillError(f"unknown measure '{name}'",
                                 hint="use ir_measures notation, e.g. nDCG@10 RR@10 AP R@100 "
                                      "AP(rel=2)") from None
    return measures


@dataclass
class Evaluation:
    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]
    missing: list[str] = field(default_factory=list)  # judged, absent from the run (scored 0)
    unjudged: list[str] = field(default_factory=list)  # in the run, without judgements

    def to_json(self) -> dict[str, Any]:
        return {"aggregate": self.aggregate, "per_query": self.per_query,
                "queries": {"evaluated": len(self.per_query), "missing_from_run": self.missing,
                            "without_qrels": self.unjudged}}


def evaluate(run: Run, qrels: Qrels, measures=DEFAULT_MEASURES,
             missing_as_zero: bool = True) -> Evaluation:
    """Evaluate ``run`` against ``qrels`` with ir_measures (pytrec_eval underneath)."""
    parsed = parse_measures(measures)
    names = [str(m) for m in parsed]
    judged = {q for q, docs in qrels.items() if docs}
    unjudged = sorted(set(run) - judged)
    missing = sorted(judged - set(run)) if missing_as_zero else []
    scored_run = {q: docs for q, docs in run.items() if q in judged}
    if not scored_run:
        raise IrdistillError("no query of the run has relevance judgements",
                             hint="the run and the qrels do not share query ids")
    per_query: dict[str, dict[str, float]] = {q: {} for q in sorted(scored_run)}
    for metric in ir_measures.iter_calc(parsed, {q: qrels[q] for q in scored_run}, scored_run):
        per_query[metric.query_id][str(metric.measure)] = float(metric.value)
    for q in missing:
        per_query[q] = {name: 0.0 for name in names}
    aggregate = {}
    for name in names:
        values = [pq[name] for pq in per_query.values() if name in pq]
        aggregate[name] = sum(values) / len(values) if values else 0.0
    if unjudged:
        log.warning("%d run queries have no judgements and are not evaluated", len(unjudged))
    if missing:
        log.warning("%d judged queries are absent from the run and score 0", len(missing))
    return Evaluation(aggregate, per_query, missing, unjudged)
