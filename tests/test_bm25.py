import time

from irdistill.data.collection import load_collection
from irdistill.evaluation.metrics import evaluate
from irdistill.retrieval.bm25 import BM25, BM25Settings, bm25_run


def test_bm25_scifact_matches_reference(scifact_available):
    """The shared data's README gives nDCG@10 0.662, RR@10 0.631, R@100 0.876 for bm25s."""
    test = load_collection("beir/scifact/test")
    run = bm25_run(test, k=100)
    assert len(run) == 300 and all(len(d) <= 100 for d in run.values())
    result = evaluate(run, test.qrels, ["nDCG@10", "RR@10", "R@100"]).aggregate
    assert abs(result["nDCG@10"] - 0.662) < 0.003
    assert abs(result["RR@10"] - 0.631) < 0.003
    assert abs(result["R@100"] - 0.876) < 0.003


def test_bm25_index_is_cached_and_shared_by_splits(scifact_available, tmp_path):
    test = load_collection("beir/scifact/test")
    train = load_collection("beir/scifact/train")
    BM25.build(test, BM25Settings(), cache=tmp_path)
    assert len(list(tmp_path.iterdir())) == 1
    start = time.perf_counter()
    index = BM25.build(train, BM25Settings(), cache=tmp_path)  # same documents: same index
    assert len(list(tmp_path.iterdir())) == 1
    assert len(index.doc_ids) == 5183
    BM25.build(test, BM25Settings(k1=1.2), cache=tmp_path)  # other settings: another index
    assert len(list(tmp_path.iterdir())) == 2
    assert time.perf_counter() - start < 60


def test_bm25_on_beir_folder(beir_folder):
    coll = load_collection(beir_folder)
    run = bm25_run(coll, k=2)
    assert next(iter(run["q1"])) == "d1"
    assert max(run["q2"], key=run["q2"].get) == "d2"


def test_bm25_search_gives_the_same_run_in_any_number_of_threads(scifact_available):
    collection = load_collection("beir/scifact/test")
    index = BM25.build(collection)
    queries = {q: collection.queries[q] for q in sorted(collection.queries)[:200]}
    one = index.search(queries, k=50, show_progress=False, threads=0)
    assert len(one) == 200
    assert index.search(queries, k=50, show_progress=False, threads=2) == one
    assert index.search(queries, k=50, show_progress=False) == one  # one per core
