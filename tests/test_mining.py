"""Hard negatives mined in labels mode: rank window, false-negative margins, reproducibility."""
import hashlib
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from irdistill.config import Config, check_config, config_hash, load_config, to_dict
from irdistill.data.sampling import MINING_KEYS, Mining, label_groups, mining_options
from irdistill.data.trec import write_run
from irdistill.errors import IrdistillError
from irdistill.train.sources import group_source
from irdistill.train.splade import SpladeConfig

# q1: d1..d10 ranked 1..10; d2 and d4 judged relevant, d9 judged not relevant
RUN = {"q1": {f"d{i}": float(11 - i) for i in range(1, 11)}}
QRELS = {"q1": {"d2": 1, "d4": 2, "d9": 0}}
# the teacher: positives 5.0 and 3.0 (the margin counts from the lower, 3.0); d7 unscored
TEACHER = {"q1": {"d1": 4.0, "d2": 5.0, "d3": 2.95, "d4": 3.0, "d5": 2.5, "d6": 1.0,
                  "d8": 0.0, "d9": -1.0, "d10": 2.75}}


def negatives(groups):
    return [set(g.doc_ids[1:]) for g in groups]


def test_without_mining_the_groups_are_unchanged():
    plain = label_groups(RUN, QRELS, negatives=20, sampling="all")
    assert negatives(plain) == [{"d1", "d3", "d5", "d6", "d7", "d8", "d9", "d10"}]
    assert label_groups(RUN, QRELS, negatives=3, seed=5) == label_groups(
        RUN, QRELS, negatives=3, seed=5, mining=Mining())


def test_absolute_margin_drops_exactly_the_candidates_near_the_positive():
    mining = Mining(margin=0.5, teacher=TEACHER)
    groups = label_groups(RUN, QRELS, negatives=20, sampling="all", mining=mining)
    # dropped: d1 (4.0, above the positive), d3 (2.95) and d10 (2.75) within 0.5 of 3.0, d7
    # (not scored); d5 = 2.5 is exactly 0.5 below: kept, as sentence-transformers keeps it
    assert negatives(groups) == [{"d5", "d6", "d8", "d9"}]
    assert [g.doc_ids[1:] for g in groups] == [["d5", "d6", "d8", "d9"]]  # the run's order


def test_relative_margin_and_both_margins():
    groups = label_groups(RUN, QRELS, negatives=20, sampling="all",
                          mining=Mining(relative_margin=0.5, teacher=TEACHER))
    assert negatives(groups) == [{"d6", "d8", "d9"}]  # above 3 - 1.5 = 1.5 dropped
    both = label_groups(RUN, QRELS, negatives=20, sampling="all",
                        mining=Mining(margin=2.5, relative_margin=0.5, teacher=TEACHER))
    assert negatives(both) == [{"d8", "d9"}]  # 1.0 + 2.5 > 3.0
    # a negative positive score: the relative margin still lies below it
    run = {"q": {"p": 3.0, "a": 2.0, "b": 1.0, "c": 0.0}}
    teacher = {"q": {"p": -2.0, "a": -2.5, "b": -3.0, "c": -4.0}}
    groups = label_groups(run, {"q": {"p": 1}}, negatives=5, sampling="all",
                          mining=Mining(relative_margin=0.5, teacher=teacher))
    assert negatives(groups) == [{"b", "c"}]  # threshold -2 - 1 = -3, kept when <= -3


def test_rank_window_counts_the_runs_ranks():
    window = Mining(rank_range=(2, 8))  # ranks 3..8: d3..d8, less the positive d4
    groups = label_groups(RUN, QRELS, negatives=20, sampling="all", mining=window)
    assert negatives(groups) == [{"d3", "d5", "d6", "d7", "d8"}]
    mined = Mining(rank_range=(2, 8), margin=0.5, teacher=TEACHER)
    groups = label_groups(RUN, QRELS, negatives=20, sampling="all", mining=mined)
    assert negatives(groups) == [{"d5", "d6", "d8"}]
    top = label_groups(RUN, QRELS, negatives=2, sampling="top", mining=mined)
    assert top[0].doc_ids[1:] == ["d5", "d6"]  # top = the hardest survivors in the run's order


def test_queries_the_teacher_cannot_check_are_skipped_and_counted(caplog):
    run = {**RUN, "q2": {"x": 2.0, "y": 1.0}}
    qrels = {**QRELS, "q2": {"x": 1}}
    with caplog.at_level(logging.INFO, logger="irdistill.data.sampling"):
        groups = label_groups(run, qrels, negatives=20, sampling="all",
                              mining=Mining(margin=0.5, teacher=TEACHER))
    assert [g.query_id for g in groups] == ["q1"]  # the teacher scored no positive of q2
    text = caplog.text
    assert "of 8 candidates in the run's top-depth, dropped 3 (37.5%)" in text
    assert "absolute 0.5 margin" in text and "1 (12.5%) the teacher did not score" in text
    assert "skipped 1 queries whose positives the teacher did not score" in text
    with pytest.raises(IrdistillError, match="scores none of the judged positives"):
        label_groups(run, qrels, mining=Mining(margin=0.5, teacher={"q2": {"y": 1.0}}))


def test_a_judged_positive_is_never_a_negative():
    rng = np.random.default_rng(0)
    run = {f"q{q}": {f"d{i}": float(rng.normal()) for i in range(40)} for q in range(20)}
    qrels = {q: {f"d{i}": int(rng.integers(0, 3)) for i in rng.choice(40, 8, replace=False)}
             for q in run}
    teacher = {q: {d: float(rng.normal()) for d in docs} for q, docs in run.items()}
    for sampling in ("top", "random", "top+random", "all"):
        for mining in (None, Mining(rank_range=(0, 5)), Mining(margin=0.0, teacher=teacher),
                       Mining(rank_range=(3, 30), relative_margin=0.1, teacher=teacher)):
            for epoch in range(3):
                for g in label_groups(run, qrels, negatives=6, depth=30, sampling=sampling,
                                      epoch=epoch, mining=mining):
                    assert qrels[g.query_id][g.doc_ids[0]] > 0
                    assert all(qrels[g.query_id].get(d, 0) <= 0 for d in g.doc_ids[1:])
                    assert g.targets[1:] == [float(qrels[g.query_id].get(d, 0))
                                             for d in g.doc_ids[1:]]


def test_same_seed_same_groups(tmp_path):
    rng = np.random.default_rng(1)
    run = {f"q{q}": {f"d{i}": float(rng.normal()) for i in range(50)} for q in range(10)}
    qrels = {q: {"d0": 1, "d1": 1} for q in run}
    teacher = {q: {d: float(rng.normal()) for d in docs} for q, docs in run.items()}
    mining = Mining(rank_range=(5, 50), margin=0.1, teacher=teacher)
    first = label_groups(run, qrels, negatives=4, seed=3, epoch=1, mining=mining)
    assert first == label_groups(run, qrels, negatives=4, seed=3, epoch=1, mining=mining)
    assert first != label_groups(run, qrels, negatives=4, seed=4, epoch=1, mining=mining)


def test_config_keys_reach_the_group_builder(tmp_path):
    """data.negatives_range / false_negative_margin / teacher_run through the engine's builder."""
    teacher = tmp_path / "teacher.trec"
    write_run(teacher, TEACHER, digits=9)
    config = load_config(overrides=["data.negatives_range=[2, 8]",
                                    "data.false_negative_margin=0.5",
                                    f"data.teacher_run={teacher}", "data.negatives=20",
                                    "data.sampling=all", "data.depth=10"])
    check_config(config)
    assert set(mining_options(config.data)) == {"mining"}
    groups = group_source(config.data).groups(config, SimpleNamespace(qrels=QRELS), RUN)
    assert negatives(groups) == [{"d5", "d6", "d8"}]
    assert mining_options(Config().data) == {}


@pytest.mark.parametrize("sets, words", [
    (["data.negatives_range=[5, 2]"], ["negatives_range=[5, 2]", "0 <= min < max"]),
    (["data.negatives_range=[0, 200]"], ["max <= data.depth (100)"]),
    (["data.negatives_range=[3]"], ["must be [min, max]"]),
    (["data.false_negative_margin=0.1"], ["need data.teacher_run", "--add-positives"]),
    (["data.false_negative_margin=-1", "data.teacher_run=t.trec"], ["at least 0"]),
    (["data.mode=teacher_scores", "data.teacher_run=t.trec", "data.negatives_range=[0, 5]"],
     ["mines negatives for data.mode=labels"]),
])
def test_bad_mining_settings_fail_at_check(sets, words):
    with pytest.raises(IrdistillError) as info:
        check_config(load_config(overrides=sets))
    for word in words:
        assert word in str(info.value)


def _hash_without_mining_keys(config) -> str:
    """The hash as it was computed before the mining keys existed."""
    from irdistill.config import HASH_IGNORED, HASH_NEUTRAL

    tree = to_dict(config)
    tree["data"] = {k: v for k, v in tree["data"].items() if k not in MINING_KEYS}
    for section, key in HASH_IGNORED:  # keys added later and never hashed (train.report_to)
        tree[section] = {k: v for k, v in tree[section].items() if k != key}
    for (section, key), neutral in HASH_NEUTRAL.items():
        if key not in MINING_KEYS and tree.get(section, {}).get(key, object()) == neutral:
            tree[section] = {k: v for k, v in tree[section].items() if k != key}
    blob = json.dumps(tree, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def test_config_hashes_unchanged_without_mining():
    # the hashes of the defaults before data.negatives_range and the margins existed
    assert config_hash(Config()) == "dc5ea9244b84"
    assert config_hash(SpladeConfig()) == "93754f197742"
    for path in sorted((Path(__file__).parent.parent / "configs").glob("*.yaml")):
        config = load_config(path)
        assert config_hash(config) == _hash_without_mining_keys(config), path
    mined = load_config(overrides=["data.false_negative_margin=0.1"])
    assert config_hash(mined) != config_hash(Config())


def test_a_missing_teacher_run_fails_before_anything_is_read(tmp_path):
    from irdistill.train.engine import check_inputs

    config = load_config(overrides=["data.false_negative_margin=0.1",
                                    f"data.teacher_run={tmp_path / 'nope.trec'}"])
    with pytest.raises(IrdistillError, match="nope.trec: data.teacher_run file not found"):
        check_inputs(config, have_collection=True, check_model=False)
    check_inputs(load_config(overrides=[f"data.teacher_run={tmp_path / 'nope.trec'}"]),
                 have_collection=True, check_model=False)  # not read without a margin: as before


def test_provenance_fingerprints_the_mining_teacher(tmp_path, tiny_bert, scifact_available):
    """A labels-mode training whose negatives were filtered by a teacher records that teacher's
    file (a changed teacher changes the groups), and only the candidate run without mining."""
    from typer.testing import CliRunner

    from irdistill.cli import app
    from irdistill.data.collection import load_collection
    from irdistill.provenance import file_fingerprint
    from irdistill.retrieval.bm25 import bm25_run

    train = load_collection("beir/scifact/train")
    run = bm25_run(train, k=20, query_ids=sorted(train.qrels)[:4])
    write_run(tmp_path / "bm25.trec", run, tag="bm25")
    write_run(tmp_path / "teacher.trec", run, tag="teacher")  # a stand-in teacher
    common = ["--set", "data.collection=beir/scifact/train",
              "--set", f"data.run={tmp_path / 'bm25.trec'}", "--set", "data.depth=20",
              "--set", f"model.name={tiny_bert}", "--set", "model.max_doc_length=16",
              "--set", "train.max_steps=1", "--set", "train.batch_size=2",
              "--set", f"data.teacher_run={tmp_path / 'teacher.trec'}"]
    for name, extra in (("mined", ["--set", "data.false_negative_margin=0.5"]), ("plain", [])):
        result = CliRunner().invoke(app, ["train", "--output", str(tmp_path / name),
                                          *common, *extra])
        assert result.exit_code == 0, result.output
    files = {name: json.loads((tmp_path / name / "provenance.json").read_text())["data"]["files"]
             for name in ("mined", "plain")}
    assert files["mined"] == {"run": file_fingerprint(tmp_path / "bm25.trec"),
                              "teacher_run": file_fingerprint(tmp_path / "teacher.trec")}
    assert files["plain"] == {"run": file_fingerprint(tmp_path / "bm25.trec")}
