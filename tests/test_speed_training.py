"""Fast training (issue 5): length-grouped batches, tokenisation once for all epochs, and the
config hash of older configs kept."""
import numpy as np

from irdistill.config import config_hash, load_config, to_dict
from irdistill.train import data as train_data
from irdistill.train import engine
from irdistill.train.ordering import length_grouped_order
from irdistill.train.sources import group_source


def test_length_grouped_order_is_a_seeded_permutation_of_similar_batches():
    rng = np.random.default_rng(1)
    lengths = rng.integers(20, 300, size=1000).tolist()
    order = length_grouped_order(lengths, batch_size=8, seed=3)
    assert sorted(order) == list(range(1000))
    assert order == length_grouped_order(lengths, batch_size=8, seed=3)  # resume sees the same
    assert order != length_grouped_order(lengths, batch_size=8, seed=4)

    def padding(order):  # padded minus real tokens, batches of 8
        batches = [np.array(lengths)[order[i:i + 8]] for i in range(0, len(order), 8)]
        return sum(int(b.max()) * len(b) - int(b.sum()) for b in batches)

    shuffled = rng.permutation(1000).tolist()
    assert padding(order) < 0.1 * padding(shuffled)
    # under DDP, a step is one batch per process: 2 x 8 consecutive groups of similar length
    ddp = length_grouped_order(lengths, batch_size=8, seed=3, world_size=2)
    steps = [np.array(lengths)[ddp[i:i + 16]] for i in range(0, 992, 16)]
    assert np.mean([s.max() - s.min() for s in steps]) < 20


def test_group_by_length_changes_the_hash_only_when_on():
    off = load_config(overrides=["train.lr=1e-4"])
    tree = to_dict(off)
    del tree["train"]["group_by_length"]
    assert config_hash(off) == config_hash(tree)  # folders named by older hashes stay valid
    on = load_config(overrides=["train.lr=1e-4", "train.group_by_length=true"])
    assert config_hash(on) != config_hash(off)


def test_training_tokenises_once_and_groups_batches_by_length(tiny_bert, scifact_available,
                                                              tmp_path, monkeypatch):
    """Two epochs: every query and document is tokenised once, before training. With
    group_by_length the collator gets batches of similar length: less padding than the
    Trainer's shuffled order."""
    from irdistill.data.collection import load_collection
    from irdistill.models.tokenization import PairEncoder

    encoded: list[str] = []
    original_encode = PairEncoder._encode

    def counting(self, texts, max_length, compact=False):
        encoded.extend(texts)
        return original_encode(self, texts, max_length, compact)

    monkeypatch.setattr(PairEncoder, "_encode", counting)
    widths: list[tuple[int, int]] = []  # (padded tokens, real tokens) per batch
    original_call = train_data.GroupCollator.__call__

    def recording(self, groups):
        batch = original_call(self, groups)
        widths.append((batch["input_ids"].numel(), int(batch["attention_mask"].sum())))
        return batch

    monkeypatch.setattr(train_data.GroupCollator, "__call__", recording)
    waste = {}
    for grouped in (False, True):
        encoded.clear()
        widths.clear()
        config = load_config(overrides=[
            f"model.name={tiny_bert}", "data.max_queries=40", "data.negatives=3",
            "data.depth=30", "train.epochs=2", "train.batch_size=4", "train.save_steps=1000",
            "model.max_doc_length=160", "loss=infonce",
            f"train.group_by_length={str(grouped).lower()}"])
        engine.train(config, tmp_path / f"run-{grouped}", show_progress=False)
        assert len(widths) == 20  # 2 epochs x 40 groups / 4
        collection = load_collection(config.data.collection)
        source = group_source(config.data)
        groups = source.groups(config, collection, source.candidates(collection))
        unique = {g.query_id for g in groups} | {d for g in groups for d in g.doc_ids}
        assert len(encoded) == len(unique)
        padded, real = map(sum, zip(*widths))
        waste[grouped] = (padded - real) / padded
    assert waste[True] < waste[False]


def test_a_step_in_pieces_gives_the_scores_and_gradients_of_one_forward(tiny_bert):
    """train.forward_tokens: the step's pairs go through the model in length-sorted pieces
    (each cut to its longest row); scores come back in the batch's order and the gradients are
    those of one forward of the whole batch."""
    import pytest
    import torch

    from irdistill.models.cross_encoder import CrossEncoder

    torch.manual_seed(0)
    ce = CrossEncoder.from_pretrained(tiny_bert, max_doc_length=40, device="cpu")
    model = ce.model.eval()  # no dropout: both ways compute the same function
    rng = np.random.default_rng(0)
    pairs = [(rng.integers(1000, 2000, rng.integers(2, 6)).tolist(),
              rng.integers(1000, 2000, rng.integers(3, 40)).tolist()) for _ in range(11)]
    batch = ce.encoder.collate(pairs)
    calls = []
    handle = model.register_forward_hook(lambda m, args, out: calls.append(1))

    def run(budget):
        model.zero_grad()
        calls.clear()
        scores = engine.forward_in_pieces(model, dict(batch), budget)
        (scores * torch.arange(1.0, 12.0)).sum().backward()  # each row weighted differently
        return scores.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    whole, whole_grads = run(None)
    assert len(calls) == 1
    pieces, piece_grads = run(100)  # a few rows per piece
    assert len(calls) > 2
    handle.remove()
    assert pieces.tolist() == pytest.approx(whole.tolist(), abs=1e-5)
    for a, b in zip(whole_grads, piece_grads):
        assert torch.allclose(a, b, atol=1e-5)
    assert engine.forward_budget(None, "cpu") == 2048 and engine.forward_budget(0, "cpu") is None
    assert engine.forward_budget(None, "cuda") is None and engine.forward_budget(512, "cuda") == 512


def test_forward_tokens_keeps_the_hash_when_auto():
    base = load_config(overrides=["train.lr=1e-4"])
    tree = to_dict(base)
    del tree["train"]["forward_tokens"]
    assert config_hash(base) == config_hash(tree)  # folders named by older hashes stay valid
    assert config_hash(base) != config_hash(load_config(overrides=["train.lr=1e-4",
                                                                   "train.forward_tokens=512"]))
