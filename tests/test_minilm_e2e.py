"""End to end with the real bundled MiniLM on a slice of SciFact (about a minute on 2 cores)."""
import json

import pytest

from irdistill.config import load_config
from irdistill.data.collection import load_collection
from irdistill.data.trec import ranked
from irdistill.evaluation.metrics import evaluate
from irdistill.evaluation.rerank import rerank_run
from irdistill.models.cross_encoder import CrossEncoder
from irdistill.retrieval.bm25 import bm25_run
from irdistill.train.engine import train


@pytest.mark.slow
def test_minilm_learns_on_a_scifact_slice(tmp_path, scifact_available):
    config = load_config(overrides=[
        "data.max_queries=96", "data.negatives=3", "model.max_doc_length=96",
        "train.batch_size=8", "train.max_steps=12", "train.lr=1e-4", "train.head_lr=1e-3",
        "train.logging_steps=1", "train.precision=bf16", "train.warmup_ratio=0.1",
        "loss=infonce"])
    model_dir = train(config, tmp_path / "run", show_progress=False)
    steps = [json.loads(l) for l in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    losses = [s["loss"] for s in steps if "loss" in s]
    assert len(losses) == 12
    # the loss of 1 positive among 4 starts near log(4) and must fall
    assert sum(losses[:3]) / 3 > 1.3
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.1

    test = load_collection("beir/scifact/test")
    queries = sorted(test.qrels)[:60]
    candidates = {q: dict(ranked(docs, 10)) for q, docs in bm25_run(test, 10, query_ids=queries).items()}
    trained = CrossEncoder.from_pretrained(str(model_dir), precision="bf16", device="cpu")
    scored = rerank_run(trained, test, candidates, depth=10, show_progress=False)
    assert set(scored) == set(candidates)
    assert all(set(scored[q]) == set(candidates[q]) for q in candidates)
    result = evaluate(scored, {q: test.qrels[q] for q in queries}, ["nDCG@10"])
    assert 0.0 < result.aggregate["nDCG@10"] <= 1.0
