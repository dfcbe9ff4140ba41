"""`adapt-reranker`: a re-ranker adapted to an unlabelled target corpus in one command, by
pseudo-queries + a teacher, or by MLM of its lower layers; the target's queries and judgements
read by the evaluation only; every step reused on a rerun; training resumed after a kill."""
import json

import pytest
import torch
from splade_helpers import parameters, tiny_mlm  # noqa: F401  (fixture)
from test_llm_teacher import tiny_llm  # noqa: F401  (fixture)
from test_resume import finish, kill_when, start
from tiny_models import QUESTIONS, TOPICS
from toy_collection import Untouchable, write_toy_collection
from typer.testing import CliRunner

from irdistill.adapt.reranker import adapt_reranker, load_adapt_config
from irdistill.cli import app
from irdistill.data.collection import Collection, load_collection
from irdistill.errors import IrdistillError


def write_target(folder):
    """8 topics x 3 documents of two sentences each (pseudo-queries need two), the toy
    collection's questions and judgements."""
    folder.mkdir(parents=True)
    with open(folder / "docs.tsv", "w") as handle:
        for topic, texts in TOPICS.items():
            for i in range(3):
                handle.write(f"{topic}-{i}\t{texts[i]} {texts[(i + 1) % 3]}\n")
    (folder / "queries.tsv").write_text("".join(f"q-{t}\t{q}\n" for t, q in QUESTIONS.items()))
    (folder / "qrels.txt").write_text("".join(f"q-{t} 0 {t}-0 1\n" for t in QUESTIONS))
    return folder


def tiny_settings(target, model, backbone=None, source=None):
    sets = [f"model={model}", f"target={target}", "teachers=[bm25]", "teacher_depth=6",
            "pseudo.queries=12", "pseudo.min_words=4", "depth=5", "precision=fp32",
            "training.model.max_doc_length=32", "training.data.depth=6",
            "training.data.negatives=2", "training.train.batch_size=2",
            "training.train.max_steps=4", "training.train.save_steps=2",
            "training.train.lr=1e-3", "training.train.head_lr=1e-3",
            "training.train.precision=fp32", "training.train.logging_steps=1"]
    if backbone is not None:
        sets += [f"backbone={backbone}", "layers=1", "mlm.steps=2", "mlm.batch_size=2",
                 "mlm.max_length=16", "mlm.lr=1e-2", f"source_training.data.collection={source}",
                 f"source_training.model.name={backbone}", "source_training.data.depth=6",
                 "source_training.data.negatives=2", "source_training.model.max_doc_length=32",
                 "source_training.train.max_minutes=null", "source_training.train.max_steps=2",
                 "source_training.train.batch_size=2", "source_training.train.lr=1e-2",
                 "source_training.train.head_lr=1e-2", "source_training.train.precision=fp32"]
    return sets


def test_adaptation_reads_only_the_targets_documents(tmp_path, tiny_bert, tiny_mlm):
    """Both methods run to their adapted models on a target whose queries and judgements fail
    on any access; the evaluation, which needs them, is the one step that fails on it."""
    target_folder = write_target(tmp_path / "target")
    source = write_toy_collection(tmp_path / "source")["folder"]
    real = load_collection(target_folder)
    blind = Collection("target", real.docs, queries=Untouchable(), qrels=Untouchable())
    config = load_adapt_config(overrides=tiny_settings(target_folder, tiny_bert, tiny_mlm, source)
                               + ["methods=[pseudo,mlm]", "evaluate=false"])
    report = adapt_reranker(config, tmp_path / "out", show_progress=False, target=blind)
    assert set(report["models"]) == {"adapted (pseudo-queries)", "adapted (MLM k=1)",
                                     "source domain (MLM k=1)"}
    assert report["results"] == {}
    config.evaluate = True
    with pytest.raises(AssertionError, match="were read") as failure:
        adapt_reranker(config, tmp_path / "out", show_progress=False, target=blind)
    assert "evaluate_on_target" in {entry.name for entry in failure.traceback}


def test_both_methods_end_to_end_and_a_rerun_reuses_every_step(tmp_path, tiny_bert, tiny_mlm,
                                                                monkeypatch):
    from irdistill.models.cross_encoder import CrossEncoder
    from irdistill.models.parts import domain_parameter_names
    from irdistill.models.splade import load_masked_lm

    target = write_target(tmp_path / "target")
    source = write_toy_collection(tmp_path / "source")["folder"]
    config = load_adapt_config(overrides=tiny_settings(target, tiny_bert, tiny_mlm, source)
                               + ["methods=[pseudo,mlm]", "seeds=[1,2]"])
    out = tmp_path / "out"
    report = adapt_reranker(config, out, show_progress=False)
    systems = ["bm25", "bi-encoder", "hybrid", "zero-shot", "adapted (pseudo-queries)",
               "adapted (MLM k=1)", "source domain (MLM k=1)"]
    assert list(report["results"]) == systems
    assert all(0 <= r["nDCG@10"] <= 1 and 0 <= r["AP"] <= 1 for r in report["results"].values())
    assert json.loads((out / "results.json").read_text())["results"] == report["results"]
    table = (out / "report" / "comparison.md").read_text()
    assert "zero-shot (baseline)" in table and "| adapted (pseudo-queries) | 2 |" in table

    # two seeds: two pseudo-query sets, two models, each trained away from the source model
    seeds = [load_collection(out / "pseudo" / f"seed{s}" / "queries") for s in (1, 2)]
    assert seeds[0].queries != seeds[1].queries
    start_weights = parameters(CrossEncoder.from_pretrained(tiny_bert).model)
    assert list(report["models"]["adapted (pseudo-queries)"]) == ["seed1", "seed2"]
    for path in report["models"]["adapted (pseudo-queries)"].values():
        adapted = parameters(CrossEncoder.from_pretrained(path).model)
        assert any(not torch.equal(adapted[n], start_weights[n]) for n in adapted)
    # MLM: the task model kept the source MLM's domain part; the adapted one has the target's
    task = parameters(CrossEncoder.from_pretrained(str(out / "mlm/k1/task/model")).model)
    adapted = parameters(CrossEncoder.from_pretrained(str(out / "mlm/k1/adapted")).model)
    mlm_source = parameters(load_masked_lm(str(out / "mlm/k1/mlm-source/model"))[0])
    mlm_target = parameters(load_masked_lm(str(out / "mlm/k1/mlm-target/model"))[0])
    domain = set(domain_parameter_names(CrossEncoder.from_pretrained(tiny_bert).model, 1))
    assert domain and set(adapted) == set(task)
    for name in adapted:
        if name in domain:
            assert torch.equal(task[name], mlm_source[name]), name
            assert torch.equal(adapted[name], mlm_target[name]), name
        else:
            assert torch.equal(adapted[name], task[name]), name
    assert any(not torch.equal(mlm_source[n], mlm_target[n]) for n in domain)

    # a rerun trains and scores nothing
    import irdistill.train.engine as engine
    from irdistill.models.cross_encoder import CrossEncoder as CE

    monkeypatch.setattr(engine.GroupTrainer, "__init__", lambda *a, **k: pytest.fail("trained again"))
    monkeypatch.setattr(CE, "score_ids", lambda *a, **k: pytest.fail("scored again"))
    assert adapt_reranker(config, out, show_progress=False)["results"] == report["results"]
    monkeypatch.undo()
    changed = load_adapt_config(overrides=tiny_settings(target, tiny_bert)
                                + ["teacher_depth=4"])
    with pytest.raises(IrdistillError, match="other settings"):
        adapt_reranker(changed, out, show_progress=False)


def test_the_same_seed_gives_the_same_pseudo_queries_and_teacher(tmp_path, tiny_bert):
    target = write_target(tmp_path / "target")
    config = load_adapt_config(overrides=tiny_settings(target, tiny_bert) + ["evaluate=false"])
    for name in ("a", "b"):
        adapt_reranker(config, tmp_path / name, show_progress=False)
    for part in ("queries/queries.tsv", "queries/docs.tsv", "queries/qrels.txt",
                 "teacher/teacher.trec"):
        assert ((tmp_path / "a/pseudo/seed1" / part).read_bytes()
                == (tmp_path / "b/pseudo/seed1" / part).read_bytes()), part


def test_a_generator_writes_the_pseudo_queries(tmp_path, tiny_bert, tiny_llm, monkeypatch):
    """``generator`` loads a model through the LLM teacher's backends and its answers are the
    queries (an echo of each document's last words here, so that BM25 finds candidates; the
    real tiny models' answers are noise: tests/test_pseudo_queries.py runs them)."""
    from test_pseudo_queries import EchoBackend
    from transformers import AutoTokenizer

    import irdistill.adapt.pseudo as pseudo_module

    loaded = []
    monkeypatch.setattr(pseudo_module, "load_backend", lambda name, *a, **k: loaded.append(name) or
                        EchoBackend(AutoTokenizer.from_pretrained(name)))
    target = write_target(tmp_path / "target")
    config = load_adapt_config(overrides=tiny_settings(target, tiny_bert) + [
        "evaluate=false", f"generator={tiny_llm}", "pseudo.queries=6",
        "training.train.max_steps=1"])
    adapt_reranker(config, tmp_path / "out", show_progress=False)
    assert loaded == [tiny_llm]
    folder = tmp_path / "out" / "pseudo" / "seed1" / "queries"
    made = json.loads((folder / "provenance.json").read_text())
    assert made["method"] == "generated" and made["config"]["model"] == tiny_llm
    pseudo = load_collection(folder)
    assert len(pseudo.queries) == 6
    for qid, query in pseudo.queries.items():
        (doc,) = pseudo.qrels[qid]
        assert query.endswith(" query") and query.split()[0] in pseudo.docs.get_many([doc])[doc]
    assert (tmp_path / "out" / "pseudo" / "seed1" / "train" / "model").is_dir()


def test_adaptation_killed_in_training_resumes_to_the_same_weights(tmp_path, tiny_bert):
    target = write_target(tmp_path / "target")
    sets = tiny_settings(target, tiny_bert) + ["evaluate=false", "training.train.max_steps=8"]

    def args(out):
        return ["adapt-reranker", "-o", out] + [x for s in sets for x in ("--set", s)]

    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    ref = start(args(reference))
    victim = start(args(resumed), delay=0.25)
    checkpoints = resumed / "pseudo" / "seed1" / "train" / "checkpoints"
    kill_when(victim, lambda: checkpoints.exists() and any(
        (c / "trainer_state.json").exists() for c in checkpoints.iterdir()))
    assert not (resumed / "pseudo" / "seed1" / "train" / "model").exists()
    out = finish(start(args(resumed)))
    assert "resuming from" in out
    finish(ref)
    model = "pseudo/seed1/train/model/model.safetensors"
    assert (resumed / model).read_bytes() == (reference / model).read_bytes()


@pytest.mark.parametrize("setting, message", [
    ("target=beir/scifakt/test", "unknown dataset id 'beir/scifakt/test'"),
    ("measures=[nDCG@1O]", "nDCG@1O"),
    ("precision=bf61", "unknown precision 'bf61'"),
    ("teachers=[bmm25]", "bmm25"),
    ("normalisation=zz", "unknown normalisation 'zz'"),
    ("layers=-3", "layers=-3 must be at least 0"),
    ("methods=[gpl]", "unknown adaptation method 'gpl'"),
    ("seeds=[1,1]", "seeds repeat"),
    ("teacher_depth=0", "at least 1"),
    ("pseudo.queries=0", "queries=0 must be at least 1"),
])
def test_bad_settings_are_refused_before_any_work(tmp_path, setting, message):
    result = CliRunner().invoke(app, ["adapt-reranker", "-o", str(tmp_path / "out"),
                                      "--set", setting])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "out").exists()
