"""The SPLADE model: pooling and regularisers by hand, the MLM head of headless checkpoints,
sentence-transformers compatibility, and training mechanics."""
import json
import logging
import math

import numpy as np
import pytest
import torch
from splade_helpers import tiny_mlm  # noqa: F401  (fixture)

from irdistill.errors import IrdistillError
from irdistill.losses import get_regularizer
from irdistill.losses.regularization import flops, l1
from irdistill.models.splade import Splade, regularizer_weight, splade_pool

TEXTS = ["The cell is the basic unit of life.", "Dogs are loyal animals that bark at night.",
         "stars", "What is the boiling point of water at high altitude?"]


def test_pooling_by_hand():
    # two texts, three token slots, four vocabulary terms; text 1's last slot is padding
    logits = torch.tensor([[[1.0, -2.0, 0.0, 3.0],
                            [2.0, -1.0, -5.0, 0.5],
                            [0.5, 4.0, 1.0, -1.0]],
                           [[-1.0, 0.0, 2.0, -3.0],
                            [-2.0, -1.0, 1.0, -3.0],
                            [9.0, 9.0, 9.0, 9.0]]])  # padding: must be ignored
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    expected = torch.tensor([[math.log(3.0), math.log(5.0), math.log(2.0), math.log(4.0)],
                             [0.0, 0.0, math.log(3.0), 0.0]])
    assert torch.allclose(splade_pool(logits, mask), expected)


def test_pooling_equals_the_definition_in_values_and_gradients():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    reference = (torch.log1p(torch.relu(logits)) * mask.unsqueeze(-1)).amax(dim=1)
    ours = splade_pool(logits, mask)
    assert torch.allclose(ours, reference)
    weights = torch.randn(3, 11)
    (g_ref,) = torch.autograd.grad((reference * weights).sum(), logits)
    (g_ours,) = torch.autograd.grad((ours * weights).sum(), logits)
    assert torch.allclose(g_ours, g_ref)


def test_regularisers_by_hand():
    reps = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    # FLOPS: mean over the batch per term = [2, 0, 1]; sum of squares = 4 + 0 + 1
    assert flops(reps).item() == pytest.approx(5.0)
    # L1: mean over the batch of each vector's sum = (3 + 3) / 2
    assert l1(reps).item() == pytest.approx(3.0)
    assert get_regularizer("flops")(reps).item() == pytest.approx(5.0)
    with pytest.raises(IrdistillError, match="unknown regularizer 'flop'"):
        get_regularizer("flop")


def test_quadratic_warmup_of_the_regulariser_weight():
    assert [regularizer_weight(0.8, s, 10) for s in (0, 5, 10, 50)] == pytest.approx(
        [0.0, 0.2, 0.8, 0.8])
    assert regularizer_weight(0.8, 0, 0) == 0.8


def test_headless_checkpoint_gets_a_head_from_the_tied_embeddings(caplog):
    """The bundled MiniLM has no MLM head: it is built from the word embeddings, sparse and
    meaningful from the start."""
    with caplog.at_level(logging.WARNING, logger="irdistill.models.splade"):
        model = Splade.from_pretrained("minilm", device="cpu")
    assert any("no MLM head" in r.message for r in caplog.records)
    lm = model.encoders.doc
    embeddings = lm.get_input_embeddings().weight
    assert lm.get_output_embeddings().weight.data_ptr() == embeddings.data_ptr()
    transform = lm.cls.predictions.transform
    assert torch.equal(transform.dense.weight, torch.eye(embeddings.shape[1]))
    assert torch.count_nonzero(transform.dense.bias) == 0
    bias = lm.cls.predictions.bias
    assert bool((bias == bias[0]).all()) and bias[0] < 0
    vectors = model.encode_docs(TEXTS[:2])
    active = vectors.getnnz(axis=1)
    assert (active > 10).all() and (active < 0.05 * model.vocab_size).all()
    top = [term for term, _ in model.top_terms(vectors[0], 10)]
    assert "cell" in top and "life" in top


def _st_vectors(path, texts, side):
    from sentence_transformers import SparseEncoder

    st = SparseEncoder(str(path), device="cpu")
    encode = st.encode_query if side == "query" else st.encode_document
    return encode(texts, convert_to_tensor=True).to_dense().numpy()


#: texts longer than the query (24) and document (48) lengths of the tests below
LONG = [" ".join(TEXTS) * 3, "cells divide and divide again " * 12]


def test_sentence_transformers_loads_a_saved_model_with_equal_vectors(tmp_path, tiny_mlm):
    """Each side is cut to its own length in sentence-transformers too (the saved config
    records both), so long queries and documents give the same vectors."""
    model = Splade.from_pretrained(tiny_mlm, device="cpu", max_query_length=24,
                                   max_doc_length=48)
    model.save_pretrained(tmp_path / "m")
    settings = json.loads((tmp_path / "m" / "irdistill.json").read_text())
    assert settings["encoders"] == "shared" and settings["max_doc_length"] == 48
    texts = TEXTS + LONG
    assert all(len(ids) == 48 for ids in model.tokenize(LONG, "document"))  # both are cut
    assert all(len(ids) == 24 for ids in model.tokenize(LONG, "query"))
    docs = model.encode_docs(texts).toarray()
    queries = model.encode_queries(texts).toarray()
    assert not np.allclose(docs[-2:], queries[-2:])  # the two lengths give other vectors
    assert np.allclose(_st_vectors(tmp_path / "m", texts, "document"), docs, atol=1e-5)
    assert np.allclose(_st_vectors(tmp_path / "m", texts, "query"), queries, atol=1e-5)
    again = Splade.from_pretrained(str(tmp_path / "m"), device="cpu")
    assert (again.max_query_length, again.max_doc_length) == (24, 48)
    assert np.allclose(again.encode_docs(texts).toarray(), docs, atol=1e-6)


def test_separate_encoders_are_saved_behind_a_router(tmp_path, tiny_mlm):
    model = Splade.from_pretrained(tiny_mlm, separate_encoders=True, device="cpu")
    assert not model.shared
    with torch.no_grad():  # make the query encoder differ from the document encoder
        model.encoders.query.cls.predictions.bias.add_(0.1)
    model.save_pretrained(tmp_path / "m")
    texts = TEXTS + LONG  # longer than either side's length
    queries = model.encode_queries(texts).toarray()
    docs = model.encode_docs(texts).toarray()
    assert not np.allclose(queries, docs)
    assert np.allclose(_st_vectors(tmp_path / "m", texts, "query"), queries, atol=1e-5)
    assert np.allclose(_st_vectors(tmp_path / "m", texts, "document"), docs, atol=1e-5)
    again = Splade.from_pretrained(str(tmp_path / "m"), device="cpu")
    assert not again.shared
    assert np.allclose(again.encode_queries(texts).toarray(), queries, atol=1e-6)
    with pytest.raises(IrdistillError, match="separate"):
        Splade.from_pretrained(str(tmp_path / "m"), separate_encoders=False)
    # identified by the content of both encoders (index and search check the model with it)
    from irdistill.provenance import model_fingerprint

    first = model_fingerprint(str(tmp_path / "m"))
    assert not first.startswith("hub:")
    with torch.no_grad():
        model.encoders.query.cls.predictions.bias.add_(0.1)
    model.save_pretrained(tmp_path / "m2")
    assert model_fingerprint(str(tmp_path / "m2")) != first


def test_encoding_is_independent_of_batching_and_order(tiny_mlm):
    model = Splade.from_pretrained(tiny_mlm, device="cpu")
    together = model.encode_docs(TEXTS, batch_size=3).toarray()
    alone = np.vstack([model.encode_docs([t]).toarray() for t in TEXTS])
    assert np.allclose(together, alone, atol=1e-5)
    assert together.shape == (len(TEXTS), model.vocab_size) and (together >= 0).all()


def test_collator_adds_in_batch_negatives_except_own_and_relevant_documents(tiny_mlm):
    from irdistill.data.sampling import Group
    from irdistill.train.splade import SpladeCollator, splade_scores

    model = Splade.from_pretrained(tiny_mlm, device="cpu")
    tokens = dict(zip("abcd", model.tokenize(TEXTS, "doc")))
    queries = dict(zip(["q1", "q2"], model.tokenize(TEXTS[:2], "query")))
    qrels = {"q1": {"a": 1}, "q2": {"b": 1, "c": 1}}  # c is relevant to q2 (not in its group)
    groups = [Group("q1", ["a", "b", "c"], [1, 0, 0]), Group("q2", ["b", "d"], [1, 0])]
    batch = SpladeCollator(model, queries, tokens, qrels, in_batch_negatives=True)(groups)
    assert batch["d_input_ids"].shape[0] == 4  # each document encoded once
    assert batch["slots"].tolist() == [[0, 1, 2], [1, 3, 0]]
    assert batch["mask"].tolist() == [[True, True, True], [True, True, False]]
    # batch documents a, b, c, d: q1 already has a, b, c; q2 has b, d and c is relevant to it
    assert batch["in_batch"].tolist() == [[False, False, False, True],
                                          [True, False, False, False]]
    out = splade_scores(model.encoders, batch)
    assert out["scores"].shape == out["mask"].shape == out["targets"].shape == (2, 7)
    q = model.encode_queries(TEXTS[:2]).toarray()
    d = model.encode_docs(TEXTS).toarray()
    expected = q @ d.T
    assert out["scores"][0, :3].detach().numpy() == pytest.approx(expected[0, :3], rel=1e-4)
    assert out["scores"][1, 3 + 0].item() == pytest.approx(expected[1, 0], rel=1e-4)


def test_training_lowers_the_loss_and_sparsifies(tmp_path, tiny_mlm, scifact_available):
    """A few steps on 4 SciFact queries: the artefacts, the warm-up of the regulariser weights, a
    falling ranking loss, a saved model that differs from the start and loads again."""
    from irdistill.train.splade import load_splade_config, train_splade

    config = load_splade_config(overrides=[
        f"model.name={tiny_mlm}", "data.max_queries=4", "data.negatives=1",
        "train.batch_size=4", "train.max_steps=8", "train.logging_steps=1", "train.lr=1e-3",
        "train.save_steps=2", "model.max_doc_length=24", "reg_warmup_steps=2",
        "lambda_q=0.1", "lambda_d=0.1"])
    model_dir = train_splade(config, tmp_path / "out", show_progress=False)
    for name in ("config.yaml", "provenance.json", "train_log.jsonl", "model/irdistill.json",
                 "model/model.safetensors", "model/modules.json"):
        assert (tmp_path / "out" / name).exists(), name
    log = [json.loads(l) for l in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    steps = [entry for entry in log if "ranking_loss" in entry]
    assert [s["step"] for s in steps] == list(range(1, 9))
    # quadratic warm-up: the weight at optimizer step s (0-based) is 0.1 * min(1, s / 2) ** 2
    assert [s["lambda_d"] for s in steps] == pytest.approx([0.0, 0.025] + [0.1] * 6)
    assert all(math.isfinite(s["loss"]) for s in steps)
    # the same 4 queries every step: their ranking loss falls (2.06 -> 1.68 over the first and
    # last two steps when measured)
    ranking = [s["ranking_loss"] for s in steps]
    assert sum(ranking[-2:]) / 2 < sum(ranking[:2]) / 2 - 0.2
    assert steps[-1]["d_terms"] < steps[0]["d_terms"]  # FLOPS pushes towards sparser vectors
    start = Splade.from_pretrained(tiny_mlm, device="cpu")
    trained = Splade.from_pretrained(str(model_dir), device="cpu")
    assert trained.max_doc_length == 24
    assert not np.allclose(start.encode_docs(TEXTS).toarray(),
                           trained.encode_docs(TEXTS).toarray())
    assert train_splade(config, tmp_path / "out") == model_dir  # finished: nothing redone
    other = load_splade_config(overrides=[f"model.name={tiny_mlm}", "lambda_d=0.2"])
    with pytest.raises(IrdistillError, match="made by another config"):
        train_splade(other, tmp_path / "out")

    # an interrupted run resumes from its last checkpoint (saved with the tied MLM head)
    import shutil

    assert (tmp_path / "out" / "checkpoints" / "checkpoint-8" / "model.safetensors").exists()
    shutil.rmtree(model_dir)
    train_splade(config, tmp_path / "out", show_progress=False)
    resumed = Splade.from_pretrained(str(model_dir), device="cpu")
    assert np.allclose(resumed.encode_docs(TEXTS).toarray(),
                       trained.encode_docs(TEXTS).toarray(), atol=1e-6)


def test_a_non_finite_loss_stops_splade_training_and_keeps_the_last_good_checkpoint(
        tmp_path, tiny_mlm, scifact_available, monkeypatch):
    from irdistill.losses import LOSSES
    from irdistill.losses.listwise import infonce
    from irdistill.train.resume import latest_checkpoint, step_of
    from irdistill.train.splade import load_splade_config, train_splade

    calls = {"n": 0}

    def nan_at_3(scores, targets, mask=None):
        calls["n"] += 1
        return infonce(scores, targets, mask) * (float("nan") if calls["n"] == 3 else 1.0)

    monkeypatch.setitem(LOSSES, "nan_at_3", nan_at_3)
    config = load_splade_config(overrides=[
        f"model.name={tiny_mlm}", "data.max_queries=12", "loss=nan_at_3", "train.batch_size=4",
        "train.max_steps=4", "train.save_steps=2", "model.max_doc_length=24"])
    with pytest.raises(IrdistillError, match="training stopped: the loss became nan at step 3"):
        train_splade(config, tmp_path / "out", show_progress=False)
    assert step_of(latest_checkpoint(tmp_path / "out" / "checkpoints")) == 2
    assert not (tmp_path / "out" / "model").exists()
    # the cause gone, the same call resumes from step 2 and finishes
    monkeypatch.setitem(LOSSES, "nan_at_3", lambda s, t, m=None: infonce(s, t, m))
    assert train_splade(config, tmp_path / "out", show_progress=False).exists()


def test_in_batch_negatives_need_label_groups(tmp_path, tiny_mlm):
    from irdistill.train.splade import load_splade_config, train_splade

    config = load_splade_config(overrides=[f"model.name={tiny_mlm}", "data.mode=teacher_scores"])
    with pytest.raises(IrdistillError, match="in_batch_negatives"):
        train_splade(config, tmp_path / "out")


def test_cli_train_index_search_evaluate(tmp_path, tiny_mlm, beir_folder, scifact_available):
    """The splade commands end to end, and one-line errors for bad input."""
    from typer.testing import CliRunner

    from irdistill.cli import app

    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, [str(a) for a in args])

    out = tmp_path / "train"
    result = invoke("splade", "train", "--output", out, "--set", f"model.name={tiny_mlm}",
                    "--set", "data.max_queries=8", "--set", "train.batch_size=4",
                    "--set", "train.max_steps=2", "--set", "model.max_doc_length=24")
    assert result.exit_code == 0, result.output
    model = out / "model"
    result = invoke("splade", "index", model, beir_folder, "--output", tmp_path / "idx",
                    "--batch-size", 2)
    assert result.exit_code == 0, result.output
    assert "indexed 4 documents" in result.output and "postings" in result.output
    run = tmp_path / "run.trec"
    result = invoke("splade", "search", model, tmp_path / "idx", beir_folder, "--output", run,
                    "--k", 2)
    assert result.exit_code == 0, result.output
    assert "queries/s" in result.output
    lines = run.read_text().splitlines()
    assert {l.split()[0] for l in lines} == {"q1", "q2"} and len(lines) <= 4
    assert invoke("evaluate", run, "--qrels", beir_folder).exit_code == 0
    provenance = json.loads((tmp_path / "run.provenance.json").read_text())
    assert provenance["kind"] == "splade-search" and provenance["config"]["k"] == 2
    assert provenance["run"]["sha256"] and provenance["timing"]["queries"] == 2

    for args, words in [
        (("splade", "search", tiny_mlm, tmp_path / "idx", beir_folder, "--output", run),
         ["built with another model"]),
        (("splade", "search", model, tmp_path / "idx", beir_folder, "--output", tmp_path),
         ["output run is a directory"]),
        (("splade", "search", model, tmp_path / "nowhere", beir_folder, "--output", run),
         ["not a finished sparse index"]),
        (("splade", "index", model, beir_folder, "--output", tmp_path / "idx"),
         ["already exists"]),
        (("splade", "train", "--set", "lambda_x=1"), ["unknown config key", "lambda_q"]),
        (("adapt", "--set", "layers=9", "--set", f"source.model.name={tiny_mlm}",
          "--set", f"target={beir_folder}", "--output", tmp_path / "adapt"),
         ["out of range"]),
    ]:
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        lines = [l for l in result.output.splitlines() if l.strip()]
        assert lines[-1].startswith("error: ") and "Traceback" not in result.output, result.output
        for word in words:
            assert word in lines[-1], result.output


@pytest.mark.parametrize("setting, message", [
    ("train.freeze_domain_layers=1", "train.freeze_domain_layers is a cross-encoder key"),
    ("train.lora.r=4", "train.lora is not supported by SPLADE"),
    ("lambda_q=-1", "lambda_q=-1.0 must be at least 0"),
    ("regularizer=flop", "unknown regularizer 'flop'"),
])
def test_bad_splade_settings_fail_before_any_work(tmp_path, tiny_mlm, setting, message):
    from irdistill.train.splade import load_splade_config, train_splade

    config = load_splade_config(overrides=[f"model.name={tiny_mlm}", setting])
    with pytest.raises(IrdistillError, match=message):
        train_splade(config, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_splade_precisions_mean_what_they_mean_elsewhere(tiny_mlm):
    """autocast names and auto are taken; a cross-encoder's cast-weights precision is refused
    (SPLADE would not cast its weights), as is an unknown name."""
    from irdistill.models.splade import Splade

    for precision in ("fp32", "bf16", "auto"):
        Splade.from_pretrained(tiny_mlm, precision=precision, device="cpu")
    with pytest.raises(IrdistillError, match="'bf16-full' is a cross-encoder's"):
        Splade.from_pretrained(tiny_mlm, precision="bf16-full", device="cpu")
    with pytest.raises(IrdistillError, match="unknown precision 'bf61'"):
        Splade.from_pretrained(tiny_mlm, precision="bf61", device="cpu")
