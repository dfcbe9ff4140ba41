"""TREC run and qrels files.

A run is ``{query_id: {doc_id: score}}``; qrels are ``{query_id: {doc_id: relevance}}`` with
graded integer relevance kept as it is. Both match what ir_measures and pytrec_eval take.

Run line:   ``qid Q0 docid rank score tag``  (whitespace separated, 6 columns)
Qrels line: ``qid iteration docid relevance`` (4 columns)
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path

from irdistill.errors import IrdistillError
from irdistill.io import atomic_write, iter_lines

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]


def ranked(doc_scores: Mapping[str, float], depth: int | None = None) -> list[tuple[str, float]]:
    """Documents of one query best first, ties broken as trec_eval does (doc id, descending)."""
    items = sorted(doc_scores.items(), key=lambda item: (item[1], item[0]), reverse=True)
    return items if depth is None else items[:depth]


def iter_run_lines(path: str | Path) -> Iterator[tuple[int, str, str, str, float]]:
    """(line number, qid, docid, rank text, score) of each line of a TREC run, streaming and
    checked: 6 columns, a finite numeric score, no document twice for a query."""
    seen: dict[str, set[str]] = {}
    for number, line in iter_lines(path, "run file"):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 6:
            raise IrdistillError(
                f"expected 6 columns 'qid Q0 docid rank score tag', found {len(parts)}",
                path=path, line=number, hint="a TREC run has one ranked document per line")
        qid, _, docid, rank_text, score_text, _ = parts
        try:
            score = float(score_text)
        except ValueError:
            raise IrdistillError(f"score '{score_text}' is not a number", path=path, line=number,
                                 hint="the fifth column must be a number") from None
        if not math.isfinite(score):
            raise IrdistillError(f"score '{score_text}' is not finite", path=path, line=number)
        docs = seen.setdefault(qid, set())
        if docid in docs:
            raise IrdistillError(f"document '{docid}' appears twice for query '{qid}'",
                                 path=path, line=number, hint="remove the duplicate line")
        docs.add(docid)
        yield number, qid, docid, rank_text, score


def read_run(path: str | Path, depth: int | None = None) -> Run:
    """Read a TREC run, checking every line. ``depth`` keeps each query's top documents."""
    run: Run = {}
    for _, qid, docid, _, score in iter_run_lines(path):
        run.setdefault(qid, {})[docid] = score
    if not run:
        raise IrdistillError("run file has no ranked documents", path=path)
    if depth is not None:
        run = {qid: dict(ranked(docs, depth)) for qid, docs in run.items()}
    return run


def write_run(path: str | Path, run: Mapping[str, Mapping[str, float]], tag: str = "irdistill",
              depth: int | None = None, digits: int = 6) -> None:
    """Write a TREC run atomically, each query's documents best first; scores with ``digits``
    significant digits (9 keep a float32 score exactly, e.g. for runs merged later)."""
    with atomic_write(path) as handle:
        for qid in sorted(run):
            for rank, (docid, score) in enumerate(ranked(run[qid], depth), start=1):
                handle.write(f"{qid} Q0 {docid} {rank} {score:.{digits}g} {tag}\n")


def read_qrels(path: str | Path) -> Qrels:
    """Read TREC qrels, keeping graded relevance."""
    qrels: Qrels = {}
    for number, line in iter_lines(path, "qrels file"):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 4:
            raise IrdistillError(
                f"expected 4 columns 'qid iteration docid relevance', found {len(parts)}",
                path=path, line=number)
        qid, _, docid, rel_text = parts
        try:
            rel = int(rel_text)
        except ValueError:
            raise IrdistillError(f"relevance '{rel_text}' is not an integer", path=path,
                                 line=number) from None
        docs = qrels.setdefault(qid, {})
        if docid in docs and docs[docid] != rel:
            raise IrdistillError(f"document '{docid}' is judged twice for query '{qid}' "
                                 f"with different labels", path=path, line=number)
        docs[docid] = rel
    if not qrels:
        raise IrdistillError("qrels file has no judgements", path=path)
    return qrels


def write_qrels(path: str | Path, qrels: Mapping[str, Mapping[str, int]]) -> None:
    with atomic_write(path) as handle:
        for qid in sorted(qrels):
            for docid, rel in sorted(qrels[qid].items()):
                handle.write(f"{qid} 0 {docid} {rel}\n")
