"""A training group: one query, its documents and their targets, as every data mode builds it
(:mod:`irdistill.data.sampling`, :mod:`irdistill.data.triples`) and every loss reads it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Group:
    query_id: str
    doc_ids: list[str]
    targets: list[float]
