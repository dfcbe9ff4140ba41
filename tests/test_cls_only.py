"""The last layer computed for the [CLS] row only (irdistill.models.cls_only): the same scores and
the same gradients as the full layer, for every family it is enabled for; the others untouched;
a head that reads more than position 0 is refused by the probe."""
import pytest
import torch
from tiny_models import FAMILIES, build_tiny_model

from irdistill.models import cls_only
from irdistill.models.cross_encoder import CrossEncoder

ENABLED = ("bert", "roberta", "electra")
PAIRS = [("how do stars shine", "Stars are huge balls of hot plasma that shine by nuclear "
          "fusion, and some of them are older than the sun."),
         ("why do dogs bark", "Dogs bark."),
         ("what is the basic unit of life", "The cell is the basic unit of life.")]


def model_pair(family, tmp_path):
    path = build_tiny_model(family, tmp_path / family, initializer_range=0.2)
    cut = CrossEncoder.from_pretrained(path, device="cpu", max_doc_length=24)
    full = CrossEncoder.from_pretrained(path, device="cpu", max_doc_length=24,
                                        cls_only_last_layer=False)
    return cut, full


@pytest.mark.parametrize("family", FAMILIES)
def test_scores_and_gradients_are_those_of_the_full_layer(family, tmp_path):
    cut, full = model_pair(family, tmp_path)
    layer = cls_only.last_layer(cut.model)
    assert bool(getattr(layer, "cls_only", False)) == (family in ENABLED)
    assert not getattr(cls_only.last_layer(full.model), "cls_only", False)
    queries = cut.encoder.encode_queries([q for q, _ in PAIRS])
    docs = cut.encoder.encode_docs([d for _, d in PAIRS])
    batch = cut.encoder.collate(list(zip(queries, docs)))
    assert batch["attention_mask"].min() == 0  # padding in the batch
    scores = {}
    for name, ce in (("cut", cut), ("full", full)):
        ce.model.eval()  # no dropout: both sides compute the same function
        ce.model.zero_grad()
        logits = ce.model(**batch).logits[:, 0]
        (logits * torch.tensor([1.0, -2.0, 0.5])).sum().backward()
        scores[name] = (logits.detach(), {n: p.grad.clone() for n, p in ce.model.named_parameters()
                                          if p.grad is not None})
    torch.testing.assert_close(scores["cut"][0], scores["full"][0], atol=1e-5, rtol=1e-5)
    grads_cut, grads_full = scores["cut"][1], scores["full"][1]
    assert grads_cut.keys() == grads_full.keys()
    for name in grads_full:
        torch.testing.assert_close(grads_cut[name], grads_full[name], atol=1e-5, rtol=1e-4)
    assert cut.score(PAIRS) == pytest.approx(full.score(PAIRS), abs=1e-5)


def test_a_head_that_reads_every_position_keeps_the_full_layer(tmp_path):
    from transformers import AutoModelForSequenceClassification

    path = build_tiny_model("bert", tmp_path / "bert", initializer_range=0.2)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    pooler = model.bert.pooler
    pooler.forward = lambda hidden: pooler.activation(pooler.dense(hidden.mean(1)))  # mean pool
    assert cls_only.last_layer(model) is not None and not cls_only.enable(model)
    assert "forward" not in vars(cls_only.last_layer(model))  # the class's forward again
    model.bert.pooler.forward = type(pooler).forward.__get__(pooler)
    assert cls_only.enable(model)
    cls_only.disable(model)
    assert "forward" not in vars(cls_only.last_layer(model))


def test_a_probe_that_cannot_run_keeps_the_full_layer(tmp_path, monkeypatch):
    """E.g. FlashAttention-2 chosen for a GPU while the model is still on the CPU."""
    from transformers import AutoModelForSequenceClassification

    path = build_tiny_model("bert", tmp_path / "bert", initializer_range=0.2)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)

    def cannot_run(*args, **kwargs):
        raise RuntimeError("FlashAttention only supports CUDA devices")

    monkeypatch.setattr(model, "forward", cannot_run)
    assert not cls_only.enable(model) and not cls_only.enabled(model)


def test_scores_from_the_full_layer_are_not_resumed_as_if_cut(tmp_path):
    from irdistill.rerank.scoring import scoring_identity

    cut, full = model_pair("bert", tmp_path)

    class Collection:
        name = "toy"

    run = {"q": {"a": 1.0, "b": 0.5}}
    identities = [scoring_identity("m", ce, Collection(), run, 2) for ce in (cut, full)]
    assert identities[0]["last_layer"] == "cls-only" and "last_layer" not in identities[1]
