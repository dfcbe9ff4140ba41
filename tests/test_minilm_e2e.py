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
from irdistill.train.engine import build_training_groups, candidate_run, train


@pytest.mark.slow
def test_minilm_learns_on_a_scifact_slice(tmp_path, scifact_available):
    """MiniLM fits 8 training queries (positives above BM25 negatives), then re-ranks test."""
    config = load_config(overrides=[
        "data.max_queries=8", "data.negatives=3", "data.sampling=top",
        "model.max_doc_length=64", "train.epochs=12", "train.batch_size=8",
        "train.lr=2e-4", "train.head_lr=2e-3", "train.logging_steps=1", "train.warmup_ratio=0.1",
        "loss=infonce"])
    model_dir = train(config, tmp_path / "run", show_progress=False)
    steps = [json.loads(l) for l in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    losses = [s["loss"] for s in steps if "loss" in s]
    assert len(losses) == 12
    # 1 positive among 4 starts near log(4) = 1.386 and must fall well below it
    assert sum(losses[:2]) / 2 > 1.2
    assert sum(losses[-3:]) / 3 < 0.9

    train_collection = load_collection("beir/scifact/train")
    groups = build_training_groups(config, train_collection,
                                   candidate_run(config, train_collection))[:8]
    before = CrossEncoder.from_pretrained("minilm", max_doc_length=64, device="cpu")
    after = CrossEncoder.from_pretrained(str(model_dir), device="cpu")

    def positive_first(model):
        hits = 0
        for g in groups:
            docs = train_collection.docs.get_many(g.doc_ids)
            query = train_collection.queries[g.query_id]
            scores = model.score([(query, docs[d]) for d in g.doc_ids])
            hits += scores[0] > max(scores[1:])
        return hits

    assert positive_first(after) >= 6 > positive_first(before) - 1

    test = load_collection("beir/scifact/test")
    queries = sorted(test.qrels)[:30]
    candidates = {q: dict(ranked(docs, 5)) for q, docs in bm25_run(test, 5, query_ids=queries).items()}
    scored = rerank_run(after, test, candidates, depth=5, show_progress=False)
    assert {q: set(d) for q, d in scored.items()} == {q: set(d) for q, d in candidates.items()}
    result = evaluate(scored, {q: test.qrels[q] for q in queries}, ["nDCG@10"])
    assert len(result.per_query) == 30 and 0.0 < result.aggregate["nDCG@10"] <= 1.0
