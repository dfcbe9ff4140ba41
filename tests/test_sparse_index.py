"""The sparse inverted index: built in chunks, merged exactly, searched exactly."""
import json

import numpy as np
import pytest
import scipy.sparse as sp
from splade_helpers import tiny_mlm  # noqa: F401  (fixture)

from irdistill.data.trec import ranked
from irdistill.errors import IrdistillError
from irdistill.retrieval.sparse_index import SparseIndex

VOCAB = 50


def random_vectors(n, density, seed, empty=()):
    """Sparse non-negative vectors whose weights are multiples of 1/8, so that every dot product
    is exact in float32 and ties are frequent; the rows ``empty`` have no term."""
    rng = np.random.default_rng(seed)
    dense = rng.integers(1, 9, size=(n, VOCAB)) / 8.0
    dense[rng.random((n, VOCAB)) > density] = 0.0
    dense[list(empty)] = 0.0
    return sp.csr_matrix(dense.astype(np.float32))


def brute_force(queries, docs, doc_ids, k):
    """Every document scored by a dense dot product; top-k as a TREC run orders them."""
    scores = queries.toarray().astype(np.float64) @ docs.toarray().astype(np.float64).T
    out = []
    for row in scores:
        run = {doc_ids[j]: float(s) for j, s in enumerate(row) if s > 0}
        out.append(ranked(run, k))
    return out


def batches(doc_ids, vectors, size):
    for start in range(0, len(doc_ids), size):
        yield doc_ids[start:start + size], vectors[start:start + size]


@pytest.mark.parametrize("chunk_docs", [7, 1000])
def test_search_equals_brute_force_on_random_vectors(tmp_path, chunk_docs):
    docs = random_vectors(103, 0.1, seed=1, empty=[5])
    doc_ids = [f"d{i:03d}" for i in range(docs.shape[0])]
    queries = random_vectors(20, 0.2, seed=2)
    index = SparseIndex.build(tmp_path / "idx", batches(doc_ids, docs, 3), VOCAB,
                              chunk_docs=chunk_docs)
    assert index.meta["chunks"] == (12 if chunk_docs == 7 else 1)  # 9 documents per chunk
    # the merged postings are exactly the document vectors, transposed
    assert (index.matrix.T.tocsr() != docs).nnz == 0
    for k in (1, 5, 200):
        expected = brute_force(queries, docs, doc_ids, k)
        got = index.search([f"q{i}" for i in range(20)], queries, k)
        for i, hits in enumerate(expected):
            assert list(got[f"q{i}"].items()) == hits  # same documents, order and scores


def test_ties_are_broken_as_in_trec_runs(tmp_path):
    docs = sp.csr_matrix(np.array([[1, 0], [1, 0], [0, 1], [1, 0]], dtype=np.float32))
    index = SparseIndex.build(tmp_path / "idx", [(["a", "b", "c", "d"], docs)], 2)
    hits = index.search(["q"], sp.csr_matrix(np.array([[1.0, 0.0]], dtype=np.float32)), k=2)
    assert list(hits["q"]) == ["d", "b"]  # equal scores: doc id descending, then cut at k
    assert "c" not in index.search(["q"], sp.csr_matrix([[1.0, 0.0]]), k=10)["q"]


def test_index_is_on_disk_with_its_statistics(tmp_path):
    docs = random_vectors(40, 0.1, seed=3)
    doc_ids = [f"d{i}" for i in range(40)]
    SparseIndex.build(tmp_path / "idx", batches(doc_ids, docs, 16), VOCAB, chunk_docs=16,
                      meta={"model": "m"})
    assert not (tmp_path / "idx.tmp").exists()
    index = SparseIndex.load(tmp_path / "idx")
    stats = index.stats()
    assert stats.docs == 40 and stats.postings == docs.nnz
    assert stats.terms == len(np.unique(docs.indices)) and stats.bytes > 4 * docs.nnz
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    assert meta["postings"] == docs.nnz and meta["model"] == "m"
    assert all(memory_mapped(a) for a in (index.matrix.data, index.matrix.indices))


def memory_mapped(array) -> bool:
    import mmap

    while array is not None:
        if isinstance(array, (np.memmap, mmap.mmap)):
            return True
        array = getattr(array, "base", None)
    return False


def test_index_errors(tmp_path):
    docs = random_vectors(4, 0.5, seed=4)
    with pytest.raises(IrdistillError, match="appears twice"):
        SparseIndex.build(tmp_path / "a", [(["x", "y", "x", "z"], docs)], VOCAB)
    with pytest.raises(IrdistillError, match="not a finished sparse index"):
        SparseIndex.load(tmp_path / "a")
    index = SparseIndex.build(tmp_path / "b", [(["w", "x", "y", "z"], docs)], VOCAB)
    with pytest.raises(IrdistillError, match="already exists"):
        SparseIndex.build(tmp_path / "b", [(["w", "x", "y", "z"], docs)], VOCAB)
    with pytest.raises(IrdistillError, match="dimensions"):
        index.search(["q"], sp.csr_matrix(np.ones((1, VOCAB + 1), dtype=np.float32)))


def test_splade_index_of_a_collection_equals_brute_force(tmp_path, tiny_mlm, beir_folder):
    """A tiny model end to end: streaming index of a collection, search of its queries."""
    from irdistill.data.collection import load_collection
    from irdistill.models.splade import Splade
    from irdistill.retrieval.sparse_index import build_splade_index, splade_search

    collection = load_collection(beir_folder)
    model = Splade.from_pretrained(tiny_mlm, device="cpu")
    index = build_splade_index(model, collection, tmp_path / "idx", batch_size=3, chunk_docs=2,
                               show_progress=False)
    run, timing = splade_search(model, index, collection.queries, k=3)
    doc_ids = [d for d, _ in collection.docs]
    assert index.doc_ids == doc_ids
    docs = model.encode_docs([t for _, t in collection.docs])
    assert index.stats().postings == docs.nnz
    qids = list(collection.queries)
    queries = model.encode_queries([collection.queries[q] for q in qids])
    expected = brute_force(queries, docs, doc_ids, 3)
    for qid, hits in zip(qids, expected):
        assert len(hits) == 3  # the tiny model's vectors overlap: a real ranking
        assert list(run[qid]) == [d for d, _ in hits]
        assert list(run[qid].values()) == pytest.approx([s for _, s in hits], rel=1e-5)
    assert timing.queries == len(qids) == 2 and timing.search_qps > 0
