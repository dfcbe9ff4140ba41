"""An exact inverted index of sparse vectors (SPLADE) on disk, built in one streaming pass.

Engine: ``scipy.sparse``. The index is the term-major (CSR, ``[vocab, docs]``) matrix of the
document vectors, i.e. one postings list of ``(doc number, weight)`` per vocabulary term; search
is the sparse product ``queries @ index`` followed by an exact top-k per query. Scores are the
exact dot products of the stored float32 vectors, so results equal brute-force scoring. See
``docs/splade.md`` for the engines considered (Seismic, PISA, Lucene/Pyserini, sparse_dot_topn).

Building keeps memory bounded: documents are read as a stream, encoded in batches, and every
``chunk_docs`` documents their postings are written to a temporary chunk file; the chunks are
then merged term by term into memory-mapped arrays. Only one chunk of vectors is ever in memory.

Folder layout (plain ``.npy`` files, loaded memory-mapped)::

    indptr.npy      [vocab + 1]  postings of term t are positions indptr[t]:indptr[t+1]
    indices.npy     [postings]   document numbers, increasing within a term
    data.npy        [postings]   float32 weights
    doc_ids.txt     document ids, one per line, in document-number order
    meta.json       vocabulary size, counts, the model and settings that built the index

A folder that holds ``meta.json`` is complete: indexes are built under ``<folder>.tmp`` and
renamed into place at the end.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from irdistill.data.trec import Run
from irdistill.errors import IrdistillError
from irdistill.provenance import model_fingerprint

log = logging.getLogger(__name__)

META = "meta.json"


@dataclass
class IndexStats:
    docs: int
    postings: int
    terms: int  # vocabulary terms with at least one posting
    vocab_size: int
    bytes: int

    @property
    def postings_per_doc(self) -> float:
        return self.postings / self.docs if self.docs else 0.0

    def to_json(self) -> dict:
        return {"docs": self.docs, "postings": self.postings, "terms": self.terms,
                "vocab_size": self.vocab_size, "bytes": self.bytes,
                "megabytes": round(self.bytes / 2**20, 2),
                "postings_per_doc": round(self.postings_per_doc, 1)}


def _index_dtype(n: int):
    return np.int32 if n < 2**31 - 1 else np.int64


def _merge_chunks(chunks: list[Path], vocab_size: int, folder: Path) -> int:
    """Merge per-chunk term-major matrices into one, term by term, into memory-mapped arrays.

    Chunk ``c`` holds documents ``offset_c ..``; the postings of term t in the result are the
    chunk postings of t concatenated in chunk order, so document numbers stay increasing.
    """
    counts = np.zeros((len(chunks), vocab_size), dtype=np.int64)
    docs = []
    for c, path in enumerate(chunks):
        with np.load(path) as f:
            counts[c] = np.diff(f["indptr"])
            docs.append(int(f["docs"]))
    per_term = counts.sum(axis=0)
    total = int(per_term.sum())
    dtype = _index_dtype(max(total, sum(docs)))
    indptr = np.zeros(vocab_size + 1, dtype=dtype)
    np.cumsum(per_term, out=indptr[1:])
    # start[c, t]: where chunk c's postings of term t go in the merged arrays
    start = indptr[:-1][None, :] + np.cumsum(counts, axis=0) - counts
    indices = np.lib.format.open_memmap(folder / "indices.npy", mode="w+", dtype=dtype,
                                        shape=(total,))
    data = np.lib.format.open_memmap(folder / "data.npy", mode="w+", dtype=np.float32,
                                     shape=(total,))
    offset = 0
    for c, path in enumerate(chunks):
        with np.load(path) as f:
            c_indptr, c_indices, c_data = f["indptr"], f["indices"], f["data"]
        n = len(c_indices)
        if n:
            terms = np.repeat(np.arange(vocab_size), counts[c])
            within = np.arange(n) - c_indptr[:-1][terms]
            dest = start[c][terms] + within
            indices[dest] = c_indices + offset
            data[dest] = c_data
        offset += docs[c]
    indices.flush()
    data.flush()
    del indices, data
    np.save(folder / "indptr.npy", indptr)
    return total


class SparseIndex:
    """An exact inverted index of sparse document vectors (see the module docstring)."""

    def __init__(self, folder: Path, matrix: sp.csr_matrix, doc_ids: list[str], meta: dict):
        self.folder = folder
        self.matrix = matrix  # [vocab, docs], term-major postings
        self.doc_ids = doc_ids
        self.meta = meta

    # -- building ------------------------------------------------------------------------------
    @classmethod
    def build(cls, folder: str | Path, batches: Iterable[tuple[list[str], sp.spmatrix]],
              vocab_size: int, chunk_docs: int = 16384, meta: dict | None = None,
              overwrite: bool = False) -> SparseIndex:
        """Index ``(doc_ids, vectors)`` batches (vectors ``[len(doc_ids), vocab]``), streaming.

        Every ``chunk_docs`` documents the gathered vectors are written as one chunk of
        postings; the chunks are merged at the end. Returns the loaded index.
        """
        folder = Path(folder)
        if (folder / META).exists():
            if not overwrite:
                raise IrdistillError("an index already exists here", path=folder,
                                     hint="choose another folder or delete this one")
            shutil.rmtree(folder)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "chunks").mkdir(parents=True)
        started = time.time()
        chunks: list[Path] = []
        pending: list[sp.csr_matrix] = []
        pending_docs = 0
        n_docs = 0
        seen: set[str] = set()

        def flush() -> None:
            nonlocal pending, pending_docs
            if not pending:
                return
            block = sp.vstack(pending, format="csr", dtype=np.float32)
            block.eliminate_zeros()
            postings = block.T.tocsr()  # [vocab, chunk docs]: postings of this chunk
            postings.sort_indices()
            path = tmp / "chunks" / f"chunk-{len(chunks):05d}.npz"
            np.savez(path, indptr=postings.indptr.astype(np.int64),
                     indices=postings.indices.astype(np.int64), data=postings.data,
                     docs=np.int64(block.shape[0]))
            chunks.append(path)
            pending, pending_docs = [], 0

        with open(tmp / "doc_ids.txt", "w", encoding="utf-8") as ids_file:
            for doc_ids, vectors in batches:
                vectors = sp.csr_matrix(vectors, dtype=np.float32)
                if vectors.shape != (len(doc_ids), vocab_size):
                    raise ValueError(f"a batch of {len(doc_ids)} ids came with vectors of shape "
                                     f"{vectors.shape}, expected ({len(doc_ids)}, {vocab_size})")
                if vectors.nnz and vectors.data.min() < 0:
                    raise IrdistillError("sparse vectors must not have negative weights")
                for doc_id in doc_ids:
                    if doc_id in seen:
                        raise IrdistillError(f"document id '{doc_id}' appears twice in the "
                                             "collection", hint="document ids must be unique")
                    if not doc_id or any(ch.isspace() for ch in doc_id):
                        raise IrdistillError(f"document id {doc_id!r} is empty or has spaces",
                                             hint="TREC runs need ids without whitespace")
                    seen.add(doc_id)
                    ids_file.write(doc_id + "\n")
                pending.append(vectors)
                pending_docs += len(doc_ids)
                n_docs += len(doc_ids)
                if pending_docs >= chunk_docs:
                    flush()
            flush()
        if n_docs == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise IrdistillError("no documents to index", hint="the collection is empty")
        postings = _merge_chunks(chunks, vocab_size, tmp)
        shutil.rmtree(tmp / "chunks")
        info = {"format": "irdistill-sparse-index/1", "vocab_size": vocab_size, "docs": n_docs,
                "postings": postings, "chunks": len(chunks),
                "build_seconds": round(time.time() - started, 2), **(meta or {})}
        (tmp / META).write_text(json.dumps(info, indent=2))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        index = cls.load(folder)
        log.info("indexed %d documents: %d postings (%.1f per document), %.1f MB in %s",
                 n_docs, postings, postings / n_docs, index.stats().bytes / 2**20, folder)
        return index

    @classmethod
    def load(cls, folder: str | Path, mmap: bool = True) -> SparseIndex:
        folder = Path(folder)
        if not (folder / META).exists():
            if folder.with_name(folder.name + ".tmp").exists():
                hint = "its build was interrupted; build it again"
            else:
                hint = "build one with 'irdistill splade index'"
            raise IrdistillError("not a finished sparse index (no meta.json)", path=folder,
                                 hint=hint)
        meta = json.loads((folder / META).read_text())
        mode = "r" if mmap else None
        indptr = np.load(folder / "indptr.npy", mmap_mode=mode)
        indices = np.load(folder / "indices.npy", mmap_mode=mode)
        data = np.load(folder / "data.npy", mmap_mode=mode)
        doc_ids = (folder / "doc_ids.txt").read_text(encoding="utf-8").splitlines()
        if len(doc_ids) != meta["docs"] or len(indptr) != meta["vocab_size"] + 1:
            raise IrdistillError("index files disagree with meta.json", path=folder,
                                 hint="the index is damaged; build it again")
        matrix = sp.csr_matrix((data, indices, indptr), shape=(meta["vocab_size"], len(doc_ids)),
                               copy=False)
        return cls(folder, matrix, doc_ids, meta)

    # -- facts -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.doc_ids)

    @property
    def vocab_size(self) -> int:
        return self.matrix.shape[0]

    def stats(self) -> IndexStats:
        size = sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file())
        terms = int(np.count_nonzero(np.diff(np.asarray(self.matrix.indptr))))
        return IndexStats(len(self.doc_ids), int(self.matrix.nnz), terms, self.vocab_size, size)

    # -- search ----------------------------------------------------------------------------
    def search_vectors(self, queries: sp.spmatrix, k: int = 100, batch_size: int = 256
                       ) -> Iterator[list[tuple[int, float]]]:
        """For each query row, its top-``k`` ``(doc number, score)``, best first.

        Only documents sharing a term with the query (score > 0) are returned. Ties are broken
        as in TREC runs (doc id, descending), so the result is deterministic.
        """
        queries = sp.csr_matrix(queries, dtype=np.float32)
        if queries.shape[1] != self.vocab_size:
            raise IrdistillError(f"query vectors have {queries.shape[1]} dimensions but the "
                                 f"index has {self.vocab_size}",
                                 hint="search with the model that built the index")
        for start in range(0, queries.shape[0], batch_size):
            scores = (queries[start:start + batch_size] @ self.matrix).tocsr()
            for row in range(scores.shape[0]):
                lo, hi = scores.indptr[row], scores.indptr[row + 1]
                docs, values = scores.indices[lo:hi], scores.data[lo:hi]
                keep = values > 0
                yield self._top(docs[keep], values[keep], k)

    def _top(self, docs: np.ndarray, values: np.ndarray, k: int) -> list[tuple[int, float]]:
        if len(values) > k:
            threshold = np.partition(values, len(values) - k)[len(values) - k]
            keep = values >= threshold  # ties at the threshold are settled below
            docs, values = docs[keep], values[keep]
        ids = self.doc_ids
        order = sorted(range(len(docs)), key=lambda i: (values[i], ids[docs[i]]), reverse=True)
        return [(int(docs[i]), float(values[i])) for i in order[:k]]

    def search(self, query_ids: list[str], queries: sp.spmatrix, k: int = 100) -> Run:
        """A run ``{query id: {doc id: score}}`` for query vectors (one row per id)."""
        if queries.shape[0] != len(query_ids):
            raise ValueError("one query vector per query id")
        run: Run = {}
        for qid, hits in zip(query_ids, self.search_vectors(queries, k)):
            run[qid] = {self.doc_ids[d]: s for d, s in hits}
        return run


# -- SPLADE on collections -------------------------------------------------------------------
def encoded_batches(model, docs: Iterable[tuple[str, str]], batch_docs: int = 1024,
                    batch_size: int = 32, total: int | None = None,
                    show_progress: bool = True) -> Iterator[tuple[list[str], sp.csr_matrix]]:
    """Stream ``(doc_id, text)`` pairs into ``(doc ids, vectors)`` batches of ``batch_docs``
    documents (sorted by length inside each batch, so little compute goes to padding)."""
    bar = tqdm(total=total, desc="indexing", unit="doc", disable=not show_progress)
    ids: list[str] = []
    texts: list[str] = []
    for doc_id, text in docs:
        ids.append(doc_id)
        texts.append(text)
        if len(ids) >= batch_docs:
            yield ids, model.encode_docs(texts, batch_size=batch_size)
            bar.update(len(ids))
            ids, texts = [], []
    if ids:
        yield ids, model.encode_docs(texts, batch_size=batch_size)
        bar.update(len(ids))
    bar.close()


def build_splade_index(model, collection, folder: str | Path, *, batch_size: int = 32,
                       chunk_docs: int = 16384, overwrite: bool = False,
                       show_progress: bool = True, model_name: str | None = None) -> SparseIndex:
    """Encode every document of ``collection`` with the SPLADE ``model`` and index it on disk."""
    meta = {"collection": collection.docs_name, "model": model_name,
            "model_fingerprint": model_fingerprint(model_name) if model_name else None,
            "max_doc_length": model.max_doc_length, "precision": model.precision or "fp32"}
    batches = encoded_batches(model, collection.docs, batch_docs=min(1024, chunk_docs),
                              batch_size=batch_size, total=len(collection.docs),
                              show_progress=show_progress)
    return SparseIndex.build(folder, batches, model.vocab_size, chunk_docs=chunk_docs,
                             meta=meta, overwrite=overwrite)


@dataclass
class SearchTiming:
    queries: int
    encode_seconds: float
    search_seconds: float

    @property
    def search_qps(self) -> float:
        return self.queries / self.search_seconds if self.search_seconds else float("inf")

    @property
    def total_qps(self) -> float:
        total = self.encode_seconds + self.search_seconds
        return self.queries / total if total else float("inf")

    def to_json(self) -> dict:
        return {"queries": self.queries, "encode_seconds": round(self.encode_seconds, 3),
                "search_seconds": round(self.search_seconds, 3),
                "search_qps": round(self.search_qps, 1), "total_qps": round(self.total_qps, 1)}


def splade_search(model, index: SparseIndex, queries: dict[str, str], k: int = 100,
                  batch_size: int = 64, show_progress: bool = False) -> tuple[Run, SearchTiming]:
    """Encode ``queries`` with ``model`` and search ``index``: the run and its timing."""
    qids = list(queries)
    started = time.perf_counter()
    vectors = model.encode_queries([queries[q] for q in qids], batch_size=batch_size,
                                   show_progress=show_progress)
    encoded = time.perf_counter()
    run = index.search(qids, vectors, k)
    done = time.perf_counter()
    empty = sum(1 for q in qids if not run[q])
    if empty:
        log.warning("%d queries share no term with the index and get no documents", empty)
    return run, SearchTiming(len(qids), encoded - started, done - encoded)
