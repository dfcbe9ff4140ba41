"""Held-out queries evaluated during training: which queries, their candidates, their scoring.

The dev queries are named by one of (see :class:`irdistill.config.DataConfig`):

* ``data.dev_fraction``: a fraction of the training queries (those with a judged relevant
  document among the queries of the candidate source, after ``data.max_queries``), drawn by
  ``train.seed``, and removed from the training groups;
* ``data.dev_queries``: these query ids of the training collection (a list, or a file of ids one
  a line), removed from the training groups;
* ``data.dev_collection`` (+ ``data.dev_split``): the judged queries of another collection (or
  another split of the same one).

Their candidates are the top-``train.eval_depth`` of the same source as training: ``data.run``
(or BM25 over the collection when it is not set; the teacher's run in teacher modes) restricted
to the dev queries, for a dev collection BM25 over it, or ``data.dev_run`` when given. Every
evaluation re-ranks them with :func:`irdistill.rerank.scoring.rerank_run` (pairs sorted by
length into batches cut to a token budget), in the precision of training, and measures the run
with ir_measures (``train.eval_measure``). Under DDP the processes re-rank a share of the
queries each; the first process gathers the run, computes the measure once and broadcasts it, so
that every process takes the same decisions (best checkpoint, early stopping).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from irdistill.config import Config, dev_source
from irdistill.data.collection import Collection, load_collection
from irdistill.data.trec import Qrels, Run, drop_queries, read_run, select_queries
from irdistill.distributed import broadcast, gather, is_distributed, rank, world_size
from irdistill.errors import IrdistillError
from irdistill.evaluation.metrics import evaluate, parse_measures
from irdistill.io import iter_lines
from irdistill.models.cross_encoder import CrossEncoder
from irdistill.rerank.scoring import check_candidates, rerank_run
from irdistill.retrieval.bm25 import bm25_run
from irdistill.train.sources import group_source

log = logging.getLogger(__name__)


@dataclass
class DevSet:
    """The queries evaluated during training: their collection, candidates and judgements.
    (A sized object, so the Trainer accepts it as its ``eval_dataset``.)"""

    collection: Collection
    run: Run  # candidates of every dev query
    qrels: Qrels  # judgements of the dev queries only
    source: str  # how the queries were chosen, for logs and the model card

    def __len__(self) -> int:
        return len(self.run)

    def __getitem__(self, index: int) -> str:
        return sorted(self.run)[index]

    def describe(self) -> dict:
        return {"queries": len(self.run), "source": self.source,
                "collection": self.collection.name}


def _judged(qrels: Qrels) -> set[str]:
    return {q for q, docs in qrels.items() if any(rel > 0 for rel in docs.values())}


def _qrels_for_dev(collection: Collection) -> Qrels:
    if not collection.qrels:
        raise IrdistillError(f"evaluation during training needs relevance judgements, and "
                             f"collection '{collection.name}' has none",
                             hint="use a collection with qrels, or data.dev_collection")
    return collection.qrels


def read_query_ids(value: list[str] | str) -> list[str]:
    """``data.dev_queries``: a list of ids, or a file of ids (one a line, blank lines skipped)."""
    if isinstance(value, list):
        return list(dict.fromkeys(str(v) for v in value))

    ids = []
    for _, line in iter_lines(value, "data.dev_queries file"):
        if line.strip():
            ids.append(line.split()[0])
    if not ids:
        raise IrdistillError("the data.dev_queries file lists no query ids", path=value)
    return list(dict.fromkeys(ids))


def _missing_error(missing: list[str], what: str, hint: str) -> IrdistillError:
    shown = ", ".join(f"'{q}'" for q in missing[:5]) + (" ..." if len(missing) > 5 else "")
    return IrdistillError(f"{len(missing)} of data.dev_queries {what}: {shown}", hint=hint)


def hold_out(config: Config, collection: Collection, run: Run) -> tuple[Run, list[str]]:
    """The candidate run of training without the held-out dev queries, and those queries
    (``data.dev_fraction`` or ``data.dev_queries``; otherwise ``run`` as it is and ``[]``).

    With ``data.dev_fraction``, the fraction is of the training queries after
    ``data.max_queries``: the first N queries, of which a fraction is held out.
    """
    d = config.data
    source = dev_source(d)
    if source not in ("dev_fraction", "dev_queries"):
        return run, []
    qrels = _qrels_for_dev(collection)
    judged = _judged(qrels)
    if source == "dev_queries":
        ids = read_query_ids(d.dev_queries)
        missing = [q for q in ids if q not in collection.queries]
        if missing:
            raise _missing_error(missing, f"are not queries of collection '{collection.name}'",
                                 "list ids of the training collection's queries")
        missing = [q for q in ids if q not in judged]
        if missing:
            raise _missing_error(missing, "have no judged relevant document",
                                 "evaluate on judged queries only")
        if d.dev_run is None:
            missing = [q for q in ids if q not in run]
            if missing:
                raise _missing_error(missing, "have no candidates in the training run",
                                     "give their candidates with data.dev_run")
        held = set(ids)
        return drop_queries(run, held), sorted(held)
    if d.max_queries:  # the fraction is of the queries training would use
        run = select_queries(run, sorted(run)[: d.max_queries])
    pool = sorted(q for q in run if q in judged)
    if len(pool) < 2:
        raise IrdistillError(f"data.dev_fraction needs at least 2 training queries with a judged "
                             f"relevant document; there are {len(pool)}",
                             hint="use data.dev_collection instead")
    count = min(max(1, round(d.dev_fraction * len(pool))), len(pool) - 1)
    rng = np.random.default_rng([config.train.seed, 0xDE7])
    held = {pool[i] for i in rng.choice(len(pool), count, replace=False)}
    log.info("holding out %d of %d training queries for evaluation (data.dev_fraction=%g)",
             count, len(pool), d.dev_fraction)
    return drop_queries(run, held), sorted(held)


def _restrict(run: Run, ids: list[str]) -> Run:
    return {q: run[q] for q in ids if q in run}


def build_dev_set(config: Config, collection: Collection, run: Run, held: list[str],
                  given_run: bool = False) -> DevSet | None:
    """The :class:`DevSet` of ``config`` (None without dev queries), its candidates checked
    against its collection. ``run``: the candidate run of training *before* :func:`hold_out`;
    ``held``: the queries :func:`hold_out` returned; ``given_run``: ``run`` came from the caller
    (then it is the candidate source, whatever its depth)."""
    d, t = config.data, config.train
    source = dev_source(d)
    if source is None:
        return None
    depth = t.eval_depth
    if source == "dev_collection":
        dev_collection = load_collection(d.dev_collection, d.dev_split)
        qrels = _qrels_for_dev(dev_collection)
        ids = sorted(q for q in _judged(qrels) if q in dev_collection.queries)
        if d.dev_run:
            candidates = read_run(d.dev_run, depth=depth)
            left = [q for q in ids if q not in candidates]
            ids = [q for q in ids if q in candidates]
            if left:
                log.warning("%d judged queries of %s have no candidates in data.dev_run and are "
                            "not evaluated", len(left), dev_collection.name)
            candidates = _restrict(candidates, ids)
            what = f"{dev_collection.name}, candidates {d.dev_run}"
        else:
            candidates = bm25_run(dev_collection, k=depth, query_ids=ids)
            what = f"{dev_collection.name}, BM25 top-{depth}"
        if dev_collection.docs_name == collection.docs_name:
            shared = sorted(set(ids) & set(run))
            if shared:
                log.warning("%d dev queries of %s are also training queries (e.g. '%s')",
                            len(shared), dev_collection.name, shared[0])
    else:
        dev_collection, qrels, ids = collection, collection.qrels, held
        if d.dev_run:
            candidates = _restrict(read_run(d.dev_run, depth=depth), ids)
            missing = [q for q in ids if q not in candidates]
            if missing:
                raise _missing_error(missing, "have no candidates in data.dev_run",
                                     "give a dev run that ranks every dev query")
            what = f"candidates {d.dev_run}"
        elif given_run or depth <= d.depth:
            candidates = _restrict(run, ids)
            what = "candidates of training"
        else:  # deeper than the run of training: the same source, read deeper
            candidates = group_source(d).candidates(collection, depth, ids)
            what = "candidates of training"
        how = (f"{d.dev_fraction:g} of the training queries (seed {t.seed})"
               if source == "dev_fraction" else "data.dev_queries")
        what = f"{how}, held out; {what}"
    if not candidates:
        raise IrdistillError("no dev query has candidates to re-rank",
                             hint="check data.dev_* and data.dev_run")
    check_candidates(dev_collection, candidates, depth)
    dev = DevSet(dev_collection, candidates, {q: qrels[q] for q in candidates}, what)
    log.info("evaluating during training on %d queries (%s; top-%d, %s)", len(dev), what,
             depth, t.eval_measure)
    return dev


def scoring_precision(precision: str) -> str | None:
    """The inference precision of a training precision (fp16 needs a GPU, as in training)."""
    if precision == "bf16":
        return "bf16"
    if precision == "fp16" and torch.cuda.is_available():
        return "fp16"
    return None


class DevEvaluator:
    """Re-ranks a :class:`DevSet` with the model being trained and measures the run.

    ``evaluate(model, device)`` returns the value of ``measure`` in every process (under DDP:
    re-ranking shared, measured once in the first process, broadcast).
    """

    def __init__(self, dev: DevSet, measure: str, depth: int, precision: str, tokenizer,
                 max_query_length: int, max_doc_length: int, batch_size: int = 64,
                 truncation: str = "segments"):
        self.dev = dev
        self.measure = str(parse_measures([measure])[0])
        self.depth = depth
        self.precision = scoring_precision(precision)
        self.tokenizer = tokenizer
        self.max_query_length = max_query_length
        self.max_doc_length = max_doc_length
        self.truncation = truncation
        self.batch_size = batch_size
        self.pairs = sum(min(len(docs), depth) for docs in dev.run.values())

    @property
    def key(self) -> str:
        """The metric's name in the Trainer's metrics and log (``eval_nDCG@10``)."""
        return f"eval_{self.measure}"

    def rerank(self, model, device) -> Run:
        """This process's share of the re-ranked dev run (all of it for a single process)."""
        scorer = CrossEncoder(model, self.tokenizer, self.max_query_length, self.max_doc_length,
                              device=device, precision=self.precision,
                              truncation=self.truncation)
        shard = (rank(), world_size()) if is_distributed() else None
        # blocks small enough that every process gets a share of a small dev set
        block = max(1, min(8192, math.ceil(self.pairs / world_size())))
        return rerank_run(scorer, self.dev.collection, self.dev.run, depth=self.depth,
                          batch_size=self.batch_size, show_progress=False, block_pairs=block,
                          shard=shard)

    def measure_run(self, run: Run) -> float:
        return float(evaluate(run, self.dev.qrels, [self.measure]).aggregate[self.measure])

    def evaluate(self, model, device) -> float:
        parts = gather(self.rerank(model, device))
        value = None
        if parts is not None:  # the first process: the whole run, measured once
            run: Run = {}
            for part in parts:
                run.update(part)
            value = self.measure_run(run)
        return float(broadcast(value))
