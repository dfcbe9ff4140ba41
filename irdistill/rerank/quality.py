"""How much a faster but inexact scorer (int8) changes the rankings, measured on a sample.

:func:`int8_agreement` re-ranks a sample of the candidates with the fast model and with an
fp32 reference, and reports per query the Kendall tau between the two rankings (scipy), the
overlap of their top-10, and, where the collection has judgements, nDCG@10 of each
(ir_measures). ``irdistill rerank --backend onnx-int8`` runs it before the whole run, logs it
and writes it into the run's provenance, so the speed of int8 is never taken without its cost.
"""
from __future__ import annotations

import logging
import statistics

from scipy.stats import kendalltau

from irdistill.data.collection import Collection
from irdistill.data.trec import Run, ranked
from irdistill.evaluation.metrics import evaluate
from irdistill.models.cross_encoder import CrossEncoder
from irdistill.rerank.scoring import rerank_run

log = logging.getLogger(__name__)


def sample_queries(run: Run, count: int) -> list[str]:
    """``count`` queries spread evenly over the sorted query ids (all when there are fewer)."""
    ids = sorted(q for q, docs in run.items() if len(docs) > 1)
    if count >= len(ids):
        return ids
    return [ids[round(i * (len(ids) - 1) / max(count - 1, 1))] for i in range(count)]


def int8_agreement(model: CrossEncoder, reference: CrossEncoder, collection: Collection,
                   candidates: Run, depth: int, queries: int = 20, batch_size: int = 64
                   ) -> dict | None:
    """Compare ``model``'s rankings of a sample of ``candidates`` with ``reference``'s (None
    when no query has two candidates to order)."""
    ids = sample_queries(candidates, queries)
    if not ids:
        log.warning("no query has two candidates: the int8 check has nothing to compare")
        return None
    sample = {q: dict(ranked(candidates[q], depth)) for q in ids}
    fast = rerank_run(model, collection, sample, depth=depth, batch_size=batch_size,
                      show_progress=False)
    exact = rerank_run(reference, collection, sample, depth=depth, batch_size=batch_size,
                       show_progress=False)
    taus, overlaps = [], []
    for q in ids:
        docs = sorted(sample[q])
        tau = kendalltau([fast[q][d] for d in docs], [exact[q][d] for d in docs]).statistic
        taus.append(1.0 if tau != tau else float(tau))  # NaN: constant scores on both sides
        top = {d for d, _ in ranked(fast[q], 10)}
        overlaps.append(len(top & {d for d, _ in ranked(exact[q], 10)}) / max(len(top), 1))
    out = {"queries": len(ids), "pairs": sum(len(d) for d in sample.values()),
           "kendall_tau": round(statistics.fmean(taus), 4),
           "min_kendall_tau": round(min(taus), 4),
           "top10_overlap": round(statistics.fmean(overlaps), 4)}
    judged = {q: collection.qrels[q] for q in ids if q in (collection.qrels or {})}
    if judged:
        for name, run in (("nDCG@10", fast), ("reference nDCG@10", exact)):
            value = evaluate({q: run[q] for q in judged}, judged, ["nDCG@10"]).aggregate
            out[name] = round(value["nDCG@10"], 4)
        out["judged_queries"] = len(judged)
    log.info("%s against fp32 on %d queries: Kendall tau %.3f (min %.3f), top-10 overlap %.3f%s",
             model.backend, out["queries"], out["kendall_tau"], out["min_kendall_tau"],
             out["top10_overlap"],
             f", nDCG@10 {out['nDCG@10']:.4f} vs {out['reference nDCG@10']:.4f}"
             if judged else "")
    return out
