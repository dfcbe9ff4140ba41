"""SPLADE from the bundled MiniLM on SciFact, then unsupervised adaptation to Cranfield.

(a) Trains SPLADE on BEIR SciFact train and compares it with BM25 on SciFact test
    (nDCG@10, R@100), with the index size, postings and queries per second.
(b) Adapts it to Cranfield (unlabelled corpus; queries and qrels only for evaluation) for each
    k in --layers, and compares zero-shot SPLADE with the adapted models on Cranfield.

Offline: needs the ir_datasets cache (eval "$(../shared/data/seed-irds.sh)") and the bundled
MiniLM. Every finished step is kept in --output and reused when the script is run again.

Full run (about 25 minutes on a free 2-core CPU; the command is in docs/splade.md):

    python scripts/splade_scifact_cranfield.py --output runs/splade-study

Toy run (minutes; figures meaningless, it proves the pipeline):

    python scripts/splade_scifact_cranfield.py --output /tmp/toy --steps 3 --mlm-steps 2 \
        --max-docs 200 --max-test-queries 20 --layers 0 2
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from irdistill.adapt.mlm import MLMConfig
from irdistill.adapt.recipe import AdaptConfig, adapt, evaluate_model, prepare_base
from irdistill.config import from_dict, to_dict
from irdistill.data.collection import Collection, DocStore, load_collection
from irdistill.evaluation.metrics import evaluate
from irdistill.io import write_json
from irdistill.retrieval.bm25 import bm25_run
from irdistill.train.splade import SpladeConfig, train_splade
from irdistill.utils import setup_logging

log = logging.getLogger("splade-study")
MEASURES = ["nDCG@10", "R@100"]


class SubsetDocs(DocStore):
    """The documents of a store whose ids are in ``keep`` (toy runs only)."""

    def __init__(self, docs: DocStore, keep: set[str]):
        self.docs, self.keep = docs, keep

    def get_many(self, doc_ids: Iterable[str]) -> dict[str, str]:
        return self.docs.get_many(doc_ids)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((d, t) for d, t in self.docs if d in self.keep)

    def __len__(self) -> int:
        return len(self.keep)


def subset(collection: Collection, max_docs: int | None, max_queries: int | None) -> Collection:
    """The first ``max_queries`` queries, and the first ``max_docs`` documents plus every document
    judged for those queries (toy runs: figures are not comparable with full runs)."""
    if not max_docs and not max_queries:
        return collection
    qids = sorted(collection.queries)[:max_queries] if max_queries else sorted(collection.queries)
    queries = {q: collection.queries[q] for q in qids}
    qrels = {q: collection.qrels[q] for q in qids if q in collection.qrels}
    docs = collection.docs
    tag = f"q{max_queries or 'all'}"
    if max_docs:
        keep = {d for q in qrels for d in qrels[q]}
        for i, (doc_id, _) in enumerate(collection.docs):
            if i >= max_docs:
                break
            keep.add(doc_id)
        docs = SubsetDocs(collection.docs, keep)
        tag += f"-d{max_docs}"
    return Collection(f"{collection.name}-{tag}", docs, queries, qrels,
                      docs_id=f"{collection.docs_name}-{tag}")


def splade_config(args, model: str) -> SpladeConfig:
    return from_dict(SpladeConfig, {
        "data": {"collection": "beir/scifact/train", "depth": 100, "negatives": args.negatives,
                 "sampling": "random", "max_queries": args.max_train_queries},
        "model": {"name": model, "max_query_length": args.max_query_length,
                  "max_doc_length": args.max_doc_length},
        "loss": "infonce", "in_batch_negatives": True, "regularizer": "flops",
        "lambda_q": args.lambda_q, "lambda_d": args.lambda_d,
        "reg_warmup_steps": max(1, args.steps // 3),
        "train": {"max_steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                  "warmup_ratio": 0.1, "precision": args.precision, "logging_steps": 10,
                  "save_steps": 50, "seed": args.seed},
    })


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("runs/splade-study"))
    parser.add_argument("--model", default="minilm", help="backbone (default: bundled MiniLM)")
    parser.add_argument("--steps", type=int, default=32, help="SPLADE training steps")
    parser.add_argument("--batch-size", type=int, default=16, help="queries per step")
    parser.add_argument("--negatives", type=int, default=1, help="BM25 negatives per query "
                        "(plus in-batch negatives)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--lambda-q", type=float, default=1e-2)
    parser.add_argument("--lambda-d", type=float, default=5e-3)
    parser.add_argument("--max-query-length", type=int, default=32)
    parser.add_argument("--max-doc-length", type=int, default=64)
    parser.add_argument("--mlm-steps", type=int, default=15)
    parser.add_argument("--mlm-batch-size", type=int, default=16)
    parser.add_argument("--mlm-lr", type=float, default=5e-5)
    parser.add_argument("--layers", type=int, nargs="+", default=[0, 1, 2, 3],
                        help="values of k (domain part = embeddings + first k layers)")
    parser.add_argument("--source-control", action="store_true",
                        help="also evaluate source domain part + source task part on Cranfield")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-train-queries", type=int, default=None)
    parser.add_argument("--max-test-queries", type=int, default=None,
                        help="toy runs: evaluate only the first N queries")
    parser.add_argument("--max-docs", type=int, default=None,
                        help="toy runs: index only the first N documents (+ judged ones)")
    parser.add_argument("--skip-adapt", action="store_true", help="only part (a)")
    args = parser.parse_args(argv)
    setup_logging()
    out = args.output
    timings: dict[str, float] = {}
    results: dict = {"settings": {k: str(v) if isinstance(v, Path) else v
                                  for k, v in vars(args).items()}}

    def timed(name, fn):
        started = time.time()
        value = fn()
        timings[name] = round(time.time() - started, 1)
        log.info("%s took %.0f s", name, timings[name])
        return value

    # (a) SPLADE on SciFact ---------------------------------------------------------------------
    base = timed("base", lambda: prepare_base(args.model, out / "adapt" / "base"))
    config = splade_config(args, str(base))
    train = load_collection("beir/scifact/train")
    model_dir = timed("scifact train", lambda: train_splade(config, out / "scifact" / "train",
                                                            collection=train))
    test = subset(load_collection("beir/scifact/test"), args.max_docs, args.max_test_queries)
    bm25 = timed("scifact bm25", lambda: bm25_run(test, k=100))
    scifact = {"BM25": {"measures": evaluate(bm25, test.qrels, MEASURES).aggregate}}
    scifact["SPLADE"] = timed("scifact index+search", lambda: evaluate_model(
        model_dir, test, out / "scifact" / "eval", measures=MEASURES, precision=args.precision))
    results["scifact"] = scifact

    # (b) adaptation to Cranfield -------------------------------------------------------------
    if not args.skip_adapt:
        target = subset(load_collection("cranfield"), args.max_docs, args.max_test_queries)
        bm25 = bm25_run(target, k=100)
        cranfield = {"BM25": {"measures": evaluate(bm25, target.qrels, MEASURES).aggregate}}
        mlm = MLMConfig(steps=args.mlm_steps, batch_size=args.mlm_batch_size, lr=args.mlm_lr,
                        max_length=args.max_doc_length, precision=args.precision,
                        seed=args.seed)
        for k in args.layers:
            adapt_config = from_dict(AdaptConfig, {
                "source": to_dict(config), "target": "cranfield", "layers": k,
                "mlm": to_dict(mlm), "zero_shot_model": str(model_dir),
                "source_control": args.source_control, "measures": MEASURES,
                "precision": args.precision})
            report = timed(f"adapt k={k}", lambda: adapt(adapt_config, out / "adapt",
                                                         source=train, target=target))
            cranfield.update(report["results"])
        results["cranfield"] = cranfield
    results["seconds"] = timings
    write_json(out / "results.json", results)
    print_report(results)
    return 0


def print_report(results: dict) -> None:
    print("\nSciFact test (trained on SciFact train)")
    print(f"{'system':<24}{'nDCG@10':>9}{'R@100':>8}{'index MB':>10}{'postings':>11}"
          f"{'per doc':>9}{'search q/s':>12}{'total q/s':>11}")
    for name, r in results["scifact"].items():
        m, idx, s = r["measures"], r.get("index"), r.get("search")
        line = f"{name:<24}{m['nDCG@10']:>9.4f}{m['R@100']:>8.4f}"
        if idx:
            line += (f"{idx['megabytes']:>10.1f}{idx['postings']:>11d}"
                     f"{idx['postings_per_doc']:>9.1f}{s['search_qps']:>12.0f}"
                     f"{s['total_qps']:>11.1f}")
        print(line)
    if "cranfield" in results:
        print("\nCranfield (no Cranfield labels used in training)")
        print(f"{'system':<24}{'nDCG@10':>9}{'R@100':>8}{'postings/doc':>14}")
        for name, r in results["cranfield"].items():
            m, idx = r["measures"], r.get("index")
            per_doc = f"{idx['postings_per_doc']:>14.1f}" if idx else ""
            print(f"{name:<24}{m['nDCG@10']:>9.4f}{m['R@100']:>8.4f}{per_doc}")
    print("\nseconds per phase:", json.dumps(results["seconds"]))


if __name__ == "__main__":
    sys.exit(main())
