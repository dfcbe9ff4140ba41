"""Published teacher targets turned into teacher runs: triple score files and TREC runs.

* Hofstaetter's triple files (``pos_score<TAB>neg_score<TAB>qid<TAB>pos_pid<TAB>neg_pid``, e.g.
  ``bert_cat_ensemble_msmarcopassage_train_scores_ids.tsv``) become a run of teacher scores: each
  (query, passage) pair once, with its score. A pair met on several lines with different scores
  gets their mean, and is counted. (Data mode ``triples`` trains on such a file directly, streamed,
  keeping its pairing of positive and negative; a run keeps the scores, not the pairing.)
* Rank-DistiLLM's run files (``__rankzephyr-colbert-10000-sampled-100__msmarco-passage-train-
  judged.run``) and any other TREC run: every line checked; the order is the score's (as
  trec_eval reads a run) or the rank column's (``order_by="rank"``, for files whose order is the
  LLM's and whose scores are not), disagreements between the two are counted; targets are the
  scores as they are, or ``depth - rank + 1`` (``targets="ranks"``), as ``teacher_ranks`` makes.

With a collection, every query and document id is checked against it.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from irdistill.data.collection import Collection
from irdistill.data.trec import Run, iter_run_lines, ranked, write_run
from irdistill.data.triples import iter_triples
from irdistill.errors import IrdistillError
from irdistill.provenance import write_run_provenance

log = logging.getLogger(__name__)

FORMATS = ("run", "triples")
TARGETS = ("scores", "ranks")
ORDERS = ("score", "rank")


@dataclass
class ImportReport:
    format: str
    lines: int = 0
    queries: int = 0
    pairs: int = 0
    conflicts: int = 0  # triples: pairs met with different scores (their mean is kept)
    order_disagreements: int = 0  # runs: queries whose rank column and scores disagree on order
    truncated: int = 0  # pairs beyond the depth, left out
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def import_triples(path: str | Path, max_queries: int | None = None) -> tuple[Run, ImportReport]:
    """A run of teacher scores from a triple file, read as a stream (``max_queries``: keep the
    first N distinct query ids met)."""
    sums: dict[str, dict[str, list[float]]] = {}
    report = ImportReport("triples")
    for triple in iter_triples(path):
        report.lines += 1
        docs = sums.get(triple.query_id)
        if docs is None:
            if max_queries is not None and len(sums) >= max_queries:
                continue
            docs = sums[triple.query_id] = {}
        for doc, score in ((triple.pos_id, triple.pos_score), (triple.neg_id, triple.neg_score)):
            entry = docs.get(doc)
            if entry is None:
                docs[doc] = [score, 1.0, score]
            else:
                if not math.isclose(entry[2], score, rel_tol=1e-6, abs_tol=1e-6):
                    report.conflicts += 1
                entry[0] += score
                entry[1] += 1
    if not sums:
        raise IrdistillError("triple file holds no triples", path=path)
    run = {q: {d: total / count for d, (total, count, _) in docs.items()}
           for q, docs in sums.items()}
    report.queries = len(run)
    report.pairs = sum(len(d) for d in run.values())
    if report.conflicts:
        report.notes.append(f"{report.conflicts} repeated pairs had a different score; their "
                            "mean is kept")
    return run, report


def read_ranked_run(path: str | Path, order_by: str = "score"
                    ) -> tuple[dict[str, list[tuple[str, int, float]]], ImportReport]:
    """Each query's (doc, rank, score) lines of a TREC run, best first as ``order_by`` says,
    every line checked."""
    if order_by not in ORDERS:
        raise IrdistillError(f"unknown order '{order_by}'", hint="choose score or rank")
    rows: dict[str, dict[str, tuple[int, float, int]]] = {}
    report = ImportReport("run")
    for number, qid, docid, rank_text, score in iter_run_lines(path):
        report.lines += 1
        try:
            rank = int(rank_text)
        except ValueError:
            raise IrdistillError(f"rank '{rank_text}' is not an integer", path=path,
                                 line=number, hint="the fourth column is the rank") from None
        docs = rows.setdefault(qid, {})
        docs[docid] = (rank, score, number)
    if not rows:
        raise IrdistillError("run file has no ranked documents", path=path)
    out: dict[str, list[tuple[str, int, float]]] = {}
    for qid, docs in rows.items():
        by_score = [d for d, _ in ranked({d: s for d, (_, s, _) in docs.items()})]
        by_rank = sorted(docs, key=lambda d: (docs[d][0], d))
        if order_by == "rank":
            seen: dict[int, str] = {}
            for d in by_rank:
                rank, _, number = docs[d]
                if rank in seen:
                    raise IrdistillError(f"rank {rank} is given twice for query '{qid}' "
                                         f"('{seen[rank]}' and '{d}')", path=path, line=number,
                                         hint="ordering by rank needs distinct ranks")
                seen[rank] = d
        if by_score != by_rank:
            report.order_disagreements += 1
        order = by_rank if order_by == "rank" else by_score
        out[qid] = [(d, docs[d][0], docs[d][1]) for d in order]
    if report.order_disagreements:
        report.notes.append(f"{report.order_disagreements} queries order their documents "
                            f"differently by rank column and by score; ordered by {order_by}")
    return out, report


def import_run(path: str | Path, *, targets: str = "scores", order_by: str = "score",
               depth: int | None = None) -> tuple[Run, ImportReport]:
    """A teacher run from a TREC run file (e.g. Rank-DistiLLM's RankZephyr rankings).

    ``targets="scores"`` keeps each score; ``targets="ranks"`` writes ``depth - rank + 1`` with
    rank the position in the chosen order (``depth``: the given one, else the longest list), so a
    run whose scores are not usable still gives the LLM's order. ``depth`` also keeps only each
    query's top-``depth``.
    """
    if targets not in TARGETS:
        raise IrdistillError(f"unknown targets '{targets}'", hint="choose scores or ranks")
    lists, report = read_ranked_run(path, order_by)
    if depth is not None and depth < 1:
        raise IrdistillError(f"depth must be positive, got {depth}")
    top = depth or max(len(v) for v in lists.values())
    run: Run = {}
    for qid, rows in lists.items():
        report.truncated += max(0, len(rows) - top)
        kept = rows[:top]
        if targets == "ranks":
            run[qid] = {d: float(top - i) for i, (d, _, _) in enumerate(kept)}
        else:
            if order_by == "rank" and [d for d, _ in ranked({d: s for d, _, s in kept})] != [
                    d for d, _, _ in kept]:
                raise IrdistillError(
                    f"query '{qid}': ordered by rank, but its scores give another order",
                    path=path, hint="use --targets ranks to keep the rank column's order")
            run[qid] = {d: s for d, _, s in kept}
    report.queries = len(run)
    report.pairs = sum(len(d) for d in run.values())
    return run, report


def check_against_collection(run: Run, collection: Collection, path: str | Path) -> None:
    """Every query and document id of ``run`` must be in ``collection``."""
    unknown = sorted(set(run) - set(collection.queries))
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise IrdistillError(f"{len(unknown)} query id(s) not in {collection.name}: {shown}",
                             path=path, hint="the file does not belong to this collection")
    docs = sorted({d for scores in run.values() for d in scores})
    for start in range(0, len(docs), 10_000):
        collection.docs.get_many(docs[start:start + 10_000])  # raises on unknown ids


def import_targets(path: str | Path, output: str | Path, *, format: str = "run",
                   targets: str = "scores", order_by: str = "score", depth: int | None = None,
                   max_queries: int | None = None, collection: Collection | None = None
                   ) -> tuple[Run, ImportReport]:
    """Import ``path`` as ``format`` and write the teacher run ``output`` with its provenance."""
    if format not in FORMATS:
        raise IrdistillError(f"unknown format '{format}'", hint="choose run or triples")
    if format == "triples":
        if targets != "scores" or order_by != "score":
            raise IrdistillError("a triple file holds scores: --targets and --order-by apply to "
                                 "runs only")
        run, report = import_triples(path, max_queries)
        if depth is not None:
            report.truncated = sum(max(0, len(d) - depth) for d in run.values())
            run = {q: dict(ranked(d, depth)) for q, d in run.items()}
            report.pairs = sum(len(d) for d in run.values())
    else:
        run, report = import_run(path, targets=targets, order_by=order_by, depth=depth)
        if max_queries is not None:
            run = {q: run[q] for q in sorted(run)[:max_queries]}
            report.queries, report.pairs = len(run), sum(len(d) for d in run.values())
    if collection is not None:
        check_against_collection(run, collection, path)
    write_run(output, run, tag="imported")
    write_run_provenance(output, kind="imported", source=str(path), format=format,
                         targets=targets, order_by=order_by, depth=depth,
                         max_queries=max_queries,
                         collection=collection.name if collection is not None else None,
                         report=report.to_dict())
    for note in report.notes:
        log.warning("%s: %s", path, note)
    return run, report
