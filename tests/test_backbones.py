"""Five backbone families through one code path.

For BERT, RoBERTa, ELECTRA, DeBERTa-v3 and ModernBERT, a tiny randomly initialised model with a
tokenizer of its own kind (see ``tiny_models.py``) is trained by ``irdistill train`` on every
objective of the study that the loss library has, and must: lower the loss on a fixed batch,
save, reload with the same scores, and load in sentence-transformers' ``CrossEncoder`` with the
same scores. The family differences (pair layout, token types, padding id, position limits, the
head, attention kernel, precision) are checked one by one.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from tiny_models import FAMILIES, HUB_NAMES, QUESTIONS, TOPICS, build_tiny_model
from typer.testing import CliRunner

from irdistill.cli import app
from irdistill.config import load_config
from irdistill.errors import IrdistillError
from irdistill.losses import LOSSES
from irdistill.models import backbones
from irdistill.models.cross_encoder import CrossEncoder

#: the objectives of the reproduction study the matrix covers, as far as the library has them
OBJECTIVES = ("bce", "infonce", "margin_mse", "ranknet")  # the objectives of the studies
REPO = Path(__file__).resolve().parent.parent

runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models are fastest on one thread (and do not fight other jobs for the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """One tiny model folder per family (built on first use)."""
    root = tmp_path_factory.mktemp("tiny-backbones")
    built: dict[str, str] = {}

    def get(family: str) -> str:
        if family not in built:
            built[family] = build_tiny_model(family, root / family)
        return built[family]

    return get


@pytest.fixture(scope="module")
def mini_collection(tmp_path_factory):
    """A BEIR-layout collection of 8 topics x 3 documents, one judged document per query, and a
    candidate run: for each query its own 3 documents and 3 off-topic ones (6 per group)."""
    folder = tmp_path_factory.mktemp("mini-collection")
    (folder / "qrels").mkdir()
    with open(folder / "corpus.jsonl", "w") as f:
        for topic, texts in TOPICS.items():
            for i, text in enumerate(texts):
                f.write(json.dumps({"_id": f"{topic}{i}", "title": "", "text": text}) + "\n")
    with open(folder / "queries.jsonl", "w") as f:
        for topic, question in QUESTIONS.items():
            f.write(json.dumps({"_id": topic, "text": question}) + "\n")
    (folder / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{t}\t{t}0\t1\n" for t in QUESTIONS))
    topics = list(TOPICS)
    lines = []
    for n, q in enumerate(topics):
        others = [topics[(n + k) % len(topics)] for k in (1, 2, 3)]
        docs = [f"{q}0", f"{q}1", f"{q}2"] + [f"{o}1" for o in others]
        lines += [f"{q} Q0 {d} {r + 1} {10 - r} bm25" for r, d in enumerate(docs)]
    (folder / "run.trec").write_text("\n".join(lines) + "\n")
    return folder


def train_overrides(model: str, collection: Path, loss: str, steps: int = 12) -> list[str]:
    """Settings that make every step see the same 8 groups of 6 documents."""
    return [f"model.name={model}", f"data.collection={collection}", "data.split=train",
            f"data.run={collection / 'run.trec'}", "data.negatives=5", "data.sampling=top",
            "train.batch_size=8", f"train.epochs={steps}", "train.lr=5e-3",
            "train.scheduler=constant", "train.warmup_ratio=0", "train.weight_decay=0",
            "train.logging_steps=1", "train.save_steps=1000", "model.max_query_length=16",
            "model.max_doc_length=64", f"loss={loss}"]


def cli_train(output: Path, overrides: list[str]):
    args = ["train", "--output", str(output)]
    for item in overrides:
        args += ["--set", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return output / "model"


def fixed_batch_loss(model_dir: str, overrides: list[str]) -> float:
    """The objective on one fixed batch (every training group once), model in eval mode."""
    from irdistill.data.collection import load_collection
    from irdistill.data.trec import read_run
    from irdistill.train.data import GroupCollator, tokenise_groups
    from irdistill.train.sources import group_source

    config = load_config(None, overrides + ["train.epochs=1"])
    ce = CrossEncoder.from_pretrained(model_dir, max_query_length=config.model.max_query_length,
                                      max_doc_length=config.model.max_doc_length, device="cpu")
    collection = load_collection(config.data.collection, config.data.split)
    groups = group_source(config.data).groups(config, collection, read_run(config.data.run))
    assert len(groups) == 8 and all(len(g.doc_ids) == 6 for g in groups)
    query_tokens, doc_tokens = tokenise_groups(ce.encoder, collection, groups)
    batch = GroupCollator(ce.encoder, query_tokens, doc_tokens)(groups)
    targets, mask = batch.pop("targets"), batch.pop("mask")
    ce.model.eval()
    with torch.no_grad():
        logits = ce.model(**batch).logits[:, 0]
    scores = torch.zeros(mask.shape).masked_scatter(mask, logits.float())
    return LOSSES[config.loss](scores, targets, mask, **config.loss_params).item()


def probe_pairs() -> list[tuple[str, str]]:
    """Short pairs (nothing is truncated), every query against an on- and an off-topic text."""
    topics = list(TOPICS)
    return [(QUESTIONS[t], TOPICS[t][0]) for t in topics] + [
        (QUESTIONS[t], TOPICS[topics[(i + 1) % len(topics)]][2]) for i, t in enumerate(topics)]


# -- the matrix ------------------------------------------------------------------------------
def test_the_matrix_is_five_families_by_the_four_study_objectives():
    """The matrix below cannot shrink silently: every family the studies name, every study
    objective, each in the loss library."""
    assert FAMILIES == ("bert", "roberta", "electra", "deberta-v3", "modernbert")
    assert set(OBJECTIVES) <= set(LOSSES) and len(OBJECTIVES) == 4


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("family", FAMILIES)
def test_train_save_reload_and_sentence_transformers(family, objective, tiny_models,
                                                     mini_collection, tmp_path, monkeypatch):
    from sentence_transformers import CrossEncoder as STCrossEncoder

    start = tiny_models(family)
    overrides = train_overrides(start, mini_collection, objective)
    before = fixed_batch_loss(start, overrides)
    pairs = probe_pairs()
    in_memory = {}  # the trained model's scores, taken as the engine saves it
    save = CrossEncoder.save_pretrained

    def scoring_save(self, directory, *args, **kwargs):
        in_memory["scores"] = self.score(pairs)
        return save(self, directory, *args, **kwargs)

    monkeypatch.setattr(CrossEncoder, "save_pretrained", scoring_save)
    model_dir = cli_train(tmp_path / "run", overrides)
    monkeypatch.undo()

    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text()
           .splitlines()]
    assert [s["step"] for s in log if "loss" in s] == list(range(1, 13))
    after = fixed_batch_loss(str(model_dir), overrides)
    assert after < 0.9 * before, (before, after)

    trained = CrossEncoder.from_pretrained(str(model_dir), device="cpu")
    assert (trained.max_query_length, trained.max_doc_length) == (16, 64)
    # nothing is cut, so other tools see the same pairs
    assert max(map(len, trained.encoder.encode_queries([q for q, _ in pairs]))) < 16
    assert max(map(len, trained.encoder.encode_docs([d for _, d in pairs]))) < 64
    scores = trained.score(pairs)
    assert len(set(round(s, 6) for s in scores)) > 1  # a real function of the input
    assert scores == pytest.approx(in_memory["scores"], abs=1e-5)

    trained.save_pretrained(tmp_path / "again")  # and round trips once more
    again = CrossEncoder.from_pretrained(str(tmp_path / "again"), device="cpu")
    assert again.score(pairs) == pytest.approx(scores, abs=1e-5)
    assert (again.max_query_length, again.max_doc_length) == (16, 64)
    st = STCrossEncoder(str(model_dir), device="cpu")
    assert st.predict(pairs).tolist() == pytest.approx(scores, abs=1e-4)

    card = (model_dir / "README.md").read_text()
    assert f"**Objective:** `{objective}`" in card and "**Steps:** 12" in card


# -- what differs between families -----------------------------------------------------------
EXPECTED_LAYOUT = {  # (special tokens around q and d, token type ids fed to the model)
    "bert": (("[CLS]",), ("[SEP]",), ("[SEP]",), True),
    "electra": (("[CLS]",), ("[SEP]",), ("[SEP]",), True),
    "roberta": (("<s>",), ("</s>", "</s>"), ("</s>",), False),
    "deberta-v3": (("[CLS]",), ("[SEP]",), ("[SEP]",), False),  # type_vocab_size = 0
    "modernbert": (("[CLS]",), ("[SEP]",), ("[SEP]",), False),  # forward has no token types
}


@pytest.mark.parametrize("family", FAMILIES)
def test_pairs_come_out_as_the_family_expects(family, tiny_models):
    from transformers import AutoTokenizer

    folder = tiny_models(family)
    ce = CrossEncoder.from_pretrained(folder, max_query_length=16, max_doc_length=64,
                                      device="cpu")
    tok = AutoTokenizer.from_pretrained(folder)
    prefix, middle, suffix, types = EXPECTED_LAYOUT[family]
    t = ce.encoder.template
    assert tok.convert_ids_to_tokens(list(t.prefix)) == list(prefix)
    assert tok.convert_ids_to_tokens(list(t.middle)) == list(middle)
    assert tok.convert_ids_to_tokens(list(t.suffix)) == list(suffix)
    assert ce.encoder.use_token_types is types
    assert ce.encoder.pad_id == ce.model.config.pad_token_id == tok.pad_token_id

    (q, d), (q2, d2) = probe_pairs()[:2]
    batch = ce.encoder.collate([(ce.encoder.encode_queries([q])[0], ce.encoder.encode_docs([d])[0]),
                                (ce.encoder.encode_queries([q2])[0],
                                 ce.encoder.encode_docs([d2])[0])])
    assert ("token_type_ids" in batch) is types
    reference = tok(q, d)  # the family's own pair encoding
    n = len(reference["input_ids"])
    assert batch["input_ids"][0, :n].tolist() == reference["input_ids"]
    assert batch["attention_mask"][0].sum().item() == n
    assert batch["input_ids"][0, n:].eq(ce.encoder.pad_id).all()
    if types:
        assert batch["token_type_ids"][0, :n].tolist() == reference["token_type_ids"]
    with torch.no_grad():  # the model takes exactly these inputs
        assert ce.model(**batch).logits.shape == (2, 1)


@pytest.mark.parametrize("family", FAMILIES)
def test_query_and_document_are_cut_to_their_own_lengths(family, tiny_models):
    from transformers import AutoTokenizer

    folder = tiny_models(family)
    ce = CrossEncoder.from_pretrained(folder, max_query_length=5, max_doc_length=9, device="cpu")
    tok = AutoTokenizer.from_pretrained(folder)
    long_query = " ".join(QUESTIONS.values())
    long_doc = " ".join(TOPICS["stars"] + TOPICS["bees"])
    q = ce.encoder.encode_queries([long_query])[0]
    d = ce.encoder.encode_docs([long_doc])[0]
    assert q == tok(long_query, add_special_tokens=False)["input_ids"][:5]
    assert d == tok(long_doc, add_special_tokens=False)["input_ids"][:9]
    batch = ce.encoder.collate([(q, d)])
    assert batch["attention_mask"].sum().item() == 5 + 9 + ce.encoder.template.n_special


@pytest.mark.parametrize("family", FAMILIES)
def test_pairs_fit_the_models_positions(family, tmp_path):
    """A model with 24 positions (RoBERTa: 24 usable after its padding offset) scores long
    texts: the document, then the query, shrink so every padded pair fits."""
    folder = build_tiny_model(family, tmp_path / family, max_positions=24)
    n_special = len(EXPECTED_LAYOUT[family][0] + EXPECTED_LAYOUT[family][1]
                    + EXPECTED_LAYOUT[family][2])
    greedy = CrossEncoder.from_pretrained(folder, max_query_length=32, max_doc_length=256,
                                          device="cpu")
    assert (greedy.max_query_length, greedy.max_doc_length) == (24 - n_special - 1, 1)
    ce = CrossEncoder.from_pretrained(folder, max_query_length=8, max_doc_length=256,
                                      device="cpu")
    assert backbones.max_input_length(ce.model, ce.tokenizer) == 24
    assert (ce.max_query_length, ce.max_doc_length) == (8, 24 - n_special - 8)
    long_text = " ".join(t for texts in TOPICS.values() for t in texts)
    pairs = [(long_text, long_text), ("bees", "honey")]
    q_ids = ce.encoder.encode_queries([q for q, _ in pairs])
    d_ids = ce.encoder.encode_docs([d for _, d in pairs])
    batch = ce.encoder.collate(list(zip(q_ids, d_ids)))
    assert batch["input_ids"].shape[1] <= 24  # padding to a multiple of 8 stops at the limit
    scores = ce.score(pairs)
    assert len(scores) == 2 and all(torch.isfinite(torch.tensor(scores)))


@pytest.mark.parametrize("family", FAMILIES)
def test_relative_and_rotary_positions_take_long_inputs(family, tmp_path):
    """With 24 pre-trained positions and no tokenizer limit, absolute positions (BERT, ELECTRA,
    RoBERTa) still cap pairs at 24 tokens; DeBERTa-v3 (relative) and ModernBERT (rotary) take
    longer pairs, as the study's 1024-token DeBERTa-v3 and Ettin runs need."""
    from sentence_transformers import CrossEncoder as STCrossEncoder

    folder = build_tiny_model(family, tmp_path / family, max_positions=24,
                              model_max_length=10**30)
    ce = CrossEncoder.from_pretrained(folder, max_query_length=16, max_doc_length=96,
                                      device="cpu")
    relative = family in ("deberta-v3", "modernbert")
    assert backbones.max_input_length(ce.model, ce.tokenizer) == (None if relative else 24)
    pair = (QUESTIONS["bees"], " ".join(TOPICS["bees"]))
    q, d = ce.encoder.encode_queries([pair[0]])[0], ce.encoder.encode_docs([pair[1]])[0]
    length = ce.encoder.pair_length(q, d)
    assert (length > 24) is relative
    score = ce.score([pair])
    if relative:  # uncut, so sentence-transformers (told the length) scores it the same
        assert len(q) < 16 and len(d) < 96
        st = STCrossEncoder(folder, device="cpu", activation_fn=torch.nn.Identity())
        st.max_seq_length = 128  # it would cut at max_position_embeddings
        assert st.predict([pair]).tolist() == pytest.approx(score, abs=1e-4)


def test_roberta_counts_positions_after_the_padding_id(tiny_models):
    ce = CrossEncoder.from_pretrained(tiny_models("roberta"), device="cpu")
    assert ce.model.config.pad_token_id == 1
    assert backbones.position_offset(ce.model) == 2
    assert backbones.max_input_length(ce.model, ce.tokenizer) == (
        ce.model.config.max_position_embeddings - 2)
    bert = CrossEncoder.from_pretrained(tiny_models("bert"), device="cpu")
    assert backbones.position_offset(bert.model) == 0


HEADS = {"bert": {"classifier"}, "electra": {"classifier"}, "roberta": {"classifier"},
         "deberta-v3": {"pooler", "classifier"}, "modernbert": {"head", "classifier"}}


@pytest.mark.parametrize("family", FAMILIES)
def test_the_head_of_every_family_is_found(family, tmp_path):
    """An encoder checkpoint without a head gets a new one: exactly the parameters
    transformers initialises anew belong to the head, and the head is outside the encoder."""
    from transformers import AutoModelForSequenceClassification

    folder = build_tiny_model(family, tmp_path / family, head=False)
    model, info = AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=1, output_loading_info=True)
    head = set(backbones.head_parameter_names(model))
    assert {n.split(".")[0] for n in head} == HEADS[family]
    assert set(info["missing_keys"]) <= head and info["missing_keys"]
    encoder, head_params = backbones.split_parameters(model)
    assert {n for n, _ in head_params} == head
    assert all(n.startswith(model.base_model_prefix + ".") for n, _ in encoder)


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_gradient_checkpointing_and_head_lr(family, tiny_models, mini_collection,
                                                 tmp_path):
    """bf16 autocast and gradient checkpointing run on a CPU, and train.head_lr reaches the
    head: with head_lr=0 the head stays as it was while the encoder learns."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    from irdistill.train.engine import train

    start = tiny_models(family)
    seen = {"dtypes": set(), "checkpointed": False}

    def hook(module, args, output):
        if module.training and isinstance(module, torch.nn.Linear):
            seen["dtypes"].add(output.dtype)
        if module.training and isinstance(module, GradientCheckpointingLayer):
            seen["checkpointed"] |= module.gradient_checkpointing

    overrides = train_overrides(start, mini_collection, "bce", steps=3) + [
        "train.precision=bf16", "train.gradient_checkpointing=true", "train.head_lr=0"]
    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        model_dir = train(load_config(None, overrides), tmp_path / "run", show_progress=False)
    finally:
        handle.remove()
    assert torch.bfloat16 in seen["dtypes"] and seen["checkpointed"]

    from transformers import AutoModelForSequenceClassification

    before = AutoModelForSequenceClassification.from_pretrained(start).state_dict()
    after = AutoModelForSequenceClassification.from_pretrained(model_dir)
    assert after.dtype == torch.float32  # weights stay fp32; only the compute was bf16
    head = set(backbones.head_parameter_names(after))
    params = dict(after.named_parameters())
    assert all(torch.equal(params[n], before[n]) for n in head)
    changed = [n for n, p in params.items() if n not in head and not torch.equal(p, before[n])]
    assert changed, "the encoder did not train"
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text()
           .splitlines() if '"loss"' in line]
    assert len(log) == 3 and all(torch.isfinite(torch.tensor(s["loss"])) for s in log)


def test_deberta_refuses_fp16(tiny_models, mini_collection, tmp_path):
    overrides = train_overrides(tiny_models("deberta-v3"), mini_collection, "bce", steps=1)
    result = runner.invoke(app, ["train", "--output", str(tmp_path / "run"), *[
        a for o in overrides + ["train.precision=fp16"] for a in ("--set", o)]])
    assert result.exit_code == 2
    assert "fp16" in result.output and "train.precision=bf16" in result.output
    assert not (tmp_path / "run" / "model").exists()


def test_torch_compile_option_reaches_the_trainer(tiny_models, mini_collection, tmp_path,
                                                  monkeypatch):
    """train.torch_compile compiles the trainer's model (dynamo's 'eager' backend: no C++ build
    on a CPU), its training steps run through dynamo, and the saved model is a plain
    checkpoint."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from irdistill.train.engine import train

    compiled = []  # (class of the model handed to torch.compile, backend)
    real_compile = torch.compile

    def spy(model=None, **kwargs):
        compiled.append((type(model).__name__, kwargs.get("backend")))
        return real_compile(model, **kwargs)

    monkeypatch.setattr(torch, "compile", spy)
    torch._dynamo.reset()
    counters.clear()
    overrides = train_overrides(tiny_models("bert"), mini_collection, "bce", steps=2) + [
        "train.torch_compile=true", "train.torch_compile_backend=eager"]
    model_dir = train(load_config(None, overrides), tmp_path / "run", show_progress=False)
    assert compiled == [("BertForSequenceClassification", "eager")]
    assert sum(counters["frames"].values()) > 0  # frames went through dynamo
    torch._dynamo.reset()
    ce = CrossEncoder.from_pretrained(str(model_dir), device="cpu")
    assert not any(k.startswith("_orig_mod") for k in ce.model.state_dict())
    assert len(ce.score(probe_pairs()[:2])) == 2


# -- attention kernel ------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_attention_implementation(family, tiny_models, monkeypatch, caplog):
    from transformers import AutoConfig

    folder = tiny_models(family)
    config = AutoConfig.from_pretrained(folder)
    sdpa = "eager" if family == "deberta-v3" else "sdpa"  # DeBERTa has no SDPA kernel
    assert backbones.resolve_attn_implementation(None, config, "cpu") == sdpa
    assert backbones.resolve_attn_implementation("auto", config, "cpu") == sdpa
    assert backbones.resolve_attn_implementation("eager", config, "cpu") == "eager"
    with caplog.at_level(logging.WARNING, logger="irdistill.models.backbones"):
        assert backbones.resolve_attn_implementation("flash_attention_2", config, "cpu") == sdpa
    assert "FlashAttention-2 is not available" in caplog.text
    ce = CrossEncoder.from_pretrained(folder, attn_implementation="flash_attention_2",
                                      device="cpu")
    assert ce.model.config._attn_implementation == sdpa
    assert len(ce.score(probe_pairs()[:2])) == 2
    # on a GPU with flash-attn, 'auto' picks FlashAttention-2 where the model class has it
    monkeypatch.setattr(backbones, "flash_attention_available", lambda device=None: True)
    expected = sdpa if family == "deberta-v3" else "flash_attention_2"
    assert backbones.resolve_attn_implementation("auto", config, "cuda") == expected
    with pytest.raises(IrdistillError, match="did you mean 'sdpa'"):
        backbones.resolve_attn_implementation("spda", config, "cpu")


def test_config_selects_the_attention_kernel(tiny_models, mini_collection, tmp_path):
    overrides = train_overrides(tiny_models("modernbert"), mini_collection, "bce", steps=1)
    result = runner.invoke(app, ["train", "--output", str(tmp_path / "run"), *[
        a for o in overrides + ["model.attn_implementation=flash"] for a in ("--set", o)]])
    assert result.exit_code == 2 and "unknown attention implementation 'flash'" in result.output
    config = load_config(None, overrides + ["model.attn_implementation=eager"])
    assert config.model.attn_implementation == "eager"


# -- model card and catalogue ----------------------------------------------------------------
def read_front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_model_card_of_a_trained_model(tiny_models, mini_collection, tmp_path):
    from irdistill.models.model_card import add_evaluation

    overrides = train_overrides(tiny_models("electra"), mini_collection, "infonce", steps=2)
    model_dir = cli_train(tmp_path / "run", overrides + ["loss_params.temperature=0.5"])
    text = (model_dir / "README.md").read_text()
    meta = read_front_matter(text)
    assert meta["library_name"] == "sentence-transformers"
    assert meta["pipeline_tag"] == "text-ranking"
    assert {"cross-encoder", "reranker", "loss:infonce"} <= set(meta["tags"])
    assert "base_model" not in meta  # a local folder is not a hub model
    assert tiny_models("electra") in text  # ... but the card names it
    for fact in ("`infonce` (temperature=0.5)", "none (relevance labels)", "**Steps:** 2",
                 "groups=16", "documents_per_group=6", "lr=0.005",
                 "ElectraForSequenceClassification",
                 "No evaluation figures recorded yet."):
        assert fact in text, fact

    from irdistill.provenance import model_fingerprint

    fingerprint = model_fingerprint(str(model_dir))
    add_evaluation(model_dir, "beir/scifact/test", {"nDCG@10": 0.6123, "RR@10": 0.58})
    # the model's files are unchanged: scores cached under its fingerprint stay valid
    assert model_fingerprint(str(model_dir)) == fingerprint
    text = (model_dir / "README.md").read_text()
    meta = read_front_matter(text)
    metrics = meta["model-index"][0]["results"][0]["metrics"]
    assert {m["type"]: m["value"] for m in metrics} == {"ndcg_at_10": 0.6123, "rr_at_10": 0.58}
    assert "| beir/scifact/test | 0.6123 | 0.5800 |" in text
    assert "**Steps:** 2" in text  # the training record survives the rewrite
    # the model still loads as before and keeps its card when saved again
    ce = CrossEncoder.from_pretrained(str(model_dir), device="cpu")
    ce.save_pretrained(tmp_path / "copy")
    copy = (tmp_path / "copy" / "README.md").read_text()
    assert "0.6123" in copy and tiny_models("electra") in copy


def test_model_card_names_hub_base_models(tmp_path):
    from irdistill.models.model_card import render_card

    for name, hub in [("microsoft/deberta-v3-base", "microsoft/deberta-v3-base"),
                      ("minilm", "sentence-transformers/all-MiniLM-L6-v2")]:
        text = render_card({"base_model": name, "max_query_length": 32, "max_doc_length": 192},
                           {"architectures": ["X"], "model_type": "x"}, "my-reranker")
        assert read_front_matter(text)["base_model"] == hub
        assert f"(https://huggingface.co/{hub})" in text
        assert "No training record" in text


def test_every_saved_model_has_a_card(minilm_path, tmp_path):
    ce = CrossEncoder.from_pretrained("minilm", device="cpu")
    ce.save_pretrained(tmp_path / "m")
    meta = read_front_matter((tmp_path / "m" / "README.md").read_text())
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"


def test_catalogue_is_documented():
    doc = (REPO / "docs" / "backbones.md").read_text()
    for name, entry in backbones.CATALOGUE.items():
        assert f"`{name}`" in doc, name
    assert set(HUB_NAMES.values()) <= set(backbones.CATALOGUE)
    assert backbones.CATALOGUE["microsoft/deberta-v3-base"].model_type == "deberta-v2"
    assert "bf16" in doc and "arXiv 2603.03010" in doc
