"""Cross-encoder ensembles (normalisation, the teacher store, reuse and resume), importers of
published targets, and training straight from what ``teach`` writes."""
import json
import math

import pytest
from typer.testing import CliRunner

from irdistill.cli import app
from irdistill.data.trec import read_run
from irdistill.errors import IrdistillError
from irdistill.teachers.ensemble import (ScoringSettings, Teacher, build_ensemble, candidates_of,
                                         combine, normalise)

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


# -- normalisation and combination ---------------------------------------------------------------
def test_normalise_by_hand():
    scores = {"a": 1.0, "b": 3.0, "c": 5.0}
    assert normalise(scores, "none") == scores
    std = math.sqrt(8 / 3)
    z = normalise(scores, "zscore")
    assert z == pytest.approx({"a": -2 / std, "b": 0.0, "c": 2 / std})
    assert normalise(scores, "minmax") == {"a": 0.0, "b": 0.5, "c": 1.0}
    assert normalise({"a": 2.0, "b": 2.0}, "zscore") == {"a": 0.0, "b": 0.0}
    assert normalise({"a": 2.0, "b": 2.0}, "minmax") == {"a": 0.0, "b": 0.0}
    with pytest.raises(IrdistillError, match="did you mean 'zscore'"):
        normalise(scores, "zscor")


def test_combine_means_over_common_pairs():
    a = {"q1": {"d1": 1.0, "d2": 3.0, "d3": 5.0}, "q2": {"d1": 0.0}}
    b = {"q1": {"d1": 10.0, "d2": 20.0}, "q3": {"d9": 1.0}}
    raw = combine({"a": a, "b": b}, "none")
    assert raw.run == {"q1": {"d1": 5.5, "d2": 11.5}}
    assert raw.dropped == 1 and raw.queries_dropped == ["q2", "q3"]
    minmax = combine({"a": a, "b": b}, "minmax")  # normalised over the common pairs only
    assert minmax.run == {"q1": {"d1": 0.0, "d2": 1.0}}
    z = combine({"a": a, "b": b}, "zscore").run["q1"]
    assert z == pytest.approx({"d1": -1.0, "d2": 1.0})
    with pytest.raises(IrdistillError, match="share no"):
        combine({"a": {"q1": {"d1": 1.0}}, "b": {"q1": {"d2": 1.0}}})


def test_teacher_names_and_candidates(tmp_path):
    assert Teacher.parse("big=runs/x/model") == Teacher("big", "runs/x/model")
    assert Teacher.parse("runs/teacher-a/model").name == "teacher-a"
    assert Teacher.parse("minilm") == Teacher("minilm", "minilm")
    run_file = tmp_path / "scores.trec"
    run_file.write_text("q1 Q0 d1 1 2.0 t\n")
    assert Teacher.parse(str(run_file)).is_run and not Teacher.parse("minilm").is_run
    run = {"q1": {"d1": 3.0, "d2": 2.0, "d3": 1.0}, "q2": {"d4": 1.0}}
    qrels = {"q1": {"d3": 1, "d9": 2, "d8": 0}, "q2": {"d4": 1}}
    assert candidates_of(run, 2) == {"q1": ["d1", "d2"], "q2": ["d4"]}
    assert candidates_of(run, 2, qrels, add_positives=True) == {"q1": ["d1", "d2", "d3", "d9"],
                                                                "q2": ["d4"]}
    with pytest.raises(IrdistillError, match="needs relevance judgements"):
        candidates_of(run, 2, {}, add_positives=True)


# -- ensembles of tiny cross-encoders ------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_bert_b(tmp_path_factory, tiny_bert):
    """A second tiny BERT teacher: same shape, other random weights."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(1)
    config = BertForSequenceClassification.from_pretrained(tiny_bert).config
    folder = tmp_path_factory.mktemp("tiny-bert-b")
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    return str(folder)


@pytest.fixture
def candidates_file(tmp_path):
    path = tmp_path / "cands.trec"
    path.write_text("".join(f"{q} Q0 {d} {r} {5 - r} bm25\n" for q in ("q1", "q2")
                            for r, d in enumerate(["d1", "d2", "d3", "d4"], start=1)))
    return path


def test_ensemble_command_stores_teachers_and_reuses_them(tmp_path, tiny_bert, tiny_bert_b,
                                                          beir_folder, candidates_file,
                                                          monkeypatch):
    out = tmp_path / "targets"
    result = invoke("teach", "ensemble", beir_folder, "--split", "test", "--run", candidates_file,
                    "--teacher", f"a={tiny_bert}", "--teacher", f"b={tiny_bert_b}",
                    "--depth", 3, "--output", out)
    assert result.exit_code == 0, result.output
    assert "teacher a: scored" in result.output and "teacher b: scored" in result.output
    ensemble = read_run(out / "ensemble.trec")
    teacher_files = sorted((out / "teachers").glob("*.trec"))
    assert [p.name.split("-")[0] for p in teacher_files] == ["a", "b"]
    assert not list((out / "teachers").glob("*.partial.jsonl"))
    a, b = (read_run(p) for p in teacher_files)
    assert set(a) == {"q1", "q2"} and all(sorted(d) == ["d1", "d2", "d3"] for d in a.values())
    for q in ensemble:  # the mean of raw scores (runs are written to 6 significant digits)
        for d, s in ensemble[q].items():
            assert s == pytest.approx((a[q][d] + b[q][d]) / 2, rel=1e-5, abs=1e-6)
    record = json.loads((out / "ensemble.provenance.json").read_text())
    assert (record["kind"], record["normalisation"], record["depth"]) == ("ensemble", "none", 3)
    assert record["source_run"] == str(candidates_file) and record["pairs"] == 6
    assert [t["name"] for t in record["teachers"]] == ["a", "b"]
    assert all(len(t["model_fingerprint"]) == 16 for t in record["teachers"])
    assert "torch" in record["versions"] and record["queries"] == 2
    teacher_record = json.loads(teacher_files[0].with_name(
        teacher_files[0].stem + ".provenance.json").read_text())
    assert teacher_record["kind"] == "teacher" and teacher_record["model"] == tiny_bert

    # a new ensemble of the same teachers on the same candidates scores nothing
    def no_model(*args, **kwargs):
        raise AssertionError("a stored teacher was scored again")

    monkeypatch.setattr("irdistill.models.cross_encoder.CrossEncoder.from_pretrained", no_model)
    again = invoke("teach", "ensemble", beir_folder, "--split", "test", "--run", candidates_file,
                   "--teacher", f"a={tiny_bert}", "--teacher", f"b={tiny_bert_b}",
                   "--depth", 3, "--normalisation", "zscore", "--name", "ens-z", "--output", out)
    assert again.exit_code == 0, again.output
    assert "teacher a: reused" in again.output and "teacher b: reused" in again.output
    zrun = read_run(out / "ens-z.trec")
    expected = combine({"a": a, "b": b}, "zscore").run
    assert zrun == pytest.approx({q: pytest.approx(v, abs=1e-5) for q, v in expected.items()})
    renamed = invoke("teach", "ensemble", beir_folder, "--split", "test", "--run",
                     candidates_file, "--teacher", f"first={tiny_bert}", "--depth", 3,
                     "--name", "one", "--output", out)
    assert renamed.exit_code == 0 and "teacher first: reused" in renamed.output  # same model
    assert read_run(out / "one.trec") == read_run(teacher_files[0])
    # other candidates (depth 4) are a different candidate set: scoring is needed again
    deeper = invoke("teach", "ensemble", beir_folder, "--split", "test", "--run",
                    candidates_file, "--teacher", f"a={tiny_bert}", "--depth", 4, "--output", out)
    assert deeper.exit_code == 1 and isinstance(deeper.exception, AssertionError)


def test_interrupted_teacher_scoring_resumes_from_its_checkpoint(tmp_path, tiny_bert,
                                                                 beir_folder):
    from irdistill.data.collection import load_collection
    from irdistill.provenance import candidates_digest, model_fingerprint
    from irdistill.teachers.ensemble import as_run, score_teacher
    from irdistill.teachers.store import TeacherStore

    collection = load_collection(beir_folder, "test")
    candidates = {"q1": ["d1", "d2"], "q2": ["d2", "d3"]}
    store = TeacherStore(tmp_path)
    teacher = Teacher("a", tiny_bert)
    key = store.key("a", model=model_fingerprint(tiny_bert), candidates=candidates_digest(candidates),
                    max_query_length=None, max_doc_length=None, precision="fp32")
    # q1 was scored before the interruption (scores no model would give)
    store.checkpoint_path(key).parent.mkdir(parents=True)
    store.checkpoint_path(key).write_text(json.dumps({"q1": {"d1": 111.0, "d2": 222.0}}) + "\n")
    run, path, reused = score_teacher(teacher, collection, candidates, store, ScoringSettings(
        batch_size=2, device="cpu", block_pairs=2), show_progress=False)  # a block per query
    assert not reused and path == store.run_path(key)
    assert run["q1"] == {"d1": 111.0, "d2": 222.0}  # kept, not scored again
    assert abs(run["q2"]["d2"]) < 100 and read_run(path)["q1"] == {"d1": 111.0, "d2": 222.0}
    assert not store.checkpoint_path(key).exists()
    assert as_run(candidates)["q1"] == {"d1": 2.0, "d2": 1.0}


def test_teacher_given_as_a_run_file(tmp_path, tiny_bert, beir_folder):
    from irdistill.data.collection import load_collection

    scores = tmp_path / "imported.trec"
    scores.write_text("q1 Q0 d1 1 9.0 x\nq1 Q0 d2 2 1.0 x\nq2 Q0 d2 1 5.0 x\n")
    collection = load_collection(beir_folder, "test")
    run = {"q1": {"d1": 2.0, "d2": 1.0}, "q2": {"d2": 2.0, "d3": 1.0}}
    result = build_ensemble([f"imp={scores}", Teacher("a", tiny_bert)], collection, run,
                            tmp_path / "out", depth=2, normalisation="minmax",
                            settings=ScoringSettings(device="cpu"), show_progress=False)
    assert result.reused == ["imp"] and result.teacher_runs["imp"] == scores
    assert sorted(result.run["q1"]) == ["d1", "d2"] and list(result.run["q2"]) == ["d2"]
    assert result.provenance["pairs_left_out"] == 1  # (q2, d3): no score in the imported run


@pytest.mark.parametrize("args,words", [
    (["--normalisation", "zscor"], "unknown normalisation 'zscor' (did you mean 'zscore'?)"),
    (["--teacher", "x=minilm"], "two teachers have the same name: x, x"),
    (["--add-positives", "--run", "RUN", "--split", "train"], None),
])
def test_ensemble_errors_are_one_line(tmp_path, beir_folder, candidates_file, args, words):
    args = [str(candidates_file) if a == "RUN" else a for a in args]
    base = ["teach", "ensemble", beir_folder, "--teacher", "x=minilm", "--output", tmp_path / "o"]
    if "--split" not in args:
        base += ["--split", "test", "--run", candidates_file]
    line = one_error_line(invoke(*base, *args))
    if words is not None:
        assert line.startswith(f"error: {words}")
    else:  # the train split judges only q2; q1 of the run is not among its queries
        assert "query 'q1' is not in collection" in line
    assert not (tmp_path / "o" / "ensemble.trec").exists()


# -- importers -----------------------------------------------------------------------------------
def test_import_triples_as_a_teacher_run(tmp_path):
    triples = tmp_path / "triples.tsv"
    triples.write_text("9.5\t1.0\tq1\tp1\tn1\n9.5\t2.0\tq1\tp1\tn2\n9.7\t0.5\tq2\tp3\tn1\n"
                       "9.0\t2.0\tq1\tp1\tn3\n")
    out = tmp_path / "hofstaetter.trec"
    result = invoke("teach", "import", triples, "--format", "triples", "--output", out)
    assert result.exit_code == 0, result.output
    assert "wrote 6 scored pairs of 2 queries" in result.output
    assert "note: 1 repeated pairs had a different score" in result.output
    run = read_run(out)
    assert run["q1"] == pytest.approx({"p1": (9.5 + 9.5 + 9.0) / 3, "n1": 1.0, "n2": 2.0,
                                       "n3": 2.0})
    assert run["q2"] == {"p3": 9.7, "n1": 0.5}
    record = json.loads((tmp_path / "hofstaetter.provenance.json").read_text())
    assert record["format"] == "triples" and record["report"]["conflicts"] == 1
    assert record["report"]["lines"] == 4 and record["source"] == str(triples)
    limited = invoke("teach", "import", triples, "--format", "triples", "--max-queries", 1,
                     "--output", tmp_path / "one.trec")
    assert limited.exit_code == 0 and list(read_run(tmp_path / "one.trec")) == ["q1"]


def test_import_llm_run_by_rank_column(tmp_path):
    """A Rank-DistiLLM-style run whose order is the rank column's (its scores disagree)."""
    llm_run = tmp_path / "rankzephyr.run"
    llm_run.write_text("q1 Q0 dB 1 0.1 rz\nq1 Q0 dA 2 0.9 rz\nq1 Q0 dC 3 0.5 rz\n"
                       "q2 Q0 dA 1 3 rz\nq2 Q0 dB 2 2 rz\n")
    out = tmp_path / "ranks.trec"
    result = invoke("teach", "import", llm_run, "--targets", "ranks", "--order-by", "rank",
                    "--output", out)
    assert result.exit_code == 0, result.output
    assert "note: 1 queries order their documents differently" in result.output
    run = read_run(out)
    assert run["q1"] == {"dB": 3.0, "dA": 2.0, "dC": 1.0}  # depth - rank + 1, depth 3
    assert run["q2"] == {"dA": 3.0, "dB": 2.0}
    by_score = invoke("teach", "import", llm_run, "--targets", "ranks", "--depth", 2,
                      "--output", tmp_path / "s.trec")
    assert by_score.exit_code == 0
    assert read_run(tmp_path / "s.trec")["q1"] == {"dA": 2.0, "dC": 1.0}
    kept = invoke("teach", "import", llm_run, "--order-by", "rank", "--output", tmp_path / "k")
    assert "use --targets ranks" in one_error_line(kept)


@pytest.mark.parametrize("content,words", [
    ("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 x 1.0 t\n", "line 2: rank 'x' is not an integer"),
    ("q1 Q0 d1 1 2.0 t\nq1 Q0 d1 2 1.0 t\n", "line 2: document 'd1' appears twice"),
    ("q1 Q0 d1 1 nan t\n", "line 1: score 'nan' is not finite"),
    ("q1 Q0 d1 1 2.0\n", "line 1: expected 6 columns"),
])
def test_import_checks_every_line(tmp_path, content, words):
    bad = tmp_path / "bad.run"
    bad.write_text(content)
    line = one_error_line(invoke("teach", "import", bad, "--output", tmp_path / "o.trec"))
    assert f"bad.run, {words}" in line
    assert not (tmp_path / "o.trec").exists()


def test_import_checks_ids_against_the_collection(tmp_path, beir_folder):
    good = tmp_path / "good.run"
    good.write_text("q1 Q0 d1 1 2.0 t\nq2 Q0 d2 1 1.0 t\n")
    ok = invoke("teach", "import", good, "--collection", beir_folder, "--output", tmp_path / "o")
    assert ok.exit_code == 0, ok.output
    bad = tmp_path / "bad.run"
    bad.write_text("q1 Q0 d1 1 2.0 t\nq1 Q0 d77 2 1.0 t\n")
    line = one_error_line(invoke("teach", "import", bad, "--collection", beir_folder,
                                 "--output", tmp_path / "x"))
    assert "1 document id(s) not in the collection" in line and "d77" in line


# -- what teach writes trains a student as it is -------------------------------------------------
@pytest.mark.parametrize("loss", ["margin_mse", "kl", "mse"])
def test_training_from_the_ensemble_run(tmp_path, tiny_bert, tiny_bert_b, beir_folder,
                                        candidates_file, loss):
    from irdistill.data.collection import load_collection

    collection = load_collection(beir_folder, "test")
    targets = build_ensemble([Teacher("a", tiny_bert), Teacher("b", tiny_bert_b)], collection,
                             read_run(candidates_file), tmp_path / "t", depth=3,
                             normalisation="zscore", add_positives=True, show_progress=False)
    out = tmp_path / "student"
    result = invoke("train", "--output", out, "--set", f"model.name={tiny_bert}",
                    "--set", f"data.collection={beir_folder}", "--set", "data.split=test",
                    "--set", "data.mode=teacher_scores", "--set", f"data.teacher_run={targets.path}",
                    "--set", "data.negatives=2", "--set", f"loss={loss}",
                    "--set", "train.max_steps=1", "--set", "train.batch_size=2",
                    "--set", "train.warmup_ratio=0", "--set", "train.logging_steps=1")
    assert result.exit_code == 0, result.output
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["data"]["source"] == str(targets.path) and provenance["data"]["groups"] == 2
    logged = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    (step,) = [s for s in logged if "loss" in s]
    assert math.isfinite(step["loss"]) and step["grad_norm"] > 0


# -- the KD vs contrastive script at toy scale ---------------------------------------------------
def test_kd_vs_contrastive_script_at_toy_scale(tmp_path, tiny_bert, scifact_available, capsys,
                                               monkeypatch):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "kd_vs_contrastive.py"
    spec = importlib.util.spec_from_file_location("kd_vs_contrastive", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "kd"
    args = ["--model", tiny_bert, "--student-layers", "1", "--teachers", "infonce:1", "bce:2",
            "--teacher-steps", "2", "--student-steps", "1", "--batch-size", "2",
            "--teacher-queries", "8", "--train-queries", "6", "--train-depth", "4",
            "--depth", "5", "--max-doc-length", "32", "--precision", "fp32",
            "--output", str(out)]
    assert script.main(args) == 0
    rows = json.loads((out / "results.json").read_text())
    untrained = f"untrained {Path(tiny_bert).name} L1"
    assert list(rows) == ["BM25", "teacher-infonce-s1", "teacher-bce-s2", "ensemble (zscore)",
                          untrained, "student infonce (contrastive)",
                          "student margin_mse (KD from ensemble)", "student kl (KD from ensemble)"]
    for row in rows.values():
        assert 0 <= row["nDCG@10"] <= 1 and row["queries"] == 300
    # the ensemble's training targets: 6 queries, top-4 + judged positives, two stored teachers
    targets = read_run(out / "targets-train" / "ensemble-zscore.trec")
    assert len(targets) == 6 and all(4 <= len(d) <= 6 for d in targets.values())
    # (two steps: the first is warm-up at learning rate 0, so the teachers differ only after it)
    assert len(list((out / "targets-train" / "teachers").glob("*.trec"))) == 2
    record = json.loads((out / "targets-train" / "ensemble-zscore.provenance.json").read_text())
    assert record["normalisation"] == "zscore" and record["add_positives"] is True
    # the KD students trained on those targets, the contrastive one on the labels
    manifest = json.loads((out / "students" / "experiment.json").read_text())
    students = {c["system"].split()[1]: out / "students" / c["folder"] for c in manifest["cells"]}
    assert sorted(students) == ["infonce", "kl", "margin_mse"]
    for loss, folder in students.items():
        provenance = json.loads((folder / "provenance.json").read_text())
        assert provenance["config"]["model"]["num_hidden_layers"] == 1
        expected = "labels" if loss == "infonce" else "teacher_scores"
        assert provenance["data"]["mode"] == expected
        if expected == "teacher_scores":
            assert provenance["data"]["source"] == str(out / "targets-train" /
                                                       "ensemble-zscore.trec")
    # the test ensemble is the mean of the teachers' z-scores over the same candidates
    teachers = json.loads((out / "teachers" / "experiment.json").read_text())
    runs = {e["system"]: read_run(out / "teachers" / e["file"].replace(".json", ".trec"))
            for e in teachers["evaluations"] if e["kind"] == "trained"}
    assert set(runs) == {"teacher-infonce-s1", "teacher-bce-s2"}
    assert all(len(docs) == 5 for run in runs.values() for docs in run.values())
    ensemble = combine(runs, "zscore").run
    from irdistill.data.collection import load_collection
    from irdistill.evaluation.metrics import evaluate

    test = load_collection("beir/scifact/test")
    assert abs(evaluate(ensemble, test.qrels, ["nDCG@10"]).aggregate["nDCG@10"]
               - rows["ensemble (zscore)"]["nDCG@10"]) < 1e-12
    table = (out / "table.md").read_text()
    assert "| ensemble (zscore) |" in table and table in capsys.readouterr().out

    # run again: every training, scoring and re-ranking is reused
    def no_model(*args, **kwargs):
        raise AssertionError("finished work was redone")

    monkeypatch.setattr("irdistill.models.cross_encoder.CrossEncoder.from_pretrained", no_model)
    assert script.main(args) == 0
    assert json.loads((out / "results.json").read_text()) == rows
    with pytest.raises(IrdistillError, match="not LOSS:SEED"):
        script.main(["--teachers", "infonse:1", "--output", str(tmp_path / "bad")])
