"""Re-rank a run with a cross-encoder: all pairs of all queries scored together, longest first.

Each query and each document is tokenised once; pairs from every query are sorted by length
into batches with dynamic padding, so little compute goes to padding.
"""
from __future__ import annotations

import logging

from irdistill.data.collection import Collection
from irdistill.data.trec import Run, ranked
from irdistill.models.cross_encoder import CrossEncoder

log = logging.getLogger(__name__)


def rerank_run(model: CrossEncoder, collection: Collection, run: Run, depth: int = 100,
               batch_size: int = 64, max_tokens: int | None = None,
               show_progress: bool = True) -> Run:
    """Scores of ``model`` for each query's top-``depth`` documents of ``run``."""
    candidates = {q: [d for d, _ in ranked(docs, depth)] for q, docs in run.items()}
    qids = sorted(candidates)
    queries = collection.query_texts(qids)
    doc_ids = sorted({d for ds in candidates.values() for d in ds})
    q_tokens = dict(zip(qids, model.encoder.encode_queries([queries[q] for q in qids])))
    d_tokens: dict[str, list[int]] = {}
    for start in range(0, len(doc_ids), 4096):
        chunk = doc_ids[start:start + 4096]
        texts = collection.docs.get_many(chunk)
        d_tokens.update(zip(chunk, model.encoder.encode_docs([texts[d] for d in chunk])))
    keys = [(q, d) for q in qids for d in candidates[q]]
    log.info("re-ranking %d pairs of %d queries", len(keys), len(qids))
    scores = model.score_ids([(q_tokens[q], d_tokens[d]) for q, d in keys],
                             batch_size=batch_size, max_tokens=max_tokens,
                             show_progress=show_progress)
    out: Run = {q: {} for q in qids}
    for (q, d), s in zip(keys, scores):
        out[q][d] = s
    return out
