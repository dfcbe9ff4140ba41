"""Data modes that build training groups, the streamed triple files, and staged configs."""
import numpy as np
import pytest

from irdistill.config import Config, load_config, resolve_stage
from irdistill.data.sampling import (MODE_SOURCES, MODES, build_groups, label_groups, mode_source,
                                     pick, teacher_groups)
from irdistill.data.triples import TripleGroups, iter_triples, parse_triple
from irdistill.errors import IrdistillError

# a teacher's run: q1 has 6 documents, scores 6..1 (d1 best); q2 has 3, q3 has one
TEACHER = {"q1": {f"d{i}": float(7 - i) for i in range(1, 7)},
           "q2": {"a": 0.5, "b": 2.5, "c": -1.0},
           "q3": {"x": 1.0}}
QRELS = {"q1": {"d3": 1, "d5": 2}, "q2": {"zz": 1}, "q3": {"x": 1}}


def test_modes_and_their_sources():
    assert set(MODES) == {"labels", "teacher_scores", "teacher_ranks", "triples"}
    assert MODE_SOURCES == {"labels": "run", "teacher_scores": "teacher_run",
                            "teacher_ranks": "teacher_run", "triples": "triples"}
    with pytest.raises(IrdistillError, match="did you mean 'teacher_ranks'"):
        mode_source("teacher_rank")
    with pytest.raises(IrdistillError, match="no training groups"):
        build_groups("labels", epoch=0, run={"q9": {"d": 1.0}}, qrels=QRELS)


def test_pick_all_and_order():
    rng = np.random.default_rng(0)
    cands = [f"d{i}" for i in range(10)]
    assert pick(cands, 3, "all", rng) == cands
    chosen = pick(cands, 4, "random", rng)
    assert len(chosen) == 4 and chosen == sorted(chosen, key=cands.index)  # keeps the order
    assert pick(cands, 4, "top+random", rng)[:2] == ["d0", "d1"]
    with pytest.raises(IrdistillError, match="unknown sampling"):
        pick(cands, 2, "best", rng)


def test_label_groups():
    groups = label_groups(TEACHER, QRELS, negatives=2, sampling="top")
    # labels mode takes positives from the qrels, in the run or not; q3 has no negative
    assert [g.query_id for g in groups] == ["q1", "q2"]
    assert groups[1].doc_ids == ["zz", "b", "a"] and groups[1].targets == [1.0, 0.0, 0.0]
    g = groups[0]
    assert g.doc_ids[0] in ("d3", "d5") and g.doc_ids[1:] == ["d1", "d2"]
    assert g.targets == [float(QRELS["q1"][g.doc_ids[0]]), 0.0, 0.0]


def test_teacher_scores_top_without_positive():
    groups = teacher_groups(TEACHER, None, targets="scores", negatives=2, sampling="top",
                            force_positive=False)
    by_q = {g.query_id: g for g in groups}
    assert set(by_q) == {"q1", "q2"}  # q3 has a single document: no group
    assert by_q["q1"].doc_ids == ["d1", "d2", "d3"] and by_q["q1"].targets == [6.0, 5.0, 4.0]
    assert by_q["q2"].doc_ids == ["b", "a", "c"] and by_q["q2"].targets == [2.5, 0.5, -1.0]


def test_teacher_scores_depth_random_and_all():
    kwargs = dict(targets="scores", negatives=1, depth=4, force_positive=False)
    e0 = teacher_groups(TEACHER, None, sampling="random", seed=3, epoch=0, **kwargs)
    again = teacher_groups(TEACHER, None, sampling="random", seed=3, epoch=0, **kwargs)
    assert [g.doc_ids for g in e0] == [g.doc_ids for g in again]  # seeded
    epochs = {tuple(teacher_groups(TEACHER, None, sampling="random", seed=3, epoch=e,
                                   **kwargs)[0].doc_ids) for e in range(8)}
    assert len(epochs) > 1  # the sample changes from epoch to epoch
    for docs in epochs:
        assert len(docs) == 2 and set(docs) <= {"d1", "d2", "d3", "d4"}  # within the depth
        assert list(docs) == sorted(docs)  # teacher order: best first
    every = teacher_groups(TEACHER, None, sampling="all", **kwargs)
    assert every[0].doc_ids == ["d1", "d2", "d3", "d4"] and every[0].targets == [6, 5, 4, 3]


def test_teacher_scores_force_positive():
    groups = teacher_groups(TEACHER, QRELS, targets="scores", negatives=3, sampling="top",
                            force_positive=True)
    assert [g.query_id for g in groups] == ["q1"]  # q2: positive not in the run; q3: no negative
    g = groups[0]
    assert g.doc_ids[0] in ("d3", "d5")
    assert g.doc_ids[1:] == ["d1", "d2", "d4"]  # judged documents are no negatives
    assert g.targets == [TEACHER["q1"][d] for d in g.doc_ids]
    positives = {teacher_groups(TEACHER, QRELS, targets="scores", negatives=1, epoch=e,
                                force_positive=True)[0].doc_ids[0] for e in range(6)}
    assert positives == {"d3", "d5"}  # every judged positive gets its turn
    with pytest.raises(IrdistillError, match="force_positive needs relevance judgements"):
        teacher_groups(TEACHER, {}, targets="scores", force_positive=True)


def test_teacher_ranks_targets():
    run = {"q": {"a": 0.1, "b": 0.9, "c": 0.5, "d": 0.5}}  # tie c/d broken by doc id (d first)
    (g,) = teacher_groups(run, None, targets="ranks", negatives=3, depth=10, sampling="top",
                          force_positive=False)
    assert g.doc_ids == ["b", "d", "c", "a"]
    assert g.targets == [10.0, 9.0, 8.0, 7.0]  # depth - rank + 1
    (g,) = MODES["teacher_ranks"](run=run, qrels={"q": {"c": 1}}, negatives=1, depth=4,
                                  sampling="top", force_positive=True, epoch=0, seed=0)
    assert g.doc_ids == ["c", "b"] and g.targets == [2.0, 4.0]
    with pytest.raises(TypeError, match="mining"):  # a labels-mode argument is not swallowed
        MODES["teacher_ranks"](run=run, qrels=None, epoch=0, mining=None)


# ---- triple files ----------------------------------------------------------------------------

def test_parse_triples_and_stream(tmp_path):
    path = tmp_path / "triples.tsv"
    path.write_text("9.5\t-1.25\tq1\tp1\tn1\n\n3\t4\tq2\tp2\tn2\n")
    triples = list(iter_triples(path))
    assert [(t.query_id, t.pos_id, t.neg_id, t.pos_score, t.neg_score) for t in triples] == [
        ("q1", "p1", "n1", 9.5, -1.25), ("q2", "p2", "n2", 3.0, 4.0)]
    groups = list(TripleGroups(path))
    assert groups[0].doc_ids == ["p1", "n1"] and groups[0].targets == [9.5, -1.25]
    assert [g.query_id for g in TripleGroups(path)] == ["q1", "q2"]  # re-iterable


@pytest.mark.parametrize("line,words", [
    ("1.0\t2.0\tq1\tp1", "expected 5 tab-separated columns, found 4"),
    ("high\t2.0\tq1\tp1\tn1", "pos_score 'high' is not a number"),
    ("1.0\tnan\tq1\tp1\tn1", "neg_score 'nan' is not finite"),
    ("1.0\t2.0\tq1\t\tn1", "empty pos_pid"),
])
def test_bad_triple_lines_name_file_and_line(tmp_path, line, words, monkeypatch):
    from irdistill.data import triples

    path = tmp_path / "t.tsv"
    path.write_text(f"1\t0\tq0\tp0\tn0\n{line}\n")
    with pytest.raises(IrdistillError) as info:  # the first lines are checked up front
        TripleGroups(path)
    assert f"{path}, line 2: {words}" in str(info.value)
    monkeypatch.setattr(triples, "CHECKED_LINES", 1)  # as if the bad line came later
    stream = iter(TripleGroups(path))  # the first line is fine
    assert next(stream).query_id == "q0"
    with pytest.raises(IrdistillError) as info:
        next(stream)
    assert f"{path}, line 2: {words}" in str(info.value)
    with pytest.raises(IrdistillError, match="line 1"):
        parse_triple(line, path, 1)


def test_triples_are_streamed_not_read_whole(tmp_path):
    """Groups come out before a bad line far down the file is reached."""
    path = tmp_path / "big.tsv"
    with open(path, "w") as f:
        for i in range(5000):
            f.write(f"{i}\t0\tq{i}\tp{i}\tn{i}\n")
        f.write("broken line\n")
    stream = iter(TripleGroups(path))
    assert [next(stream).query_id for _ in range(3)] == ["q0", "q1", "q2"]
    with pytest.raises(IrdistillError, match="line 5001"):
        list(stream)


def test_triple_file_errors_at_construction(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("1 2 q p n\n")  # spaces, not tabs
    with pytest.raises(IrdistillError, match="bad.tsv, line 1: expected 5 tab-separated"):
        TripleGroups(bad)
    with pytest.raises(IrdistillError, match="not found"):
        TripleGroups(tmp_path / "missing.tsv")
    blank = tmp_path / "blank.tsv"
    blank.write_text("\n\n")
    with pytest.raises(IrdistillError, match="no triples"):
        TripleGroups(blank)
    with pytest.raises(IrdistillError, match="needs data.triples"):
        build_groups("triples", epoch=0, triples=None)


def test_triples_max_queries(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("".join(f"1\t0\tq{i % 3}\tp{i}\tn{i}\n" for i in range(9)))
    kept = [g.query_id for g in build_groups("triples", epoch=0, triples=str(path),
                                             max_queries=2)]
    assert kept == ["q0", "q1"] * 3


# ---- staged configs --------------------------------------------------------------------------

def test_stages_resolve_on_top_of_the_base(tmp_path):
    path = tmp_path / "two-stage.yaml"
    path.write_text("""
loss: infonce
loss_params: {temperature: 0.5}
model: {name: minilm, max_doc_length: 64}
train: {lr: 1.0e-4, max_steps: 10}
stages:
  - {train: {max_steps: 5}}
  - loss: ranknet
    data: {mode: teacher_ranks, teacher_run: llm.trec, force_positive: false}
    train: {lr: 1.0e-5}
""")
    config = load_config(path)
    first = resolve_stage(config, 0)
    assert (first.loss, first.loss_params, first.train.max_steps, first.train.lr) == (
        "infonce", {"temperature": 0.5}, 5, 1e-4)
    assert first.model.name == "minilm" and first.stages == []
    second = resolve_stage(config, 1, previous_model="/out/stage-1/model")
    assert (second.loss, second.loss_params) == ("ranknet", {})  # the base's params belong to infonce
    assert second.data.mode == "teacher_ranks" and second.data.force_positive is False
    assert second.train.lr == 1e-5 and second.train.max_steps == 10
    assert second.model.name == "/out/stage-1/model" and second.model.max_doc_length == 64


@pytest.mark.parametrize("stages,words", [
    ([{"trian": {}}], "unknown config key 'stages[0].trian' (did you mean 'train'?)"),
    ([{"train": {"lr": "fast"}}], "config.stages[0].train.lr: expected float"),
    ([{}, {"model": {"name": "other"}}], "config.stages[1]: model.name is set by the previous"),
    ([{"stages": []}], "a stage cannot have stages of its own"),
])
def test_bad_stages_fail_at_load(tmp_path, stages, words):
    with pytest.raises(IrdistillError) as info:
        load_config(base={"stages": stages})
    assert words in str(info.value)


def test_config_without_stages_is_unchanged():
    assert Config().stages == [] and Config().data.triples is None
