"""irdistill in PyTerrier: a pipeline BM25 >> irdistill re-ranker on SciFact, measured by
pt.Experiment, gives the figures of irdistill's own re-ranking and evaluation of the same run;
text loading, run frames and a SPLADE retriever as transformers; clear errors on bad frames."""
import pytest

pt = pytest.importorskip("pyterrier", reason="the pyterrier extra is not installed")

from irdistill.errors import IrdistillError  # noqa: E402

QUERIES = 24  # SciFact test queries in the check (BM25 top-10 each)


@pytest.fixture
def scifact(scifact_available):
    from irdistill.data.collection import load_collection
    from irdistill.retrieval.bm25 import bm25_run

    test = load_collection("beir/scifact/test")
    qids = sorted(test.qrels)[:QUERIES]
    return test, bm25_run(test, k=10, query_ids=qids), qids


def test_a_pyterrier_pipeline_gives_the_figures_of_irdistill(scifact, tiny_bert, tmp_path):
    from ir_measures import AP, nDCG

    from irdistill.evaluation.metrics import evaluate
    from irdistill.models.cross_encoder import CrossEncoder
    from irdistill.pyterrier import (ReRanker, TextLoader, qrels_frame, run_transformer,
                                     topics_frame)
    from irdistill.rerank.scoring import rerank_run

    test, bm25, qids = scifact
    model = CrossEncoder.from_pretrained(tiny_bert, device="cpu")
    pipeline = run_transformer(bm25, test) >> TextLoader(test) >> ReRanker(model)
    table = pt.Experiment([pipeline], topics_frame(test, qids), qrels_frame(test, qids),
                          [nDCG @ 10, AP], names=["irdistill"])
    ours = evaluate(rerank_run(model, test, bm25, depth=10, show_progress=False),
                    {q: test.qrels[q] for q in qids}, ["nDCG@10", "AP"]).aggregate
    row = table.iloc[0]
    assert row["nDCG@10"] == pytest.approx(ours["nDCG@10"], abs=1e-6)
    assert row["AP"] == pytest.approx(ours["AP"], abs=1e-6)
    # the first stage alone, through the same frames, is BM25's own figure
    first = pt.Experiment([run_transformer(bm25, test)], topics_frame(test, qids),
                          qrels_frame(test, qids), [nDCG @ 10], names=["bm25"])
    assert first.iloc[0]["nDCG@10"] == pytest.approx(
        evaluate(bm25, {q: test.qrels[q] for q in qids}, ["nDCG@10"]).aggregate["nDCG@10"],
        abs=1e-6)


def test_reranker_scores_and_ranks_a_frame_and_names_missing_columns(tiny_bert):
    import pandas as pd

    from irdistill.models.cross_encoder import CrossEncoder
    from irdistill.pyterrier import ReRanker

    frame = pd.DataFrame({"qid": ["1", "1", "2"], "query": ["stars", "stars", "cells"],
                          "docno": ["a", "b", "c"],
                          "text": ["Stars shine by fusion.", "Dogs bark.", "Cells divide."]})
    reranker = ReRanker(tiny_bert)
    out = reranker.transform(frame)
    model = CrossEncoder.from_pretrained(tiny_bert)
    assert out["score"].tolist() == pytest.approx(model.score(list(zip(frame["query"],
                                                                       frame["text"]))))
    for qid, group in out.groupby("qid"):
        assert sorted(group["rank"]) == list(range(len(group)))
        assert group.sort_values("rank")["score"].is_monotonic_decreasing
    with pytest.raises(IrdistillError, match="missing: text.*TextLoader"):
        reranker.transform(frame.drop(columns=["text"]))
    assert len(reranker.transform(frame.iloc[:0])) == 0


def test_text_loader_refuses_documents_of_another_collection(scifact):
    import pandas as pd

    from irdistill.pyterrier import TextLoader

    test, _, _ = scifact
    with pytest.raises(IrdistillError, match="not in the collection 'beir/scifact/test': no-such-doc"):
        TextLoader(test).transform(pd.DataFrame({"qid": ["1"], "docno": ["no-such-doc"]}))


def test_splade_retriever_returns_the_search_of_irdistill(tmp_path, tiny_mlm, beir_folder):
    """The retriever's frame is irdistill's search (same documents, scores and order, ranks
    from 0), and pt.Experiment on it reports the figures of irdistill's evaluation."""
    from ir_measures import nDCG

    from irdistill.data.collection import load_collection
    from irdistill.evaluation.metrics import evaluate
    from irdistill.models.splade import Splade
    from irdistill.pyterrier import SpladeRetriever, qrels_frame, topics_frame
    from irdistill.retrieval.sparse_index import build_splade_index, splade_search

    collection = load_collection(beir_folder)
    model = Splade.from_pretrained(tiny_mlm)
    index = build_splade_index(model, collection, tmp_path / "index", show_progress=False)
    retriever = SpladeRetriever(model, tmp_path / "index", k=3)
    frame = retriever.transform(topics_frame(collection))
    run, _ = splade_search(model, index, collection.queries, k=3)
    want = {(q, d): s for q, docs in run.items() for d, s in docs.items()}
    assert len(want) >= 2 * len(collection.queries)  # most queries match documents
    got = {(r.qid, r.docno): r.score for r in frame.itertuples()}
    assert got.keys() == want.keys()
    assert all(got[k] == pytest.approx(want[k]) for k in want)
    for qid, rows in frame.groupby("qid"):
        assert list(rows["rank"]) == list(range(len(rows)))
        assert list(rows["score"]) == sorted(rows["score"], reverse=True)
        assert set(rows["query"]) == {collection.queries[qid]}
    table = pt.Experiment([retriever], topics_frame(collection), qrels_frame(collection),
                          [nDCG @ 10], names=["splade"])
    assert table.iloc[0]["nDCG@10"] == pytest.approx(
        evaluate(run, collection.qrels, ["nDCG@10"]).aggregate["nDCG@10"], abs=1e-6)


from splade_helpers import tiny_mlm  # noqa: E402,F401  (fixture)
