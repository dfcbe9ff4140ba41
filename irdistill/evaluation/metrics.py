"""Measures with ir_measures: aggregate and per-query values, graded qrels kept graded.

Queries are handled explicitly rather than silently; each case is counted, listed in the JSON
and printed by the CLI:

* judged queries absent from the run (``missing``) score 0 (the system returned nothing for
  them, as ``trec_eval -c``), or are left out of the mean with ``missing_as_zero=False``;
* run queries without judgements (``unjudged``) cannot be scored; they are left out, never
  averaged in as 0;
* judged queries with no relevant document (``no_relevant``: every label <= 0) are evaluated
  as trec_eval does (most measures give them 0) and counted, since they lower every mean.
"""
from __future__ import annotations

import difflib
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import ir_measures

from irdistill.data.trec import Qrels, Run
from irdistill.errors import IrdistillError

log = logging.getLogger(__name__)

DEFAULT_MEASURES = ("nDCG@10", "RR@10")
#: the usual spelling of a measure that ir_measures also knows under other cases (NDCG, MRR...)
COMMON_MEASURES = ("nDCG", "RR", "AP", "P", "R", "Success", "Judged", "ERR", "RBP", "Bpref",
                   "infAP", "NumRet", "NumRel", "NumRelRet", "Rprec", "SetP", "SetR")


def parse_measures(names) -> list:
    measures = []
    for name in names:
        try:
            measures.append(ir_measures.parse_measure(name))
        except (ValueError, NameError, SyntaxError, TypeError, AttributeError, KeyError):
            raise IrdistillError(f"unknown measure '{name}'", hint=_measure_hint(name)) from None
    return measures


def _measure_hint(name: str) -> str:
    base = re.split(r"[@(]", name, maxsplit=1)[0]
    rest = name[len(base):]
    known = ir_measures.measures.registry.keys()
    same = sorted((k for k in known if k.lower() == base.lower()),
                  key=lambda k: (k not in COMMON_MEASURES, k))
    close = difflib.get_close_matches(base, known, n=1, cutoff=0.6)
    match = same[0] if same else (close[0] if close else None)
    text = f"did you mean '{match}{rest}'? " if match and match != base else ""
    return text + "use ir_measures notation, e.g. nDCG@10 RR@10 AP R@100 AP(rel=2)"


@dataclass
class Evaluation:
    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]
    missing: list[str] = field(default_factory=list)  # judged, absent from the run
    unjudged: list[str] = field(default_factory=list)  # in the run, without judgements
    no_relevant: list[str] = field(default_factory=list)  # judged, no label > 0
    missing_as_zero: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"aggregate": self.aggregate, "per_query": self.per_query,
                "queries": {"evaluated": len(self.per_query), "missing_from_run": self.missing,
                            "missing_scored_as_zero": self.missing_as_zero,
                            "without_qrels": self.unjudged,
                            "without_relevant_documents": self.no_relevant}}

    def notes(self) -> list[str]:
        """One line per kind of query that is not a plain judged-and-ranked query."""
        lines = [f"{len(self.per_query)} queries evaluated"]
        if self.missing:
            how = "scored 0" if self.missing_as_zero else "left out of the mean; " \
                                                           "--missing-as-zero to score them 0"
            lines.append(f"{len(self.missing)} judged queries are missing from the run ({how})")
        if self.unjudged:
            lines.append(f"{len(self.unjudged)} run queries have no judgements (not evaluated)")
        if self.no_relevant:
            lines.append(f"{len(self.no_relevant)} judged queries have no relevant document "
                         "(most measures give them 0)")
        return lines


def evaluate(run: Run, qrels: Qrels, measures=DEFAULT_MEASURES,
             missing_as_zero: bool = True) -> Evaluation:
    """Evaluate ``run`` against ``qrels`` with ir_measures (pytrec_eval underneath)."""
    parsed = parse_measures(measures)
    names = [str(m) for m in parsed]
    judged = {q for q, docs in qrels.items() if docs}
    unjudged = sorted(set(run) - judged)
    missing = sorted(judged - set(run))
    no_relevant = sorted(q for q in judged if not any(r > 0 for r in qrels[q].values()))
    scored_run = {q: docs for q, docs in run.items() if q in judged}
    if not scored_run:
        raise IrdistillError("no query of the run has relevance judgements",
                             hint="the run and the qrels do not share query ids")
    per_query: dict[str, dict[str, float]] = {q: {} for q in sorted(scored_run)}
    for metric in ir_measures.iter_calc(parsed, {q: qrels[q] for q in scored_run}, scored_run):
        per_query[metric.query_id][str(metric.measure)] = float(metric.value)
    if missing_as_zero:
        for q in missing:
            per_query[q] = {name: 0.0 for name in names}
    aggregate = {}
    for name in names:
        values = [pq[name] for pq in per_query.values() if name in pq]
        aggregate[name] = sum(values) / len(values) if values else 0.0
    if unjudged:
        log.warning("%d run queries have no judgements and are not evaluated", len(unjudged))
    if missing:
        log.warning("%d judged queries are absent from the run and %s", len(missing),
                    "score 0" if missing_as_zero else "are left out")
    return Evaluation(aggregate, per_query, missing, unjudged,
                      [q for q in no_relevant if q in per_query], missing_as_zero)
