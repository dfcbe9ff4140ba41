"""The CPU dropout of irdistill.models.dropout: the same distribution and expectation as
PyTorch's dropout, attention equal to SDPA when nothing is dropped, the model put back after
training, reproducible from the seed."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from irdistill.models import dropout as fd


def test_keep_mask_drops_p_of_the_elements_independently():
    gen = torch.Generator().manual_seed(0)
    keep, scale = fd.keep_mask((1000, 1000), 0.1, generator=gen)
    assert keep.dtype == torch.bool and keep.shape == (1000, 1000)
    assert abs((~keep).float().mean().item() - 0.1) < 0.002  # 1e6 draws: std 3e-4
    assert scale == pytest.approx(65536 / (65536 - 6554))
    # the four 16-bit halves of one draw are independent: neighbours drop together p^2 of the time
    pairs = (~keep[:, 0::2] & ~keep[:, 1::2]).float().mean().item()
    assert abs(pairs - 0.01) < 0.001
    # p = 0 keeps everything, scale 1; p out of range refused
    keep0, scale0 = fd.keep_mask((7, 3), 0.0, generator=gen)
    assert keep0.all() and scale0 == 1.0
    with pytest.raises(ValueError):
        fd.keep_mask((2,), 1.0)


def test_dropout_keeps_the_expectation_and_has_dropout_gradients():
    gen = torch.Generator().manual_seed(1)
    x = torch.full((400, 1000), 2.0, requires_grad=True)
    y = fd.dropout(x, 0.25, generator=gen)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.005
    assert torch.allclose(y[kept], torch.tensor(2.0 * 65536 / (65536 - 16384)))
    assert abs(y.mean().item() - 2.0) < 0.02
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept)
    assert torch.allclose(x.grad[kept], torch.tensor(65536 / (65536 - 16384)))


def test_same_seed_same_mask_through_the_global_generator():
    torch.manual_seed(5)
    a = fd.dropout(torch.ones(64, 64), 0.1)
    torch.manual_seed(5)
    b = fd.dropout(torch.ones(64, 64), 0.1)
    assert torch.equal(a, b) and not torch.equal(a, fd.dropout(torch.ones(64, 64), 0.1))


class _Module(torch.nn.Module):
    is_causal = False


def _qkv(seed=0, batch=3, heads=2, length=11, dim=8):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, length, dim, generator=g) for _ in range(3)]


@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
def test_attention_is_sdpa_with_the_mask_on_the_probabilities(mask_kind, monkeypatch):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q, k, v = _qkv()
    mask = None
    if mask_kind != "none":
        valid = torch.ones(3, 1, 11, 11, dtype=torch.bool)
        valid[0, :, :, 7:] = False  # the first sequence has 4 padding positions
        mask = valid if mask_kind == "bool" else torch.where(valid, 0.0, torch.finfo(q.dtype).min)
    reference, _ = sdpa_attention_forward(_Module(), q, k, v, mask, dropout=0.0, scaling=0.3)
    # every element kept: the explicit path equals SDPA without dropout
    monkeypatch.setattr(fd, "keep_mask", lambda shape, p, device: (
        torch.ones(shape, dtype=torch.bool), 1.0))
    out, _ = fd.attention(_Module(), q, k, v, mask, dropout=0.1, scaling=0.3)
    assert out.shape == (3, 11, 2, 8)
    assert torch.allclose(out, reference, atol=1e-6)
    # a known mask: dropped probabilities are zero, the rest scaled by 1/(1-p)
    drop = torch.rand(3, 2, 11, 11, generator=torch.Generator().manual_seed(3)) < 0.2
    monkeypatch.setattr(fd, "keep_mask", lambda shape, p, device: (~drop, 1.25))
    out, _ = fd.attention(_Module(), q, k, v, mask, dropout=0.2, scaling=0.3)
    scores = q @ k.transpose(-1, -2) * 0.3
    if mask is not None:
        scores = scores.masked_fill(~valid, float("-inf"))
    probs = scores.softmax(-1).masked_fill(drop, 0.0) * 1.25
    assert torch.allclose(out, (probs @ v).transpose(1, 2), atol=1e-6)


def test_attention_falls_back_to_sdpa_without_dropout():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q, k, v = _qkv(1)
    out, _ = fd.attention(_Module(), q, k, v, None, dropout=0.0)
    assert torch.equal(out, sdpa_attention_forward(_Module(), q, k, v, None, dropout=0.0)[0])


def test_attention_with_dropout_averages_to_attention_without():
    q, k, v = _qkv(2)
    torch.manual_seed(0)
    mean = sum(fd.attention(_Module(), q, k, v, None, dropout=0.1)[0] for _ in range(400)) / 400
    exact, _ = fd.attention(_Module(), q, k, v, None, dropout=0.0)
    assert (mean - exact).abs().mean().item() < 0.02 < (fd.attention(
        _Module(), q, k, v, None, dropout=0.1)[0] - exact).abs().mean().item()


def _tiny_bert(dropout=0.1):
    config = AutoConfig.for_model("bert", hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64, vocab_size=100,
                                  num_labels=1, hidden_dropout_prob=dropout,
                                  attention_probs_dropout_prob=dropout)
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa")


def test_cpu_dropout_switches_the_model_and_puts_it_back(tmp_path):
    model = _tiny_bert()
    ids = torch.randint(5, 100, (4, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    model.eval()
    before = model(input_ids=ids, attention_mask=mask).logits
    model.train()
    with fd.cpu_dropout(model) as switched:
        assert switched > 0
        assert model.config._attn_implementation == fd.ATTENTION
        assert all(type(m) is not torch.nn.Dropout for m in model.modules())
        model.eval()  # in evaluation mode nothing is dropped: the same scores as before
        assert torch.allclose(model(input_ids=ids, attention_mask=mask).logits, before, atol=1e-6)
        model.train()
        torch.manual_seed(7)
        first = model(input_ids=ids, attention_mask=mask).logits
        torch.manual_seed(7)
        again = model(input_ids=ids, attention_mask=mask).logits
        assert torch.equal(first, again) and not torch.allclose(first, before)
        first.sum().backward()
        assert all(p.grad is not None for p in model.bert.encoder.parameters())
    assert model.config._attn_implementation == "sdpa"
    assert sum(type(m) is torch.nn.Dropout for m in model.modules()) > 0
    assert not any(isinstance(m, fd.FastDropout) for m in model.modules())
    assert model.training  # the mode set inside the block stays
    model.save_pretrained(tmp_path)
    assert fd.ATTENTION not in (tmp_path / "config.json").read_text()
    json.loads((tmp_path / "config.json").read_text())


def test_cpu_dropout_disabled_or_without_dropout_changes_nothing():
    model = _tiny_bert(dropout=0.0)
    ids = torch.randint(5, 100, (2, 9))
    model.train()
    plain = model(input_ids=ids).logits
    with fd.cpu_dropout(model, enabled=False) as switched:
        assert switched == 0 and model.config._attn_implementation == "sdpa"
    with fd.cpu_dropout(model):  # p = 0: SDPA and nn.Dropout's own path
        assert torch.equal(model(input_ids=ids).logits, plain)


@pytest.mark.parametrize("enabled", [True, False])
def test_training_uses_the_cheap_dropout_when_train_fast_dropout_is_on(tmp_path, tiny_bert,
                                                                       monkeypatch, enabled):
    """``train.fast_dropout`` (on by default) reaches the trainer: the cheap masks are drawn in
    every training step with it on, never with it off; the saved model has plain dropout."""
    from toy_collection import write_toy_collection

    from irdistill.config import load_config
    from irdistill.train.engine import train

    toy = write_toy_collection(tmp_path / "toy")
    drawn = []
    real = fd.dropout
    monkeypatch.setattr(fd, "dropout", lambda x, p: drawn.append(p) or real(x, p))
    config = load_config(overrides=[
        f"model.name={tiny_bert}", f"data.collection={toy['folder']}", f"data.run={toy['run']}",
        "data.negatives=3", "model.max_doc_length=32", "loss=infonce", "train.epochs=1",
        "train.batch_size=4", "train.precision=fp32", "train.save_steps=100",
        f"train.fast_dropout={str(enabled).lower()}"])
    model_dir = train(config, tmp_path / "out", show_progress=False)
    if enabled:  # 2 steps; every layer's dropout, hidden and attention-probability alike
        assert len(drawn) >= 2 * 2 and set(drawn) == {0.1}
    else:
        assert drawn == []
    assert fd.ATTENTION not in (model_dir / "config.json").read_text()
