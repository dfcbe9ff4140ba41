"""Truncation of (query, document) pairs, and the round trip of saved models through
sentence-transformers on documents longer than the limit.

``model.truncation=pair`` cuts a pair as the Hugging Face tokenizers' ``longest_first`` rule
does, which sentence-transformers' ``CrossEncoder`` applies at the tokenizer's
``model_max_length``; a saved model records that length, so both sides see the same tokens and
give the same scores. ``segments`` (the default) cuts query and document on their own, which no
tokenizer setting expresses: there a saved model's tokenizer carries the pair's length, the
closest cut.
"""
from __future__ import annotations

import json
import random

import pytest
import torch
from test_backbones import one_thread, tiny_models  # noqa: F401  (fixtures)
from test_train_eval import make_config, toy  # noqa: F401  (fixture)
from tiny_models import FAMILIES, QUESTIONS, TOPICS

from irdistill.errors import IrdistillError
from irdistill.models import backbones
from irdistill.models.cross_encoder import CrossEncoder
from irdistill.models.tokenization import PairEncoder, longest_first

WORDS = " ".join(s for sentences in TOPICS.values() for s in sentences).split()


def test_longest_first_is_the_rule_of_the_tokenizers_own_tests():
    """The length table of the ``tokenizers`` library's own test of ``longest_first`` (pairs
    of 0, 2, 4 and 8 tokens cut to 7)."""
    sizes = {"empty": 0, "short": 2, "medium": 4, "long": 8}
    expected = {("empty", "long"): (0, 7), ("short", "long"): (2, 5),
                ("medium", "medium"): (3, 4), ("medium", "long"): (3, 4),
                ("long", "empty"): (7, 0), ("long", "short"): (5, 2),
                ("long", "medium"): (4, 3), ("long", "long"): (3, 4),
                ("short", "medium"): (2, 4), ("medium", "short"): (4, 2)}
    for (a, b), kept in expected.items():
        assert longest_first(sizes[a], sizes[b], 7) == kept, (a, b)


@pytest.mark.parametrize("family", ["bert", "roberta", "deberta-v3"])
def test_pair_truncation_gives_the_tokens_the_tokenizer_gives(family, tiny_models):
    """Random pairs and budgets: the assembled pair is the tokenizer's own
    ``tokenizer(q, d, truncation="longest_first", max_length=...)``, token for token, but for
    the one documented case (both sides longer than an odd budget)."""
    ce = CrossEncoder.from_pretrained(tiny_models(family), device="cpu")
    tokenizer = ce.tokenizer
    rng = random.Random(0)
    exact = cut = 0
    for _ in range(300):
        q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30)))
        d = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 60)))
        encoder = PairEncoder(tokenizer, rng.randint(1, 24), rng.randint(1, 48),
                              truncation="pair")
        q_ids, d_ids = encoder.encode_queries([q])[0], encoder.encode_docs([d])[0]
        budget = encoder.pair_budget
        if len(q_ids) > budget and len(d_ids) > budget and budget % 2:
            continue  # the documented exception (see PairEncoder.fit)
        row = encoder.collate([(q_ids, d_ids)])["input_ids"][0]
        ours = row[:encoder.pair_length(q_ids, d_ids)].tolist()
        theirs = tokenizer(q, d, truncation="longest_first",
                           max_length=encoder.max_model_length)["input_ids"]
        assert ours == theirs, (q, d, budget)
        exact += 1
        cut += len(theirs) == encoder.max_model_length
    assert exact > 200 and cut > 100  # most pairs checked, many of them cut


def long_pairs():
    """Documents far longer than the budgets below; short queries, and one query longer than
    the whole pair budget."""
    long_doc = " ".join(" ".join(s) for s in TOPICS.values())
    topics = list(TOPICS)
    pairs = [(QUESTIONS[t], " ".join(TOPICS[t]) + " " + long_doc) for t in topics[:4]]
    pairs.append((" ".join(TOPICS["bees"] * 2), long_doc))
    pairs.append((QUESTIONS["bees"], " ".join(TOPICS["bees"])))  # one that fits
    return pairs


@pytest.mark.parametrize("family", FAMILIES)
def test_pair_truncation_scores_the_same_in_sentence_transformers_on_long_documents(
        family, tiny_models, tmp_path):
    from sentence_transformers import CrossEncoder as STCrossEncoder

    ce = CrossEncoder.from_pretrained(tiny_models(family), max_query_length=8,
                                      max_doc_length=24, truncation="pair", device="cpu")
    pairs = long_pairs()
    docs = ce.encoder.encode_docs([d for _, d in pairs])
    assert sum(len(d) > ce.encoder.pair_budget for d in docs) >= 5  # documents are cut
    assert len(ce.encoder.encode_queries([pairs[4][0]])[0]) > ce.encoder.pair_budget
    limit = backbones.max_input_length(ce.model, ce.tokenizer)
    scores = ce.score(pairs)
    ce.save_pretrained(tmp_path / "m")

    st = STCrossEncoder(str(tmp_path / "m"), device="cpu")
    assert st.max_seq_length == 8 + 24 + ce.encoder.template.n_special
    assert st.predict(pairs).tolist() == pytest.approx(scores, abs=1e-5)

    again = CrossEncoder.from_pretrained(str(tmp_path / "m"), device="cpu")
    assert again.truncation == "pair" and again.score(pairs) == pytest.approx(scores, abs=1e-5)
    # the tokenizer's own limit comes back, not the pair's: a longer budget stays possible
    assert backbones.max_input_length(again.model, again.tokenizer) == limit
    longer = CrossEncoder.from_pretrained(str(tmp_path / "m"), max_doc_length=64, device="cpu")
    assert longer.encoder.pair_budget == 8 + 64


def test_segments_truncation_saves_the_pair_length_for_other_tools(tiny_models, tmp_path):
    """In the default scheme a saved model's tokenizer carries the pair's length (the cut
    other tools make), its settings the scheme and the tokenizer's own limit; pairs that fit
    score the same in sentence-transformers."""
    from sentence_transformers import CrossEncoder as STCrossEncoder

    ce = CrossEncoder.from_pretrained(tiny_models("bert"), max_query_length=16,
                                      max_doc_length=48, device="cpu")
    assert ce.truncation == "segments"
    ce.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "tokenizer_config.json").read_text())
    assert saved["model_max_length"] == 16 + 48 + 3
    settings = json.loads((tmp_path / "m" / "irdistill.json").read_text())
    assert settings["truncation"] == "segments"
    assert settings["tokenizer_max_length"] == ce.tokenizer.model_max_length == 128
    fits = long_pairs()[-1:]
    st = STCrossEncoder(str(tmp_path / "m"), device="cpu")
    assert st.predict(fits).tolist() == pytest.approx(ce.score(fits), abs=1e-5)


def test_a_model_saved_before_truncation_existed_loads_as_segments(tiny_models, tmp_path):
    ce = CrossEncoder.from_pretrained(tiny_models("bert"), device="cpu")
    ce.save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "irdistill.json"
    settings = json.loads(path.read_text())
    del settings["truncation"], settings["tokenizer_max_length"]
    path.write_text(json.dumps(settings))
    assert CrossEncoder.from_pretrained(str(tmp_path / "m"), device="cpu").truncation == \
        "segments"
    with pytest.raises(IrdistillError, match="unknown truncation 'pairs'"):
        CrossEncoder.from_pretrained(str(tmp_path / "m"), truncation="pairs", device="cpu")


def test_training_in_pair_truncation_saves_a_model_that_cuts_pairs(toy, tiny_bert, tmp_path):
    """The setting goes from the config to training and to the saved model, and is checked
    before any work; the default hashes as before the key existed."""
    from irdistill.config import config_hash, load_config
    from irdistill.train import engine

    with pytest.raises(IrdistillError, match="unknown model.truncation 'pairs'"):
        engine.train(make_config(toy, tiny_bert, "model.truncation=pairs"), tmp_path / "bad",
                     show_progress=False)
    assert not (tmp_path / "bad").exists()
    plain = load_config()
    assert config_hash(plain) == config_hash(load_config(overrides=[
        "model.truncation=segments"]))
    assert config_hash(plain) != config_hash(load_config(overrides=["model.truncation=pair"]))

    seen = []
    collate = PairEncoder.collate

    def spy(self, pairs):
        seen.append(self.truncation)
        return collate(self, pairs)

    engine_patch = pytest.MonkeyPatch()
    engine_patch.setattr(PairEncoder, "collate", spy)
    try:
        engine.train(make_config(toy, tiny_bert, "model.truncation=pair", "train.max_steps=2"),
                     tmp_path / "run", show_progress=False)
    finally:
        engine_patch.undo()
    assert seen and set(seen) == {"pair"}
    trained = CrossEncoder.from_pretrained(str(tmp_path / "run" / "model"), device="cpu")
    assert trained.truncation == "pair"


@pytest.fixture
def minilm_pair_model():
    torch.manual_seed(0)
    return CrossEncoder.from_pretrained("minilm", max_query_length=8, max_doc_length=24,
                                        truncation="pair", device="cpu")


def test_batch_planning_and_length_grouping_see_the_cut_lengths(minilm_pair_model,
                                                                monkeypatch):
    """What batches are planned on (``score_ids``) and groups ordered by
    (``ordering.group_length``) are the pairs' cut lengths, not the lengths as tokenised; and
    scores do not depend on the batch."""
    import numpy as np

    import irdistill.models.cross_encoder as ce_module  # where plan_batches is called
    from irdistill.data.groups import Group
    from irdistill.train.ordering import group_length

    model = minilm_pair_model
    encoder = model.encoder
    pairs = long_pairs()
    q_ids = encoder.encode_queries([q for q, _ in pairs])
    d_ids = encoder.encode_docs([d for _, d in pairs])
    cut = [encoder.pair_length(q, d) for q, d in zip(q_ids, d_ids)]
    assert max(cut) == encoder.max_model_length
    raw = [len(q) + len(d) + encoder.template.n_special for q, d in zip(q_ids, d_ids)]
    assert max(raw) > encoder.max_model_length  # cutting changes them
    assert encoder.pair_lengths(np.array([len(q) for q in q_ids]),
                                np.array([len(d) for d in d_ids])).tolist() == cut

    planned = []
    plan = ce_module.plan_batches

    def spy(lengths, *args, **kwargs):
        planned.extend(int(n) for n in lengths)
        return plan(lengths, *args, **kwargs)

    monkeypatch.setattr(ce_module, "plan_batches", spy)
    together = model.score(pairs)
    assert sorted(planned) == sorted(cut)
    monkeypatch.undo()
    assert together == pytest.approx([model.score([p])[0] for p in pairs], abs=1e-5)

    queries = {"q": q_ids[4]}
    docs = {f"d{i}": d for i, d in enumerate(d_ids)}
    group = Group("q", list(docs), [0.0] * len(docs))
    assert group_length(encoder, queries, docs, group) == max(
        encoder.pair_length(q_ids[4], d) for d in d_ids) <= encoder.max_model_length


def test_loading_a_pair_model_with_the_other_scheme_says_so(tiny_models, tmp_path, caplog):
    ce = CrossEncoder.from_pretrained(tiny_models("bert"), truncation="pair", device="cpu")
    ce.save_pretrained(tmp_path / "m")
    with caplog.at_level("WARNING", logger="irdistill.models.cross_encoder"):
        CrossEncoder.from_pretrained(str(tmp_path / "m"), device="cpu")
        assert not caplog.records  # its own scheme: nothing to say
        again = CrossEncoder.from_pretrained(str(tmp_path / "m"), truncation="segments",
                                             device="cpu")
    assert again.truncation == "segments"
    assert "trained with truncation=pair; loaded with truncation=segments" in caplog.text
