import pytest

from irdistill.errors import IrdistillError
from irdistill.evaluation.fusion import interpolate, tune_alpha

FIRST = {"q": {"a": 10.0, "b": 5.0, "c": 0.0, "z": -1.0}}
RERANKED = {"q": {"a": 0.0, "b": 2.0, "c": 1.0}}


def test_interpolation_normalises_per_query():
    fused = interpolate(FIRST, RERANKED, 0.5)
    # minmax: rerank a=0, b=1, c=.5; first (over a, b, c) a=1, b=.5, c=0
    assert fused["q"] == pytest.approx({"a": 0.5, "b": 0.75, "c": 0.25})
    assert interpolate(FIRST, RERANKED, 1.0)["q"] == pytest.approx({"a": 0.0, "b": 1.0, "c": 0.5})
    assert interpolate(FIRST, RERANKED, 0.0)["q"] == pytest.approx({"a": 1.0, "b": 0.5, "c": 0.0})


def test_interpolation_errors():
    with pytest.raises(IrdistillError, match="outside"):
        interpolate(FIRST, RERANKED, 1.5)
    with pytest.raises(IrdistillError, match="not in the first-stage run"):
        interpolate(FIRST, {"q": {"new": 1.0}}, 0.5)


def test_tune_alpha_picks_the_best_weight():
    qrels = {"q": {"b": 1}}
    alpha, value = tune_alpha(FIRST, RERANKED, qrels)
    assert value == pytest.approx(1.0) and alpha >= 0.4  # b first needs enough re-ranker weight
    alpha, value = tune_alpha(FIRST, RERANKED, {"q": {"a": 1}})
    assert alpha < 0.5 and value == pytest.approx(1.0)
