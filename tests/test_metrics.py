import pytest
from conftest import DL19

from irdistill.data.trec import read_qrels, read_run
from irdistill.errors import IrdistillError
from irdistill.evaluation.metrics import evaluate


def test_dl19_bm25_official_ndcg():
    run = read_run(DL19 / "rankllmdata_BM25_dl19_top100.trec")
    qrels = read_qrels(DL19 / "qrels.dl19-passage.txt")
    result = evaluate(run, qrels, ["nDCG@10", "RR@10"])
    assert round(result.aggregate["nDCG@10"], 4) == 0.5058
    assert len(result.per_query) == 43


def test_missing_and_unjudged_queries_are_reported():
    qrels = {"q1": {"a": 2, "b": 0}, "q2": {"c": 1}}
    run = {"q1": {"a": 2.0, "b": 1.0}, "q3": {"x": 1.0}}
    result = evaluate(run, qrels, ["nDCG@10"])
    assert result.missing == ["q2"] and result.unjudged == ["q3"]
    assert result.per_query["q1"]["nDCG@10"] == pytest.approx(1.0)
    assert result.per_query["q2"]["nDCG@10"] == 0.0
    assert result.aggregate["nDCG@10"] == pytest.approx(0.5)
    lenient = evaluate(run, qrels, ["nDCG@10"], missing_as_zero=False)
    assert lenient.aggregate["nDCG@10"] == pytest.approx(1.0)


def test_graded_ndcg_uses_grades():
    qrels = {"q": {"a": 1, "b": 3}}
    better = evaluate({"q": {"b": 2.0, "a": 1.0}}, qrels, ["nDCG@10"]).aggregate["nDCG@10"]
    worse = evaluate({"q": {"a": 2.0, "b": 1.0}}, qrels, ["nDCG@10"]).aggregate["nDCG@10"]
    assert better == pytest.approx(1.0) and worse < 0.8


def test_bad_measure_and_disjoint_ids():
    with pytest.raises(IrdistillError, match="unknown measure"):
        evaluate({"q": {"a": 1.0}}, {"q": {"a": 1}}, ["nDCG@@10"])
    with pytest.raises(IrdistillError, match="share query ids"):
        evaluate({"x": {"a": 1.0}}, {"q": {"a": 1}}, ["nDCG@10"])
