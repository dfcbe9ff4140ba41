import json
import math

import pytest
from typer.testing import CliRunner

from irdistill.cli import app
from irdistill.data.trec import read_run, write_run
from irdistill.errors import IrdistillError
from irdistill.evaluation.fusion import fuse, fuse_files, interpolate, tune_alpha

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


# -- fuse: hand-computed values -----------------------------------------------------------------
R1 = {"q": {"a": 3.0, "b": 2.0, "c": 1.0}, "q2": {"x": 1.0, "y": 0.5}}
R2 = {"q": {"b": 10.0, "d": 5.0, "a": 0.0}}  # no q2; no c; d not in R1
S = math.sqrt(1.5)  # z-score of the top (and bottom) of three evenly spaced scores


def test_rrf_is_the_sum_of_reciprocal_ranks():
    fused = fuse([R1, R2])  # k = 60
    assert fused["q"] == pytest.approx({"a": 1 / 61 + 1 / 63, "b": 1 / 62 + 1 / 61,
                                        "c": 1 / 63, "d": 1 / 62}, rel=1e-12)
    assert fused["q2"] == pytest.approx({"x": 1 / 61, "y": 1 / 62})  # q2 only in R1
    weighted = fuse([R1, R2], "rrf", weights=[2, 1], k=0)
    assert weighted["q"] == pytest.approx({"a": 2 / 1 + 1 / 3, "b": 2 / 2 + 1 / 1, "c": 2 / 3,
                                           "d": 1 / 2})


def test_rrf_ranks_ties_as_trec_eval_and_ignores_the_rank_column():
    fused = fuse([{"q": {"a": 1.0, "b": 1.0, "c": 2.0}}], k=0)  # c, then b before a (id desc.)
    assert fused["q"] == pytest.approx({"c": 1.0, "b": 1 / 2, "a": 1 / 3})


def test_minmax_weighted_sum_and_missing_documents_get_zero():
    fused = fuse([R1, R2], "wsum", "minmax", weights=[0.5, 0.5])
    # minmax R1: a=1, b=.5, c=0; R2: b=1, d=.5, a=0; c and d get 0 from the run lacking them
    assert fused["q"] == pytest.approx({"a": 0.5, "b": 0.75, "c": 0.0, "d": 0.25})
    assert fused["q2"] == pytest.approx({"x": 0.5, "y": 0.0})
    assert fuse([R1, R2], "wsum") == fuse([R1, R2], "combsum", "minmax")  # minmax, weights 1
    assert fuse([R1, R2], "combsum")["q"] == pytest.approx({"a": 1.0, "b": 1.5, "c": 0.0,
                                                            "d": 0.5})


def test_zscore_weighted_sum_uses_the_population_deviation():
    fused = fuse([R1, R2], "wsum", "zscore", weights=[1, 3])
    # R1: a=+S, b=0, c=-S; R2: b=+S, d=0, a=-S (mean 2 and 5, std sqrt(2/3) and sqrt(50/3))
    assert fused["q"] == pytest.approx({"a": S - 3 * S, "b": 3 * S, "c": -S, "d": 0.0})
    # the convention's consequence: d (missing from R1) gets R1's mean, above c
    assert fused["q"]["d"] > fused["q"]["c"]
    assert fused["q2"] == pytest.approx({"x": 1.0, "y": -1.0})


def test_combmnz_and_depth():
    assert fuse([R1, R2], "combmnz")["q"] == pytest.approx({"a": 2.0, "b": 3.0, "c": 0.0,
                                                            "d": 0.5})
    top2 = fuse([R1, R2], depth=2)  # R1: a, b; R2: b, d
    assert top2["q"] == pytest.approx({"a": 1 / 61, "b": 1 / 62 + 1 / 61, "d": 1 / 62})
    one_score = fuse([{"q": {"a": 4.0, "b": 4.0}}], "wsum", "minmax")  # no spread: 0
    assert one_score["q"] == {"a": 0.0, "b": 0.0}
    assert fuse([R1, R2], "wsum", "none")["q"] == pytest.approx({"a": 3.0, "b": 12.0, "c": 1.0,
                                                                 "d": 5.0})


@pytest.mark.parametrize("kwargs, words", [
    ({"method": "rff"}, ["unknown fusion method 'rff'", "did you mean 'rrf'"]),
    ({"method": "wsum", "norm": "z-score"}, ["unknown fusion normalisation", "zscore"]),
    ({"weights": [1.0]}, ["1 weights for 2 runs", "one weight per run"]),
    ({"weights": [1.0, -1.0]}, ["at least 0"]),
    ({"norm": "zscore"}, ["rrf fuses ranks"]),
    ({"depth": 0}, ["depth 0"]),
])
def test_fuse_refuses_bad_settings(kwargs, words):
    with pytest.raises(IrdistillError) as info:
        fuse([R1, R2], **kwargs)
    for word in words:
        assert word in str(info.value)


# -- irdistill fuse -----------------------------------------------------------------------------
runner = CliRunner()


def _write_runs(tmp_path):
    paths = [tmp_path / "r1.trec", tmp_path / "r2.trec"]
    write_run(paths[0], R1, tag="one")
    write_run(paths[1], R2, tag="two")
    return paths


def test_cli_fuse_writes_the_run_and_its_provenance(tmp_path):
    paths = _write_runs(tmp_path)
    out = tmp_path / "out" / "fused.trec"
    result = runner.invoke(app, ["fuse", *map(str, paths), "--method", "wsum", "--norm",
                                 "minmax", "-w", "0.5", "-w", "0.5", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "r2.trec: 1 of the 2 queries are not in this run" in result.output
    written, expected = read_run(out), fuse([R1, R2], "wsum", "minmax", [0.5, 0.5])
    assert written.keys() == expected.keys()
    for qid in expected:
        assert written[qid] == pytest.approx(expected[qid])
    record = json.loads((tmp_path / "out" / "fused.provenance.json").read_text())
    assert record["kind"] == "fuse" and record["config"]["method"] == "wsum"
    assert record["config"]["weights"] == [0.5, 0.5]
    assert [i["path"] for i in record["inputs"]] == [str(p.resolve()) for p in paths]
    assert record["run"]["bytes"] == out.stat().st_size
    rrf = fuse_files(paths, tmp_path / "rrf.trec")  # the library call behind the command
    assert read_run(rrf.path)["q"] == pytest.approx(fuse([R1, R2])["q"], rel=1e-9)


@pytest.mark.parametrize("case", ["missing", "weights", "method", "one_run", "bad_line"])
def test_cli_fuse_bad_input_one_line_and_nothing_written(tmp_path, case):
    paths = [str(p) for p in _write_runs(tmp_path)]
    out = tmp_path / "fused.trec"
    extra, words = [], []
    if case == "missing":
        paths[1] = str(tmp_path / "nope.trec")
        words = ["nope.trec", "not found"]
    elif case == "weights":
        extra, words = ["-w", "1"], ["1 weights for 2 runs"]
    elif case == "method":
        extra, words = ["--method", "combsun"], ["unknown fusion method", "'combsum'"]
    elif case == "one_run":
        paths, words = paths[:1], ["at least two runs"]
    else:
        (tmp_path / "r2.trec").write_text("q Q0 a 1 oops t\n")
        words = ["r2.trec, line 1", "not a number"]
    result = runner.invoke(app, ["fuse", *paths, *extra, "--output", str(out)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for word in words:
        assert word in lines[0]
    assert not out.exists() and not (tmp_path / "fused.provenance.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r1.trec", "r2.trec"]
