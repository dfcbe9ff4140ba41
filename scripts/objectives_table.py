"""Compare the training objectives that need no teacher, with one training budget for all.

Each objective (bce, hinge, ranknet, infonce, listnet, approx_ndcg, lambdaloss) trains the same
model on BEIR SciFact train (labels mode: a judged positive + BM25 negatives) with the same
steps, groups, lengths, learning rate, precision and seed; each trained model then re-ranks the
BM25 top-``depth`` of SciFact test. One row per objective, plus BM25 and the untrained model
(the first stage and the base, which a fine-tuned model must beat).

Outputs under ``--output``: ``<objective>-<config hash>/`` (the training folder, with the re-ranked
test run), ``results.json`` (all rows, updated after each row) and ``table.md``. Finished
trainings and re-rankings are reused, so an interrupted comparison resumes where it stopped.

Full budget (about 3-4 minutes of training per objective on a 2-core CPU with bf16)::

    python scripts/objectives_table.py --output runs/objectives-table

Toy scale (seconds per objective)::

    python scripts/objectives_table.py --max-steps 2 --max-queries 8 --eval-queries 10
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

from irdistill.config import config_hash, load_config
from irdistill.data.collection import load_collection
from irdistill.data.trec import ranked, read_run, write_run
from irdistill.errors import IrdistillError
from irdistill.evaluation.metrics import evaluate
from irdistill.io import atomic_write, write_json
from irdistill.losses import LOSSES
from irdistill.models.cross_encoder import CrossEncoder
from irdistill.rerank.scoring import rerank_run
from irdistill.retrieval.bm25 import bm25_run
from irdistill.train.engine import train
from irdistill.utils import seed_everything, setup_logging

log = logging.getLogger("objectives_table")

NO_TEACHER = ("bce", "hinge", "ranknet", "infonce", "listnet", "approx_ndcg", "lambdaloss")
MEASURES = ("nDCG@10", "RR@10")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", type=Path, default=Path("runs/objectives-table"),
                   help="output folder (default: runs/objectives-table)")
    p.add_argument("--objectives", nargs="+", default=list(NO_TEACHER), metavar="LOSS",
                   help=f"losses to compare (default: {' '.join(NO_TEACHER)})")
    p.add_argument("--model", default="minilm", help="model to train (default: the bundled MiniLM)")
    p.add_argument("--train", default="beir/scifact/train", help="training collection")
    p.add_argument("--test", default="beir/scifact/test", help="test collection")
    p.add_argument("--max-steps", type=int, default=40, help="optimizer steps per objective (40)")
    p.add_argument("--batch-size", type=int, default=8, help="groups (queries) per step (8)")
    p.add_argument("--negatives", type=int, default=3, help="negatives per group (3)")
    p.add_argument("--max-doc-length", type=int, default=128, help="document tokens (128)")
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate (1e-4)")
    p.add_argument("--precision", default="bf16", choices=("fp32", "bf16", "fp16"),
                   help="training and re-ranking precision (bf16)")
    p.add_argument("--seed", type=int, default=42, help="seed of every training (42)")
    p.add_argument("--max-queries", type=int, default=None,
                   help="train on the first N training queries only (toy runs)")
    p.add_argument("--depth", type=int, default=20, help="BM25 documents re-ranked per query (20)")
    p.add_argument("--eval-queries", type=int, default=None,
                   help="evaluate on the first N test queries only (toy runs)")
    return p.parse_args(argv)


def recipe(args: argparse.Namespace, loss: str):
    """The shared budget, with only the objective changed."""
    base = {
        "data": {"collection": args.train, "mode": "labels", "depth": 100,
                 "negatives": args.negatives, "sampling": "random",
                 "max_queries": args.max_queries},
        "model": {"name": args.model, "max_query_length": 32,
                  "max_doc_length": args.max_doc_length},
        "loss": loss,
        "train": {"max_steps": args.max_steps, "batch_size": args.batch_size, "lr": args.lr,
                  "warmup_ratio": 0.1, "precision": args.precision, "seed": args.seed,
                  "save_steps": 1000, "logging_steps": 5},
    }
    return load_config(base=base)


def markdown(rows: dict[str, dict], args: argparse.Namespace) -> str:
    lines = [f"SciFact test, re-ranking the BM25 top-{args.depth} "
             f"({rows['bm25']['queries']} queries); training: {args.max_steps} steps x "
             f"{args.batch_size} groups of 1+{args.negatives} documents, doc length "
             f"{args.max_doc_length}, lr {args.lr:g}, {args.precision}, seed {args.seed}",
             "", "| system | " + " | ".join(MEASURES) + " | train s |",
             "|---|" + "---:|" * (len(MEASURES) + 1)]
    for name, row in rows.items():
        secs = f"{row['train_seconds']:.0f}" if row.get("train_seconds") is not None else "-"
        lines.append(f"| {name} | " + " | ".join(f"{row[m]:.4f}" for m in MEASURES)
                     + f" | {secs} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    unknown = [o for o in args.objectives if o not in LOSSES]
    if unknown:
        raise IrdistillError(f"unknown objective(s): {', '.join(unknown)}",
                             hint=f"choose from {', '.join(sorted(LOSSES))}")
    out = args.output
    out.mkdir(parents=True, exist_ok=True)

    test = load_collection(args.test)
    qids = sorted(q for q in test.qrels if q in test.queries)
    if args.eval_queries:
        qids = qids[: args.eval_queries]
    qrels = {q: test.qrels[q] for q in qids}
    bm25 = bm25_run(test, k=max(100, args.depth), query_ids=qids)
    candidates = {q: dict(ranked(docs, args.depth)) for q, docs in bm25.items()}
    tag = f"test-d{args.depth}-q{args.eval_queries or 'all'}"

    def score(name: str, run, seconds=None):
        result = evaluate(run, qrels, MEASURES).aggregate
        rows[name] = {**result, "queries": len(qids), "train_seconds": seconds}
        write_json(out / "results.json", rows)
        log.info("%s: %s", name, ", ".join(f"{m} {v:.4f}" for m, v in result.items()))

    def rerank(model_path: str, run_path: Path):
        if run_path.exists():
            return read_run(run_path)
        seed_everything(args.seed)  # the untrained model's new head
        model = CrossEncoder.from_pretrained(model_path, max_query_length=32,
                                             max_doc_length=args.max_doc_length,
                                             precision=args.precision)
        run = rerank_run(model, test, candidates, depth=args.depth)
        write_run(run_path, run, tag=run_path.stem)
        return run

    rows: dict[str, dict] = {}
    score("bm25", bm25)
    base = hashlib.sha1(json.dumps([args.model, args.max_doc_length, args.precision, args.seed])
                        .encode()).hexdigest()[:8]
    score(f"{args.model} untrained", rerank(args.model, out / f"untrained-{base}" / f"{tag}.trec"))
    for loss in args.objectives:
        config = recipe(args, loss)
        folder = out / f"{loss}-{config_hash(config)}"
        started = time.time()
        model_dir = train(config, folder)
        seconds = _train_seconds(folder) or time.time() - started
        score(loss, rerank(str(model_dir), folder / f"{tag}.trec"), seconds)

    table = markdown(rows, args)
    with atomic_write(out / "table.md") as handle:
        handle.write(table)
    print(table)
    return 0


def _train_seconds(folder: Path) -> float | None:
    """The Trainer's own runtime (kept when a finished training is reused)."""
    path = folder / "train_log.jsonl"
    if not path.exists():
        return None
    for line in reversed(path.read_text().splitlines()):
        entry = json.loads(line)
        if "train_runtime" in entry:
            return float(entry["train_runtime"])
    return None


if __name__ == "__main__":
    try:
        sys.exit(main())
    except IrdistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
