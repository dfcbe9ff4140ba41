"""The hybrid teacher: BM25 and a bi-encoder fused by per-query z-scores.

The demo trains on it, label-free adaptation uses it as a teacher, and docs/teachers.md
measures it: on SciFact it is stronger than either of its parts.
"""
from __future__ import annotations

from irdistill.data.collection import Collection
from irdistill.data.trec import Run
from irdistill.evaluation.fusion import fuse
from irdistill.retrieval.dense import dense_scores

#: the bundled all-MiniLM-L6-v2, used as a bi-encoder
BI_ENCODER = "minilm"


def hybrid_teacher(collection: Collection, candidates: Run, bi_encoder: str = BI_ENCODER,
                   show_progress: bool = True) -> tuple[Run, Run]:
    """``(bi-encoder scores, hybrid)`` of a candidate run: the bi-encoder's dot products of each
    candidate, and the sum of the per-query z-scores of the candidates' first-stage scores
    and the bi-encoder's."""
    cosine = dense_scores(collection, bi_encoder, candidates, show_progress=show_progress)
    return cosine, fuse([candidates, cosine], method="wsum", norm="zscore")
