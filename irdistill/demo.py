"""The offline demo: BM25 -> MiniLM cross-encoder trained on SciFact -> re-ranked test run.

Runs with no network on BEIR SciFact through ir_datasets and the bundled MiniLM, and prints
nDCG@10 and RR@10 of BM25, the untrained model and the trained re-ranker. ``results.json``
maps each system to its measures; the runs, per-query values and the model stay in the
output folder. The training recipe (:data:`DEMO_RECIPE`) was chosen to finish within 15
minutes on a 2-core CPU; on a GPU the same command uses the GPU.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from irdistill.config import load_config
from irdistill.data.collection import load_collection
from irdistill.data.trec import ranked, write_run
from irdistill.evaluation.metrics import evaluate
from irdistill.evaluation.rerank import rerank_run
from irdistill.io import write_json
from irdistill.models.cross_encoder import CrossEncoder
from irdistill.retrieval.bm25 import bm25_run
from irdistill.train.engine import train
from irdistill.utils import seed_everything

log = logging.getLogger(__name__)

TRAIN_COLLECTION = "beir/scifact/train"
TEST_COLLECTION = "beir/scifact/test"
MEASURES = ("nDCG@10", "RR@10")
RERANK_DEPTH = 20

DEMO_RECIPE = {
    "data": {"collection": TRAIN_COLLECTION, "depth": 100, "negatives": 7, "sampling": "random"},
    "model": {"name": "minilm", "max_query_length": 32, "max_doc_length": 160},
    "loss": "infonce",
    "train": {"epochs": 1, "batch_size": 8, "lr": 1e-4, "warmup_ratio": 0.1,
              "precision": "bf16", "save_steps": 50, "seed": 42},
}


def run_demo(output: str | Path = "demo-output", overrides: list[str] | None = None,
             depth: int = RERANK_DEPTH, show_progress: bool = True) -> dict[str, dict[str, float]]:
    """Run the demo end to end and return ``{system: {measure: value}}``."""
    output = Path(output)
    config = load_config(overrides=overrides, base=DEMO_RECIPE)
    started = time.time()

    log.info("[1/4] BM25 on %s", TEST_COLLECTION)
    test = load_collection(TEST_COLLECTION)
    bm25 = bm25_run(test, k=100)
    write_run(output / "runs" / "bm25.trec", bm25, tag="bm25")
    candidates = {q: dict(ranked(docs, depth)) for q, docs in bm25.items()}
    evaluations = {"bm25": evaluate(bm25, test.qrels, MEASURES)}

    precision = config.train.precision
    log.info("[2/4] untrained %s re-ranks the BM25 top-%d", config.model.name, depth)
    seed_everything(config.train.seed)
    untrained = CrossEncoder.from_pretrained(
        config.model.name, max_query_length=config.model.max_query_length,
        max_doc_length=config.model.max_doc_length,
        num_hidden_layers=config.model.num_hidden_layers, precision=precision)
    run = rerank_run(untrained, test, candidates, depth=depth, show_progress=show_progress)
    write_run(output / "runs" / "untrained.trec", run, tag="untrained")
    evaluations["untrained"] = evaluate(run, test.qrels, MEASURES)
    del untrained

    log.info("[3/4] training on %s (%s loss)", TRAIN_COLLECTION, config.loss)
    model_dir = train(config, output / "train", show_progress=show_progress)

    log.info("[4/4] trained re-ranker re-ranks the BM25 top-%d", depth)
    reranker = CrossEncoder.from_pretrained(str(model_dir), precision=precision)
    run = rerank_run(reranker, test, candidates, depth=depth, show_progress=show_progress)
    write_run(output / "runs" / "reranker.trec", run, tag="reranker")
    evaluations["reranker"] = evaluate(run, test.qrels, MEASURES)

    results = {name: e.aggregate for name, e in evaluations.items()}
    write_json(output / "results.json", results)
    write_json(output / "per_query.json", {n: e.per_query for n, e in evaluations.items()})
    log.info("demo finished in %.0f s", time.time() - started)
    return results
