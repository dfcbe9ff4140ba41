"""Hofstaetter's triple files with teacher scores, read as a stream.

The training files published with Margin-MSE (Hofstaetter et al. 2020, arXiv 2010.02666), e.g.
``bert_cat_ensemble_msmarcopassage_train_scores_ids.tsv``, hold tens of millions of lines::

    pos_score<TAB>neg_score<TAB>qid<TAB>pos_pid<TAB>neg_pid

Each line becomes a group ``[pos_pid, neg_pid]`` with targets ``[pos_score, neg_score]``, the
input of ``margin_mse``. The file is never read whole: :class:`TripleGroups` reads it line by
line on every pass, and each bad line raises :class:`IrdistillError` naming the file and line.
"""
from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from irdistill.data.groups import Group
from irdistill.errors import IrdistillError
from irdistill.io import check_input_file, iter_lines

log = logging.getLogger(__name__)
FORMAT = "pos_score<TAB>neg_score<TAB>qid<TAB>pos_pid<TAB>neg_pid"
CHECKED_LINES = 1000  # lines parsed (and their ids looked up) before training starts


@dataclass(frozen=True)
class Triple:
    pos_score: float
    neg_score: float
    query_id: str
    pos_id: str
    neg_id: str

    def group(self) -> Group:
        return Group(self.query_id, [self.pos_id, self.neg_id], [self.pos_score, self.neg_score])


def _score(text: str, column: str, path, number: int) -> float:
    try:
        value = float(text)
    except ValueError:
        raise IrdistillError(f"{column} '{text}' is not a number", path=path, line=number,
                             hint=f"each line is {FORMAT}") from None
    if not math.isfinite(value):
        raise IrdistillError(f"{column} '{text}' is not finite", path=path, line=number)
    return value


def parse_triple(line: str, path: str | Path, number: int) -> Triple:
    """One line of a triple file; a malformed line raises an error naming file and line."""
    parts = line.split("\t")
    if len(parts) != 5:
        raise IrdistillError(f"expected 5 tab-separated columns, found {len(parts)}", path=path,
                             line=number, hint=f"each line is {FORMAT}")
    pos_score = _score(parts[0], "pos_score", path, number)
    neg_score = _score(parts[1], "neg_score", path, number)
    qid, pos_id, neg_id = (p.strip() for p in parts[2:])
    for name, value in (("qid", qid), ("pos_pid", pos_id), ("neg_pid", neg_id)):
        if not value:
            raise IrdistillError(f"empty {name}", path=path, line=number,
                                 hint=f"each line is {FORMAT}")
    return Triple(pos_score, neg_score, qid, pos_id, neg_id)


def iter_triples(path: str | Path) -> Iterator[Triple]:
    """Stream the triples of ``path`` (blank lines are skipped)."""
    for number, line in iter_lines(path, "triple file"):
        if line.strip():
            yield parse_triple(line, path, number)


class TripleGroups:
    """A re-iterable stream of groups from a triple file, for an ``IterableDataset``.

    Every iteration reads the file anew from the start. ``max_queries`` keeps only the triples
    of the first ``max_queries`` distinct query ids met in the file (quick runs). Under a
    ``DataLoader`` with several workers, worker ``w`` of ``n`` yields lines ``w, w + n, ...``.
    """

    def __init__(self, path: str | Path, max_queries: int | None = None):
        self.path = check_input_file(path, "triple file")
        self.max_queries = max_queries
        # a wrong format fails now, not mid-training: the first CHECKED_LINES are parsed (the
        # whole file may hold tens of millions); a bad line later stops training naming it
        self.head = [t.group() for t in itertools.islice(iter_triples(self.path), CHECKED_LINES)]
        if not self.head:
            raise IrdistillError("triple file holds no triples", path=self.path)

    def __iter__(self) -> Iterator[Group]:
        import torch.utils.data  # torch only when the stream is read (teach import reads triples)

        info = torch.utils.data.get_worker_info()
        shard, shards = (info.id, info.num_workers) if info is not None else (0, 1)
        kept: set[str] = set()
        for index, triple in enumerate(iter_triples(self.path)):
            if self.max_queries is not None and triple.query_id not in kept:
                if len(kept) >= self.max_queries:
                    continue
                kept.add(triple.query_id)
            if index % shards == shard:
                yield triple.group()

    def __repr__(self) -> str:
        return f"TripleGroups({str(self.path)!r}, max_queries={self.max_queries})"
