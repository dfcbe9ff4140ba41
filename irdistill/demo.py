"""The offline demo: first stages and a hybrid teacher -> MiniLM cross-encoder trained on
SciFact for a time budget -> re-ranked test run, beside every baseline.

Runs with no network on BEIR SciFact through ir_datasets and the bundled MiniLM, and prints
nDCG@10 and RR@10 of

* ``bm25``: BM25 top-100 of the test queries (the candidates the re-ranker re-ranks);
* ``bi-encoder``: the bundled all-MiniLM-L6-v2 used as a bi-encoder, dense top-100;
* ``hybrid``: the hybrid teacher, per-query z-scores of BM25 and the bi-encoder's cosine over
  the BM25 top-100, averaged (:func:`irdistill.evaluation.fusion.fuse`);
* ``untrained`` (with ``untrained=True``, ``--untrained``): MiniLM as a cross-encoder with a
  new, random head, the base before training;
* ``reranker``: the trained cross-encoder re-ranking the BM25 top-``depth``, on its own;
* ``reranker+bm25``: the re-ranker interpolated with BM25, the weight chosen on held-out
  training queries (never on the test queries).

Training has a time budget (``train.max_minutes``; the learning rate decays over it), so the
same command trains far more on a GPU than on a laptop. The hybrid teacher is also built for
the training queries (``runs/teacher-train.trec``): a teacher data mode
(``--set data.mode=teacher_scores --set loss=kl``) trains on it. ``results.json`` maps each
system to its measures; the runs, per-query values and the model stay in the output folder.
A rerun after an interruption goes on from what is finished (BM25 index and embeddings
cached, re-ranking scores kept as they come, training resumed from its checkpoint).

:func:`out_of_domain` then puts the same systems side by side on a collection never trained on
(``irdistill demo --ood cranfield``): BM25, the bi-encoder, the hybrid, the re-ranker over the
BM25 and over the hybrid top-``depth``, and the re-ranker fused with BM25 by the weight chosen
in domain.
"""
from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

from irdistill.config import check_config, config_hash, load_config, to_dict
from irdistill.data.collection import load_collection
from irdistill.data.trec import ranked, write_run
from irdistill.errors import IrdistillError
from irdistill.evaluation.fusion import interpolate, tune_alpha
from irdistill.evaluation.metrics import evaluate
from irdistill.io import check_output_folder, write_json
from irdistill.models.cross_encoder import CrossEncoder
from irdistill.models.model_card import add_evaluation
from irdistill.models.runtime import training_precision
from irdistill.provenance import write_provenance
from irdistill.rerank.scoring import rerank_run, scoring_identity
from irdistill.retrieval.bm25 import bm25_run
from irdistill.retrieval.dense import dense_run
from irdistill.teachers.hybrid import BI_ENCODER, hybrid_teacher
from irdistill.train.dev import scoring_precision
from irdistill.train.engine import train
from irdistill.utils import seed_everything

log = logging.getLogger(__name__)

TRAIN_COLLECTION = "beir/scifact/train"
TEST_COLLECTION = "beir/scifact/test"
MEASURES = ("nDCG@10", "RR@10")
RERANK_DEPTH = 20
FIRST_STAGE_DEPTH = 100
DEV_EVERY = 10  # every 10th training query (in sorted order) is held out to tune the fusion

#: InfoNCE over 1 judged positive + 3 random BM25 top-100 negatives: at small budgets it beat
#: KL from the hybrid teacher and InfoNCE with the teacher's top ranks as negatives; 8 queries a
#: step learn more per training pair than 16 (held-out learning curves in docs/demo.md).
#: ``epochs`` only bounds the steps; the time budget ends training. 10.5 minutes of training
#: keep the whole demo within 15 minutes on a 2-core CPU with native bf16.
DEMO_RECIPE = {
    "data": {"collection": TRAIN_COLLECTION, "depth": 100, "negatives": 3, "sampling": "random"},
    "model": {"name": "minilm", "max_query_length": 32, "max_doc_length": 128},
    "loss": "infonce",
    "train": {"epochs": 40, "batch_size": 8, "lr": 1e-4, "head_lr": 1e-3,
              "warmup_ratio": 0.05, "precision": "auto", "max_minutes": 10.5, "save_steps": 40,
              "seed": 42},
}


def run_demo(output: str | Path = "demo-output", overrides: list[str] | None = None,
             depth: int = RERANK_DEPTH, bi_encoder: str = BI_ENCODER,
             untrained: bool = False, show_progress: bool = True
             ) -> dict[str, dict[str, float]]:
    """Run the demo end to end and return ``{system: {measure: value}}``. ``untrained`` also
    scores the base model with its new, random head (as long as re-ranking with the trained
    one: about a sixth of the demo's time, spent on a row of about 0.20 nDCG@10)."""
    output = Path(output)
    config = load_config(overrides=overrides, base=DEMO_RECIPE)
    check_config(config)
    check_output_folder(output)
    started = time.time()
    seconds: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        seconds[name] = round(time.time() - since, 1)
        return time.time()

    scores = output / "scores"  # re-ranking scores kept as they come: a rerun goes on from them
    write_provenance(output, config=to_dict(config), config_hash=config_hash(config),
                     data={"train": TRAIN_COLLECTION, "test": TEST_COLLECTION,
                           "rerank_depth": depth, "bi_encoder": bi_encoder,
                           "dev_queries": f"every {DEV_EVERY}th judged training query"},
                     seed=config.train.seed)
    runs = output / "runs"

    t = time.time()
    log.info("[1/6] BM25 on %s and %s", TEST_COLLECTION, TRAIN_COLLECTION)
    test = load_collection(TEST_COLLECTION)
    bm25 = bm25_run(test, k=FIRST_STAGE_DEPTH)
    write_run(runs / "bm25.trec", bm25, tag="bm25")
    train_collection = load_collection(TRAIN_COLLECTION)
    judged = sorted(q for q, docs in train_collection.qrels.items()
                    if any(r > 0 for r in docs.values()) and q in train_collection.queries)
    dev = set(judged[::DEV_EVERY])
    train_run = bm25_run(train_collection, k=config.data.depth, query_ids=judged)
    evaluations = {"bm25": evaluate(bm25, test.qrels, MEASURES)}
    t = lap("bm25", t)

    log.info("[2/6] bi-encoder %s: dense retrieval and the hybrid teacher", bi_encoder)
    dense = dense_run(test, bi_encoder, k=FIRST_STAGE_DEPTH, show_progress=show_progress)
    write_run(runs / "bi-encoder.trec", dense, tag="bi-encoder")
    evaluations["bi-encoder"] = evaluate(dense, test.qrels, MEASURES)
    _, hybrid = hybrid_teacher(test, bm25, bi_encoder, show_progress)
    write_run(runs / "hybrid.trec", hybrid, tag="hybrid")
    evaluations["hybrid"] = evaluate(hybrid, test.qrels, MEASURES)
    _, teacher = hybrid_teacher(train_collection, train_run, bi_encoder, show_progress)
    write_run(runs / "teacher-train.trec", {q: d for q, d in teacher.items() if q not in dev},
              tag="hybrid")
    if config.data.mode != "labels" and not config.data.teacher_run:
        config.data.teacher_run = str(runs / "teacher-train.trec")
    t = lap("bi-encoder and hybrid", t)

    candidates = {q: dict(ranked(docs, depth)) for q, docs in bm25.items()}
    precision = training_precision(config.train.precision)
    if untrained:
        log.info("[3/6] untrained %s re-ranks the BM25 top-%d", config.model.name, depth)
        seed_everything(config.train.seed)
        base = CrossEncoder.from_pretrained(
            config.model.name, max_query_length=config.model.max_query_length,
            max_doc_length=config.model.max_doc_length, truncation=config.model.truncation,
            num_hidden_layers=config.model.num_hidden_layers, precision=_scoring(precision))
        run = rerank_run(base, test, candidates, depth=depth, show_progress=show_progress,
                         checkpoint=scores / "untrained.jsonl",
                         identity={**scoring_identity(config.model.name, base, test, candidates,
                                                      depth), "seed": config.train.seed,
                                   "layers": config.model.num_hidden_layers})
        write_run(runs / "untrained.trec", run, tag="untrained")
        evaluations["untrained"] = evaluate(run, test.qrels, MEASURES)
        del base
        t = lap("untrained", t)
    else:
        log.info("[3/6] the untrained model is not scored (--untrained scores it)")

    log.info("[4/6] training on %s (%s loss, %s minutes)", TRAIN_COLLECTION, config.loss,
             config.train.max_minutes)
    model_dir = train(config, output / "train", collection=train_collection,
                      run={q: docs for q, docs in train_run.items() if q not in dev},
                      show_progress=show_progress)
    t = lap("training", t)

    log.info("[5/6] trained re-ranker re-ranks the BM25 top-%d", depth)
    reranker = CrossEncoder.from_pretrained(str(model_dir), precision=_scoring(precision))
    run = rerank_run(reranker, test, candidates, depth=depth, show_progress=show_progress,
                     checkpoint=scores / "reranker.jsonl",
                     identity=scoring_identity(str(model_dir), reranker, test, candidates, depth))
    write_run(runs / "reranker.trec", run, tag="reranker")
    evaluations["reranker"] = evaluate(run, test.qrels, MEASURES)
    t = lap("reranker", t)

    log.info("[6/6] interpolation weight with BM25, chosen on the held-out training queries")
    dev_candidates = {q: dict(ranked(train_run[q], depth)) for q in sorted(dev) if q in train_run}
    dev_scores = rerank_run(reranker, train_collection, dev_candidates, depth=depth,
                            show_progress=show_progress, checkpoint=scores / "reranker-dev.jsonl",
                            identity=scoring_identity(str(model_dir), reranker, train_collection,
                                                      dev_candidates, depth))
    alpha, dev_value = tune_alpha(dev_candidates, dev_scores,
                                  {q: train_collection.qrels[q] for q in dev_candidates})
    log.info("interpolation weight %.1f chosen on %d held-out training queries (nDCG@10 %.4f)",
             alpha, len(dev_candidates), dev_value)
    fused = interpolate(candidates, run, alpha)
    write_run(runs / "reranker+bm25.trec", fused, tag="reranker+bm25")
    evaluations["reranker+bm25"] = evaluate(fused, test.qrels, MEASURES)
    lap("fusion weight", t)

    results = {name: e.aggregate for name, e in evaluations.items()}
    write_json(output / "results.json", results)
    write_json(output / "per_query.json", {n: e.per_query for n, e in evaluations.items()})
    add_evaluation(model_dir, f"{TEST_COLLECTION} (BM25 top-{depth} re-ranked)",
                   results["reranker"])  # the model folder says how good it is
    write_json(output / "settings.json", {"rerank_depth": depth, "interpolation_alpha": alpha,
                                          "precision": precision, "bi_encoder": bi_encoder,
                                          "dev_queries": sorted(dev_candidates),
                                          "model": str(model_dir),
                                          "seconds": round(time.time() - started),
                                          "stage_seconds": seconds})
    log.info("demo finished in %.0f s (%s)", time.time() - started,
             ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    return results


def out_of_domain(output: str | Path, collection_id: str, show_progress: bool = True
                  ) -> dict[str, dict[str, float]]:
    """The finished demo in ``output`` on another collection, never trained on.

    Rows: ``bm25`` (top-100), ``bi-encoder`` (dense top-100), ``hybrid`` (BM25 + bi-encoder over
    the BM25 top-100, as in domain), ``reranker`` (the trained model over the BM25 top-depth),
    ``reranker-on-hybrid`` (over the hybrid's top-depth), ``reranker+bm25`` (fused with BM25 by the
    in-domain weight). Each pair is scored once (the union of both candidate lists), kept as it
    comes under ``scores/``; runs and results go to ``ood/<collection>/``.
    """
    output = Path(output)
    settings_file = output / "settings.json"
    if not settings_file.exists():
        raise IrdistillError(f"{output} holds no finished demo (no settings.json)",
                             hint="run `irdistill demo` into that folder first")
    settings = json.loads(settings_file.read_text())
    depth, alpha, bi_encoder = (settings["rerank_depth"], settings["interpolation_alpha"],
                                settings["bi_encoder"])
    collection = load_collection(collection_id)
    folder = ood_folder(output, collection_id)
    slug = folder.name
    log.info("out of domain: %s (BM25, bi-encoder %s, hybrid, re-ranker)", collection_id,
             bi_encoder)
    bm25 = bm25_run(collection, k=FIRST_STAGE_DEPTH)
    dense = dense_run(collection, bi_encoder, k=FIRST_STAGE_DEPTH, show_progress=show_progress)
    _, hybrid = hybrid_teacher(collection, bm25, bi_encoder, show_progress)
    over_bm25 = {q: dict(ranked(docs, depth)) for q, docs in bm25.items()}
    over_hybrid = {q: [d for d, _ in ranked(docs, depth)] for q, docs in hybrid.items()}
    # both candidate lists scored in one pass; the candidates' scores are BM25's (every hybrid
    # document is in the BM25 top-100)
    union = {q: {**{d: bm25[q][d] for d in over_hybrid.get(q, [])}, **over_bm25[q]}
             for q in over_bm25}
    reranker = CrossEncoder.from_pretrained(settings["model"],
                                            precision=_scoring(settings["precision"]))
    widest = max(len(docs) for docs in union.values())
    scores = rerank_run(reranker, collection, union, depth=widest, show_progress=show_progress,
                        checkpoint=output / "scores" / f"ood-{slug}.jsonl",
                        identity=scoring_identity(settings["model"], reranker, collection, union,
                                                  widest))
    runs = {"bm25": bm25, "bi-encoder": dense, "hybrid": hybrid,
            "reranker": {q: {d: scores[q][d] for d in over_bm25[q]} for q in over_bm25},
            "reranker-on-hybrid": {q: {d: scores[q][d] for d in docs}
                                for q, docs in over_hybrid.items()}}
    runs["reranker+bm25"] = interpolate(over_bm25, runs["reranker"], alpha)
    evaluations = {}
    for name, run in runs.items():
        write_run(folder / "runs" / f"{name}.trec", run, tag=name)
        evaluations[name] = evaluate(run, collection.qrels, MEASURES)
    results = {name: e.aggregate for name, e in evaluations.items()}
    add_evaluation(settings["model"], f"{collection_id} (BM25 top-{depth} re-ranked)",
                   results["reranker"])
    write_json(folder / "results.json", results)
    write_json(folder / "per_query.json", {n: e.per_query for n, e in evaluations.items()})
    return results


def ood_folder(output: str | Path, collection_id: str) -> Path:
    """Where :func:`out_of_domain` writes a collection's runs and results."""
    return Path(output) / "ood" / (re.sub(r"[^A-Za-z0-9._-]+", "-", str(collection_id))
                                   .strip("-.") or "collection")


def _scoring(precision: str) -> str | None:
    """The inference precision of a (resolved) training precision."""
    return scoring_precision(precision)
