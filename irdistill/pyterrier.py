"""irdistill in PyTerrier pipelines (``pip install -e ".[pyterrier]"``; python-terrier 1.x, no
Java needed for these transformers).

* :class:`ReRanker`: a cross-encoder re-ranking a results frame (``qid, query, docno, text`` ->
  ``score``, ``rank``), as ``first_stage >> ReRanker("runs/train/model")``.
* :class:`TextLoader`: adds the ``text`` of each ``docno`` from an irdistill collection (any
  ir_datasets id, BEIR or plain folder), for first stages that return ids only.
* :class:`SpladeRetriever`: queries -> the top-``k`` of a SPLADE index built by
  ``irdistill splade index``.
* :func:`results_frame` / :func:`run_transformer`: an irdistill run (a dict or a TREC file) as
  a results frame, or as a transformer that returns it for the queries asked.

Scores are those of ``irdistill rerank`` on the same candidates (the same truncation and
precision), so ``pt.Experiment`` reports the figures of ``irdistill evaluate``.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pyterrier as pt

from irdistill.data.collection import Collection, load_collection
from irdistill.data.trec import Run, ranked, read_run
from irdistill.errors import IrdistillError
from irdistill.models.cross_encoder import CrossEncoder
from irdistill.models.splade import Splade
from irdistill.retrieval.sparse_index import SparseIndex, splade_search


def _check_columns(frame: pd.DataFrame, needed: tuple[str, ...], what: str) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise IrdistillError(f"{what} needs the columns {', '.join(needed)}; missing: "
                             f"{', '.join(missing)}",
                             hint="add the document texts with irdistill.pyterrier.TextLoader"
                             if missing == ["text"] else "give a PyTerrier results frame")


class ReRanker(pt.Transformer):
    """A cross-encoder (a model folder, hub name, ``minilm``, or a loaded
    :class:`irdistill.models.cross_encoder.CrossEncoder`) that scores each ``(query, text)``
    row of a results frame and ranks each query's rows by that score."""

    def __init__(self, model, *, batch_size: int = 64, precision: str | None = None,
                 device: str | None = None, text_field: str = "text", verbose: bool = False):
        self.model = model if isinstance(model, CrossEncoder) else CrossEncoder.from_pretrained(
            str(model), precision=precision, device=device)
        self.batch_size = batch_size
        self.text_field = text_field
        self.verbose = verbose

    def __repr__(self) -> str:
        return f"irdistill.ReRanker({self.model.base_model or 'model'})"

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        _check_columns(inp, ("qid", "query", "docno", self.text_field), "ReRanker")
        out = inp.copy()
        if len(out) == 0:
            out["score"] = pd.Series(dtype=float)
            return pt.model.add_ranks(out)
        pairs = list(zip(out["query"].astype(str), out[self.text_field].fillna("").astype(str)))
        scores = self.model.score(pairs, batch_size=self.batch_size, show_progress=self.verbose)
        bad = next((i for i, v in enumerate(scores) if not math.isfinite(v)), None)
        if bad is not None:  # as irdistill rerank: a NaN is never ranked silently
            row = out.iloc[bad]
            raise IrdistillError(f"the model scored query '{row['qid']}', document "
                                 f"'{row['docno']}' {scores[bad]}",
                                 hint="score in fp32 (precision=None), or check the model")
        out["score"] = scores
        return pt.model.add_ranks(out)


class TextLoader(pt.Transformer):
    """Adds the ``text`` of every ``docno`` from an irdistill collection."""

    def __init__(self, collection: str | Collection, split: str | None = None,
                 field: str = "text"):
        self.collection = collection if isinstance(collection, Collection) else \
            load_collection(collection, split)
        self.field = field

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        _check_columns(inp, ("docno",), "TextLoader")
        ids = inp["docno"].astype(str).tolist()
        texts = self.collection.docs.get_many(dict.fromkeys(ids))  # names any absent id
        out = inp.copy()
        out[self.field] = [texts[d] for d in ids]
        return out


class SpladeRetriever(pt.Transformer):
    """Queries (``qid, query``) -> the top-``k`` documents of a SPLADE index."""

    def __init__(self, model, index: str | Path, *, k: int = 1000, batch_size: int = 64,
                 precision: str | None = None):
        self.model = model if isinstance(model, Splade) else Splade.from_pretrained(
            str(model), precision=precision)
        self.index = SparseIndex.load(Path(index))
        self.k = k
        self.batch_size = batch_size

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        _check_columns(inp, ("qid", "query"), "SpladeRetriever")
        queries = dict(zip(inp["qid"].astype(str), inp["query"].astype(str)))
        run, _ = splade_search(self.model, self.index, queries, k=self.k,
                               batch_size=self.batch_size)
        return results_frame(run, queries)


def results_frame(run: Run | str | Path, queries: dict[str, str] | Collection | None = None,
                  collection: Collection | None = None, depth: int | None = None
                  ) -> pd.DataFrame:
    """An irdistill run (a dict or a TREC file) as a PyTerrier results frame: ``qid, docno,
    score, rank``, plus ``query`` (from ``queries``) and ``text`` (from ``collection``)."""
    if not isinstance(run, dict):
        run = read_run(run, depth=depth)
    texts = queries.queries if isinstance(queries, Collection) else queries
    rows = []
    for qid in sorted(run):
        for rank, (docno, score) in enumerate(ranked(run[qid], depth)):
            rows.append((qid, docno, float(score), rank))
    frame = pd.DataFrame(rows, columns=["qid", "docno", "score", "rank"])
    if texts is not None:
        absent = sorted(set(frame["qid"]) - set(texts))
        if absent:
            raise IrdistillError(f"{len(absent)} queries of the run have no text (e.g. "
                                 f"'{absent[0]}')", hint="give the run's own collection")
        frame.insert(1, "query", [texts[q] for q in frame["qid"]])
    if collection is not None:
        frame = TextLoader(collection).transform(frame)
    return frame


def run_transformer(run: Run | str | Path, queries: dict[str, str] | Collection | None = None,
                    collection: Collection | None = None, depth: int | None = None
                    ) -> pt.Transformer:
    """A transformer that returns the rows of ``run`` for the queries of its input."""
    return pt.Transformer.from_df(results_frame(run, queries, collection, depth),
                                  uniform=False)


def topics_frame(collection: Collection, qids=None) -> pd.DataFrame:
    """``qid, query`` of a collection's queries (or of ``qids``)."""
    chosen = sorted(collection.queries) if qids is None else list(qids)
    return pd.DataFrame({"qid": chosen, "query": [collection.queries[q] for q in chosen]})


def qrels_frame(collection: Collection, qids=None) -> pd.DataFrame:
    """``qid, docno, label`` of a collection's judgements (or of ``qids``)."""
    qrels = collection.require_qrels()
    chosen = sorted(qrels) if qids is None else list(qids)
    return pd.DataFrame([(q, d, int(r)) for q in chosen for d, r in qrels.get(q, {}).items()],
                        columns=["qid", "docno", "label"])
