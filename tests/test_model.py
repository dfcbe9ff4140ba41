import pytest
import torch

from irdistill import CrossEncoder
from irdistill.errors import IrdistillError
from irdistill.models.tokenization import read_template

PAIRS = [("what is a cell", "A cell is the basic unit of life."),
         ("dogs", "Cats are not dogs, but both are pets that people keep at home."),
         ("stars in the sky", "Stars are balls of hot plasma.")]


def test_pair_template_of_bert(minilm_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path)
    t = read_template(tok)
    assert t.prefix == (tok.cls_token_id,) and t.middle == (tok.sep_token_id,)
    assert t.suffix == (tok.sep_token_id,) and (t.type_a, t.type_b) == (0, 1)


def test_pairs_match_the_tokenizer_and_only_truncate_documents(tiny_bert):
    from transformers import AutoTokenizer

    ce = CrossEncoder.from_pretrained(tiny_bert, max_query_length=8, max_doc_length=6,
                                      device="cpu")
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    q, d = PAIRS[1]
    batch = ce.encoder.collate([(ce.encoder.encode_queries([q])[0],
                                 ce.encoder.encode_docs([d])[0])])
    q_ids = tok(q, add_special_tokens=False)["input_ids"]
    d_ids = tok(d, add_special_tokens=False)["input_ids"][:6]
    expected = tok.build_inputs_with_special_tokens(q_ids, d_ids) if hasattr(
        tok, "build_inputs_with_special_tokens") else [tok.cls_token_id, *q_ids,
                                                       tok.sep_token_id, *d_ids, tok.sep_token_id]
    n = len(expected)
    assert batch["input_ids"][0, :n].tolist() == expected
    assert batch["input_ids"].shape[1] % 8 == 0  # padded to a multiple of 8
    assert batch["attention_mask"][0].sum() == n
    assert batch["token_type_ids"][0, :n].tolist() == [0] * (len(q_ids) + 2) + [1] * (
        len(d_ids) + 1)


def test_score_is_independent_of_batching_and_order(tiny_bert):
    ce = CrossEncoder.from_pretrained(tiny_bert, device="cpu")
    one_by_one = [ce.score([p])[0] for p in PAIRS]
    together = ce.score(PAIRS, batch_size=2)
    assert together == pytest.approx(one_by_one, abs=1e-5)


def test_rerank_gives_each_document_its_own_score(tmp_path):
    """A tiny model whose scores spread (a random tiny model's differ by ~1e-5), so that a
    score attached to the wrong document would show."""
    from tiny_models import build_tiny_model

    ce = CrossEncoder.from_pretrained(build_tiny_model("bert", tmp_path / "m",
                                                       initializer_range=0.2), device="cpu")
    query = PAIRS[0][0]
    for docs in ([d for _, d in PAIRS], [d for _, d in PAIRS][::-1]):  # in two input orders
        ranking = ce.rerank(query, docs)
        assert sorted(i for i, _ in ranking) == [0, 1, 2]
        assert [s for _, s in ranking] == sorted((s for _, s in ranking), reverse=True)
        alone = [ce.score([(query, d)])[0] for d in docs]
        assert min(abs(alone[i] - alone[j]) for i in range(3) for j in range(i)) > 1e-3
        for i, score in ranking:  # each score is its own document's
            assert score == pytest.approx(alone[i], abs=1e-5)


def test_save_reload_and_sentence_transformers_load(tmp_path, minilm_path):
    """A saved model is a plain HF checkpoint: sentence-transformers gives the same scores."""
    from sentence_transformers import CrossEncoder as STCrossEncoder

    torch.manual_seed(0)
    ce = CrossEncoder.from_pretrained("minilm", device="cpu")
    expected = ce.score(PAIRS)
    ce.save_pretrained(tmp_path / "m")
    again = CrossEncoder.from_pretrained(str(tmp_path / "m"), device="cpu")
    assert again.score(PAIRS) == pytest.approx(expected, abs=1e-5)
    assert again.max_doc_length == ce.max_doc_length
    st = STCrossEncoder(str(tmp_path / "m"), device="cpu")
    assert st.predict(PAIRS).tolist() == pytest.approx(expected, abs=1e-5)


def test_num_hidden_layers_cuts_the_model():
    ce = CrossEncoder.from_pretrained("minilm", num_hidden_layers=2, device="cpu")
    assert len(ce.model.bert.encoder.layer) == 2
    with pytest.raises(IrdistillError, match="exceeds"):
        CrossEncoder.from_pretrained("minilm", num_hidden_layers=99, device="cpu")


def test_bad_model_folders(tmp_path):
    with pytest.raises(IrdistillError, match="not found"):
        CrossEncoder.from_pretrained(str(tmp_path / "missing" / "model"))
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text("{}")
    with pytest.raises(IrdistillError, match="no weights"):
        CrossEncoder.from_pretrained(str(tmp_path / "noweights"))
    with pytest.raises(IrdistillError, match="no config.json"):
        CrossEncoder.from_pretrained(str(tmp_path))
