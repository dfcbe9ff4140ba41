"""BM25 first stage with bm25s, its index cached on disk.

The cache key is the collection's name plus every setting that changes the index, so a
different tokenisation or k1/b builds a new index and the same one is never built twice.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import bm25s
import numpy as np
import Stemmer
from bm25s.tokenization import Tokenizer

from irdistill.data.collection import Collection, missing_docs_error
from irdistill.data.trec import Run, write_run
from irdistill.provenance import write_run_provenance
from irdistill.utils import cache_dir, stable_hash

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BM25Settings:
    k1: float = 1.5
    b: float = 0.75
    method: str = "lucene"
    stopwords: str = "en"
    stemmer: str | None = None  # e.g. "english" (needs PyStemmer)

    def key(self, collection_name: str) -> str:
        return stable_hash({"collection": collection_name, **asdict(self)})


def _tokenizer(settings: BM25Settings):
    stemmer = None
    if settings.stemmer:
        stemmer = Stemmer.Stemmer(settings.stemmer).stemWord
    return Tokenizer(stopwords=settings.stopwords, stemmer=stemmer)


class BM25:
    """A bm25s index over one collection; ``search`` returns a run."""

    def __init__(self, retriever, tokenizer, doc_ids: list[str], settings: BM25Settings):
        self.retriever = retriever
        self.tokenizer = tokenizer
        self.doc_ids = doc_ids
        self.settings = settings

    @classmethod
    def build(cls, collection: Collection, settings: BM25Settings = BM25Settings(),
              cache: Path | None = None) -> BM25:
        """Load the cached index of ``collection`` or build it in one streaming pass and cache it."""
        # bm25s sets its own logger to DEBUG on import; keep it at the project's level
        logging.getLogger("bm25s").setLevel(max(logging.getLogger().level, logging.WARNING))

        folder = (cache or cache_dir() / "bm25") / settings.key(collection.docs_name)
        if (folder / "done").exists():
            log.info("loading BM25 index from %s", folder)
            retriever = bm25s.BM25.load(folder, show_progress=False)
            tokenizer = _tokenizer(settings)
            tokenizer.load_vocab(folder)
            tokenizer.load_stopwords(folder)
            doc_ids = json.loads((folder / "doc_ids.json").read_text())
            return cls(retriever, tokenizer, doc_ids, settings)

        log.info("building BM25 index of %s (%d documents)", collection.name, len(collection.docs))
        doc_ids: list[str] = []

        def texts():
            for doc_id, text in collection.docs:
                doc_ids.append(doc_id)
                yield text

        tokenizer = _tokenizer(settings)
        # texts are streamed from the store: bm25s keeps token ids, never the texts
        tokens = tokenizer.tokenize(texts(), length=len(collection.docs), return_as="tuple",
                                    show_progress=False)
        retriever = bm25s.BM25(k1=settings.k1, b=settings.b, method=settings.method)
        retriever.index(tokens, show_progress=False)
        tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")  # one per process
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        retriever.save(tmp)
        tokenizer.save_vocab(tmp)
        tokenizer.save_stopwords(tmp)
        (tmp / "doc_ids.json").write_text(json.dumps(doc_ids))
        (tmp / "settings.json").write_text(json.dumps({"collection": collection.docs_name,
                                                      **asdict(settings)}, indent=2))
        (tmp / "done").touch()
        if (folder / "done").exists():  # another process built the same index meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(folder, ignore_errors=True)
            try:
                tmp.rename(folder)
            except OSError:  # lost a race to another process: its index is the same
                shutil.rmtree(tmp, ignore_errors=True)
        return cls(retriever, tokenizer, doc_ids, settings)

    def search(self, queries: dict[str, str], k: int = 100, show_progress: bool = True,
               threads: int = -1) -> Run:
        """The top-``k`` documents of each query. bm25s scores every document of the index
        for a query (a cost linear in the collection, per query), in ``threads`` threads (-1:
        one per core this process may use; the run is the same for any number)."""
        if threads == -1:  # the cores of this process (a cluster job's share), not the host's
            threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
                else (os.cpu_count() or 1)
        qids = list(queries)
        if not qids:
            return {}
        k = min(k, len(self.doc_ids))
        ids = self.tokenizer.tokenize([queries[q] for q in qids], update_vocab=False,
                                      return_as="ids", show_progress=False)
        run: Run = {}
        nonempty = [i for i, toks in enumerate(ids) if toks]
        if nonempty:
            docs, scores = self.retriever.retrieve([ids[i] for i in nonempty], k=k,
                                                   show_progress=show_progress,
                                                   n_threads=threads)
            for row, i in enumerate(nonempty):
                keep = scores[row] > 0
                run[qids[i]] = {self.doc_ids[d]: float(s)
                                for d, s in zip(np.asarray(docs[row])[keep], scores[row][keep])}
        empty = len(qids) - len(nonempty)
        if empty:
            log.warning("%d queries have no BM25 term in the index and get no candidates", empty)
        return run

    def score(self, queries: dict[str, str], candidates: Mapping[str, Iterable[str]]) -> Run:
        """The BM25 score of each (query, document) of a candidate set (a run, or query id ->
        document ids): the scores ``search`` gives, and 0 for a document without a query term."""
        row = {d: i for i, d in enumerate(self.doc_ids)}
        qids = [q for q in candidates if q in queries]
        ids = self.tokenizer.tokenize([queries[q] for q in qids], update_vocab=False,
                                      return_as="ids", show_progress=False)
        run: Run = {}
        for qid, tokens in zip(qids, ids):
            docs = list(candidates[qid])
            missing = [d for d in docs if d not in row]
            if missing:
                raise missing_docs_error(missing, "of this BM25 index")
            scores = (self.retriever.get_scores_from_ids(list(tokens)) if tokens
                      else np.zeros(len(self.doc_ids)))
            run[qid] = {d: float(scores[row[d]]) for d in docs}
        return run


def bm25_run(collection: Collection, k: int = 100, settings: BM25Settings = BM25Settings(),
             query_ids=None) -> Run:
    """BM25 top-``k`` for the collection's queries (or the given subset)."""
    queries = collection.queries if query_ids is None else collection.query_texts(query_ids)
    return BM25.build(collection, settings).search(queries, k)


def bm25_scores(collection: Collection, candidates: Mapping[str, Iterable[str]],
                settings: BM25Settings = BM25Settings()) -> Run:
    """BM25 scores of the given (query, document) candidates, from the collection's cached
    index (what a BM25 teacher of ``irdistill teach ensemble`` scores)."""
    queries = collection.query_texts(candidates)
    return BM25.build(collection, settings).score(queries, candidates)


def write_bm25_run(path, collection: Collection, k: int = 100,
                   settings: BM25Settings = BM25Settings(), source: str | None = None) -> Run:
    """BM25 top-``k`` of every query written as a TREC run (atomically), with its provenance
    beside it (``<stem>.provenance.json``: collection, settings, versions, the run's hash)."""
    run = bm25_run(collection, k, settings)
    write_run(path, run, tag="bm25")
    write_run_provenance(path, kind="bm25", config={"k": k, **asdict(settings)},
                         data={"collection": collection.name, "source": source or collection.name,
                               "documents": collection.docs_name, "queries": len(run)})
    return run
