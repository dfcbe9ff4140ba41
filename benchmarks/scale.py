#!/usr/bin/env python
"""How each stage of irdistill's data path grows with the collection.

Synthetic collections are made on the fly at each ``--sizes`` (documents), with queries, qrels
and runs in MS MARCO's proportions (about one training query per ``--docs-per-query``
documents, a run of ``--depth`` documents per query):

* documents and queries are words drawn from a real vocabulary with its real frequencies (the
  words of BEIR SciFact's corpus when the offline cache has it, else this file's own text), at
  realistic lengths (log-normal, median ``--doc-words`` words for a document, 6 for a query);
* each query is made of words of one document, its one relevant document (qrels), as a
  training query of MS MARCO has one judged passage; BM25 then finds it often, not always;
* the run of every query is its relevant document and documents drawn at random, scored in
  decreasing order (what BM25 would give at that size costs the BM25 stage, measured apart).

Each size runs in its own process. Every stage is timed, and its peak resident memory above
the memory at its start is sampled every 10 ms; disk is the size of what the stage writes.

=====================  ===================================================================
stage                  what it measures
=====================  ===================================================================
collection load        ``load_collection`` of a folder: the offset index of ``docs.tsv``,
                       queries and qrels
document access        ``docs.get_many`` of 10,000 random ids (per 10k documents)
BM25 index             ``BM25.build``: bm25s tokenising and indexing every document
BM25 search            top-``depth`` of ``--search-queries`` queries (projected per query)
run write / read       ``write_run`` / ``read_run`` of the whole run (a dict of dicts)
run read (compact)     ``read_run(compact=True)``: the run as training holds it (numpy arrays)
groups (labels)        ``build_groups("labels")``: 1 positive + 7 negatives per query, 1 epoch
groups (teacher)       ``build_groups("teacher_scores")`` with the run as the teacher's scores
tokenise               ``tokenise_groups``: every query and document of the groups, once
                       (MiniLM's tokenizer, 32/128 tokens, compact arrays)
first batches          the collator's first 200 batches of 8 groups (model inputs, no model)
re-rank overhead       ``rerank_run`` over ``--search-queries`` queries x ``depth`` with a
                       trivial scorer (no model): fetching, tokenising, batching, the run
dense search           ``exact_search`` of ``--search-queries`` queries in random 384-d
                       float32 vectors of every document (encoding itself is the model's
                       cost: linear, measured by benchmarks/speed.py)
SPLADE index / search  ``SparseIndex.build`` from random sparse vectors (``--splade-terms``
                       terms a document) and ``search_vectors`` of ``--search-queries``
evaluate / compare     ``evaluate`` (nDCG@10, RR@10, R@100) of the run, and a paired test
                       of two runs
=====================  ===================================================================

The report has each stage's time, peak memory and disk per size, the growth exponent (the
log-log slope of time over documents, from the two largest sizes) and the time and memory
projected to MS MARCO passage (8.8M documents, 500k training queries, 50M run lines) with that
exponent. Queries, run lines and groups grow with the documents, so an exponent near 1 is
linear in the data.

    eval "$(../shared/data/seed-irds.sh)"     # SciFact's vocabulary (else this file's words)
    python benchmarks/scale.py                                   # 10k, 100k, 1M documents
    python benchmarks/scale.py --sizes 2000 5000 --search-queries 50 --markdown /tmp/s.md
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MSMARCO = {"docs": 8_841_823, "queries": 502_939, "run_lines": 50_293_900}


# -- measurement ---------------------------------------------------------------------------------
def rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


class Stage:
    """Wall time and peak RSS above the start of a block, sampled every 10 ms."""

    def __init__(self, results: dict, name: str, scale: float = 1.0, disk: Path | None = None):
        self.results, self.name, self.scale, self.disk = results, name, scale, disk

    def __enter__(self):
        self.start_rss = rss_bytes()
        self.peak = self.start_rss
        self.stop = threading.Event()

        def sample():
            while not self.stop.wait(0.01):
                self.peak = max(self.peak, rss_bytes())

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        seconds = time.perf_counter() - self.t0
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, rss_bytes())
        if exc[0] is None:
            row = {"seconds": seconds * self.scale, "measured_seconds": seconds,
                   "peak_mb": (self.peak - self.start_rss) / 2**20,
                   "held_mb": (rss_bytes() - self.start_rss) / 2**20}
            if self.disk is not None:
                row["disk_mb"] = folder_mb(self.disk)
            self.results[self.name] = row
            print(f"  {self.name:<18} {seconds:8.2f} s  peak +{row['peak_mb']:7.0f} MB",
                  flush=True)
        return False


def folder_mb(path: Path) -> float:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


# -- synthetic data ------------------------------------------------------------------------------
def vocabulary(limit: int = 30_000) -> tuple[list[str], np.ndarray]:
    """Words and their frequencies: SciFact's corpus when the offline cache has it."""
    from collections import Counter

    counts: Counter = Counter()
    # only from a local cache (seed-irds.sh sets IR_DATASETS_HOME): never a download
    with contextlib.suppress(Exception):
        if not os.environ.get("IR_DATASETS_HOME"):
            raise LookupError
        import ir_datasets

        for n, doc in enumerate(ir_datasets.load("beir/scifact").docs_iter()):
            counts.update(w for w in f"{doc.title} {doc.text}".lower().split() if w.isalpha())
            if n >= 5000:
                break
    source = "BEIR SciFact's corpus"
    if len(counts) < 1000:  # no cache: the words of this file
        source = "benchmarks/scale.py's own text (no SciFact cache)"
        counts.update(w for w in Path(__file__).read_text().lower().split() if w.isalpha())
    print(f"  (vocabulary: {min(limit, len(counts))} words of {source})", flush=True)
    words, freq = zip(*counts.most_common(limit))
    p = np.asarray(freq, dtype=np.float64)
    return list(words), p / p.sum()


def make_collection(folder: Path, n_docs: int, n_queries: int, depth: int, doc_words: int,
                    seed: int = 0) -> dict:
    """docs.tsv, queries.tsv, qrels.txt and run.trec of a synthetic collection."""
    rng = np.random.default_rng(seed)
    words, p = vocabulary()
    words = np.asarray(words, dtype=object)
    folder.mkdir(parents=True, exist_ok=True)
    lengths = np.clip(rng.lognormal(math.log(doc_words), 0.45, n_docs).astype(int), 5, 400)
    relevant = rng.choice(n_docs, size=n_queries, replace=False)
    query_words: dict[int, list[str]] = {}
    wanted = {int(d): i for i, d in enumerate(relevant)}
    with open(folder / "docs.tsv", "w", encoding="utf-8") as out:
        for start in range(0, n_docs, 50_000):
            stop = min(n_docs, start + 50_000)
            ids = rng.choice(len(words), size=int(lengths[start:stop].sum()), p=p)
            at = 0
            for d in range(start, stop):
                text = words[ids[at:at + lengths[d]]]
                at += lengths[d]
                if d in wanted:
                    k = int(np.clip(rng.lognormal(math.log(6), 0.35), 2, 20))
                    query_words[wanted[d]] = list(rng.choice(text, size=min(k, len(text)),
                                                             replace=False))
                out.write(f"D{d}\t{' '.join(text)}\n")
    with open(folder / "queries.tsv", "w", encoding="utf-8") as out:
        for i in range(n_queries):
            out.write(f"Q{i}\t{' '.join(query_words[i])}\n")
    with open(folder / "qrels.txt", "w", encoding="utf-8") as out:
        for i, d in enumerate(relevant):
            out.write(f"Q{i} 0 D{d} 1\n")
    with open(folder / "run.trec", "w", encoding="utf-8") as out:
        for i, d in enumerate(relevant):
            others = rng.choice(n_docs, size=depth + 1, replace=False)
            docs = [int(d)] + [int(o) for o in others if o != d][:depth - 1]
            order = rng.permutation(depth)
            for rank, j in enumerate(order, start=1):
                out.write(f"Q{i} Q0 D{docs[j]} {rank} {depth - rank:.1f} synthetic\n")
    return {"docs": n_docs, "queries": n_queries, "run_lines": n_queries * depth}


# -- the stages ----------------------------------------------------------------------------------
class TrivialRunner:
    """A scorer without a model: one number per row, from the batch itself (so nothing of the
    pipeline is skipped), at no cost worth counting."""

    def __call__(self, batch) -> np.ndarray:
        return batch["attention_mask"].sum(1).numpy().astype(np.float32)


def prepare(args, label: str) -> tuple[Path, int, int, dict, float]:
    """The synthetic collection of one size in ``args.work`` (the caches beside it)."""
    work = Path(args.work)
    n_docs = args.size
    n_queries = getattr(args, "queries", None) or max(10, n_docs // args.docs_per_query)
    os.environ["IRDISTILL_CACHE"] = str(work / "cache")
    print(f"{label}{n_docs} documents, {n_queries} queries", flush=True)
    t0 = time.perf_counter()
    shape = make_collection(work / "collection", n_docs, n_queries, args.depth, args.doc_words)
    setup = time.perf_counter() - t0
    print(f"  (synthetic data written in {setup:.1f} s, "
          f"{folder_mb(work / 'collection'):.0f} MB)", flush=True)
    return work, n_docs, n_queries, shape, setup


def run_size(args) -> dict:
    """All stages at one size (in this process)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    import scipy.sparse as sp

    from irdistill.data.collection import load_collection
    from irdistill.data.sampling import build_groups
    from irdistill.data.trec import read_run, write_run
    from irdistill.evaluation.metrics import evaluate
    from irdistill.evaluation.significance import paired_pvalue
    from irdistill.models.cross_encoder import CrossEncoder
    from irdistill.rerank.scoring import rerank_run
    from irdistill.retrieval.bm25 import BM25
    from irdistill.retrieval.dense import exact_search
    from irdistill.retrieval.sparse_index import SparseIndex
    from irdistill.train.data import GroupCollator, tokenise_groups

    work, n_docs, n_queries, shape, setup = prepare(args, "")
    results: dict = {}
    rng = np.random.default_rng(1)
    sample_q = min(args.search_queries, n_queries)
    per_query = n_queries / sample_q  # projected from the sample to every query

    with Stage(results, "collection load"):
        collection = load_collection(work / "collection")
    ids = [f"D{i}" for i in rng.choice(n_docs, size=10_000)]
    with Stage(results, "document access"):
        collection.docs.get_many(ids)
    with Stage(results, "BM25 index", disk=work / "cache"):
        bm25 = BM25.build(collection)
    qids = sorted(collection.queries)
    sample = [qids[i] for i in rng.choice(n_queries, size=sample_q, replace=False)]
    with Stage(results, "BM25 search", scale=per_query):
        bm25.search({q: collection.queries[q] for q in sample}, k=args.depth,
                    show_progress=False)
    del bm25
    run_path = work / "collection" / "run.trec"
    with Stage(results, "run read"):
        run = read_run(run_path)
    with Stage(results, "run read (compact)"):  # as training holds its candidates
        compact = read_run(run_path, compact=True)
    del compact
    with Stage(results, "run write", disk=work / "copy.trec"):
        write_run(work / "copy.trec", run)
    with Stage(results, "groups (labels)"):
        groups = build_groups("labels", epoch=0, run=run, qrels=collection.qrels,
                              negatives=7, depth=args.depth, sampling="random", seed=0)
    with Stage(results, "groups (teacher)"):
        build_groups("teacher_scores", epoch=0, run=run, qrels=collection.qrels,
                     negatives=7, depth=args.depth, sampling="random", seed=0)
    model = CrossEncoder.from_pretrained("minilm", max_query_length=32, max_doc_length=128,
                                         device="cpu")
    with Stage(results, "tokenise"):
        query_tokens, doc_tokens = tokenise_groups(model.encoder, collection, groups)
    collate = GroupCollator(model.encoder, query_tokens, doc_tokens)
    batches = [groups[i:i + 8] for i in range(0, min(len(groups), 1600), 8)]
    with Stage(results, "first batches", scale=200 / len(batches)):
        for batch in batches:
            collate(batch)
    del query_tokens, doc_tokens, collate
    model.runner = TrivialRunner()
    model.backend = "trivial"
    with Stage(results, "re-rank overhead", scale=per_query):
        rerank_run(model, collection, {q: run[q] for q in sample}, depth=args.depth,
                   show_progress=False)
    vectors = rng.standard_normal((n_docs, 384), dtype=np.float32)
    queries = rng.standard_normal((sample_q, 384), dtype=np.float32)
    with Stage(results, "dense search", scale=per_query):
        exact_search(vectors, queries, k=args.depth)
    del vectors

    def sparse_rows(n: int, seed: int) -> sp.csr_matrix:
        r = np.random.default_rng(seed)
        cols = r.integers(0, 30_522, size=(n, args.splade_terms))
        vals = r.random((n, args.splade_terms), dtype=np.float32) + 0.1
        indptr = np.arange(0, n * args.splade_terms + 1, args.splade_terms)
        m = sp.csr_matrix((vals.ravel(), cols.ravel(), indptr), shape=(n, 30_522))
        m.sum_duplicates()
        return m

    def sparse_batches():
        for start in range(0, n_docs, 16_384):
            stop = min(n_docs, start + 16_384)
            yield [f"D{i}" for i in range(start, stop)], sparse_rows(stop - start, start)

    with Stage(results, "SPLADE index", disk=work / "splade"):
        index = SparseIndex.build(work / "splade", sparse_batches(), 30_522,
                                  meta={"collection": "synthetic"})
    with Stage(results, "SPLADE search", scale=per_query):
        index.search_vectors(sparse_rows(sample_q, 7), k=args.depth)
    del index
    with Stage(results, "evaluate"):
        first = evaluate(run, collection.qrels, ["nDCG@10", "RR@10", "R@100"])
    other = {q: {d: s + float(rng.random()) for d, s in docs.items()} for q, docs in run.items()}
    with Stage(results, "compare"):
        second = evaluate(other, collection.qrels, ["nDCG@10"])
        keys = sorted(first.per_query)
        paired_pvalue([first.per_query[k]["nDCG@10"] for k in keys],
                      [second.per_query[k]["nDCG@10"] for k in keys])
    return {"size": n_docs, **shape, "setup_seconds": setup, "stages": results,
            "peak_process_mb": peak_process_mb()}


def training_path(args) -> dict:
    """The data path of a training run at one size, stage by stage as ``irdistill train``
    takes it (collection, BM25 candidates of every training query, groups, tokens, the first
    batches), then ``engine.train`` itself for ``--train-steps`` steps on that BM25 run with
    the bundled MiniLM (so the whole path, model included, runs once)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from irdistill.config import load_config
    from irdistill.data.collection import load_collection
    from irdistill.data.trec import read_run, write_run
    from irdistill.models.cross_encoder import CrossEncoder
    from irdistill.train import engine
    from irdistill.train.data import GroupCollator, group_ids
    from irdistill.train.sources import group_source
    from irdistill.train.tokens import shared_token_stores

    work, n_docs, n_queries, shape, setup = prepare(args, "training path: ")
    results: dict = {}
    overrides = [f"data.collection={work / 'collection'}", f"data.depth={args.depth}",
                 "data.negatives=7", "model.max_query_length=32", "model.max_doc_length=128",
                 "train.batch_size=8", f"train.max_steps={args.train_steps}",
                 "train.logging_steps=1", f"train.save_steps={max(1, args.train_steps)}",
                 f"train.epochs={args.epochs}"]
    config = load_config(overrides=overrides)
    with Stage(results, "collection load"):
        collection = load_collection(config.data.collection)
    if args.candidates == "bm25":
        with Stage(results, "BM25 run (all queries)", disk=work / "cache"):
            run = group_source(config.data).candidates(collection)
    else:  # the synthetic run, read as a given data.run is
        with Stage(results, "run read"):  # compact, as training reads a data.run
            run = read_run(work / "collection" / "run.trec", depth=args.depth, compact=True)
    with Stage(results, "groups (labels)"):
        groups = group_source(config.data).groups(config, collection, run)
    model = CrossEncoder.from_pretrained("minilm", max_query_length=32, max_doc_length=128,
                                         device="cpu")
    with Stage(results, "tokenise", disk=work / "tokens"):  # as training does: memory-mapped
        query_tokens, doc_tokens = shared_token_stores(model.encoder, collection,
                                                       *group_ids(groups), work / "tokens")
    collate = GroupCollator(model.encoder, query_tokens, doc_tokens)
    with Stage(results, "first 200 batches"):
        for i in range(0, min(len(groups), 1600), 8):
            collate([groups[j] for j in range(i, min(i + 8, len(groups)))])
    write_run(work / "bm25.trec", run)
    data_mb = (rss_bytes()) / 2**20
    del run, groups, query_tokens, doc_tokens, collate, model
    with Stage(results, f"irdistill train ({args.train_steps} steps)"):
        engine.train(load_config(overrides=[*overrides, f"data.run={work / 'bm25.trec'}"]),
                     work / "train", show_progress=False)
    return {"size": n_docs, **shape, "setup_seconds": setup, "stages": results,
            "data_path_rss_mb": data_mb, "peak_process_mb": peak_process_mb()}


def peak_process_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- the report ----------------------------------------------------------------------------------
def exponent(rows: list[dict], stage: str, key: str = "seconds") -> float | None:
    """Log-log slope of the stage's time (or ``key``) over documents between the two largest
    sizes."""
    points = [(r["docs"], r["stages"][stage][key]) for r in rows
              if stage in r["stages"] and r["stages"][stage][key] > 0]
    if len(points) < 2:
        return None
    (n1, t1), (n2, t2) = sorted(points)[-2:]
    return math.log(t2 / t1) / math.log(n2 / n1)


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *map(line, rows)])


def render(report: dict) -> str:
    rows = sorted(report["sizes"], key=lambda r: r["docs"])
    stages = list(rows[-1]["stages"])
    header = ["stage"] + [f"{r['docs']:,} docs: s / peak MB" for r in rows] + [
        "exponent", "MS MARCO (projected)"]
    lines = []
    largest = rows[-1]
    for stage in stages:
        cells = [stage]
        for r in rows:
            s = r["stages"].get(stage)
            cells.append("-" if s is None else f"{s['seconds']:.2f} / {s['peak_mb']:.0f}")
        k = exponent(rows, stage)
        cells.append("-" if k is None else f"{k:.2f}")
        s = largest["stages"][stage]
        growth = MSMARCO["docs"] / largest["docs"]
        if k is None:
            cells.append("-")
        else:
            seconds = s["seconds"] * growth ** max(k, 0)
            m = exponent(rows, stage, "peak_mb")
            memory = max(s["peak_mb"], 0) * growth ** min(max(m or 0, 0), 1.5)
            cells.append(f"{seconds / 60:.1f} min / {memory / 1024:.1f} GB")
        lines.append(cells)
    info = report["machine"]
    head = (f"{info['date']}; {info['cpu']} ({info['cores']} cores), Python {info['python']}, "
            f"numpy {info['numpy']}; command: `{report['command']}`")
    sizes = "; ".join(f"{r['docs']:,} docs, {r['queries']:,} queries, {r['run_lines']:,} run "
                      f"lines: peak RSS {r['peak_process_mb']:.0f} MB" for r in rows)
    return "\n\n".join([head, sizes, table(header, lines),
                        "Exponent: log-log slope of time over documents between the two "
                        "largest sizes. Projection: the largest size's time scaled by "
                        "(8.8M / its documents)^exponent, its peak memory by the same power "
                        "of memory's own exponent (capped at 1.5). Search and re-ranking "
                        f"stages: up to {report.get('search_queries', '?')} queries measured "
                        "(all of them where there are fewer), times scaled to all queries."])


def machine() -> dict:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        info = Path("/proc/cpuinfo").read_text()
        cpu = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                    if line.startswith("model name")), cpu)
    return {"date": dt.datetime.now().isoformat(timespec="minutes"), "cpu": cpu,
            "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000],
                        help="collection sizes, in documents")
    parser.add_argument("--docs-per-query", type=int, default=18,
                        help="documents per training query (MS MARCO: 8.8M / 503k)")
    parser.add_argument("--depth", type=int, default=100, help="run depth")
    parser.add_argument("--doc-words", type=int, default=56,
                        help="median document length in words (MS MARCO passages: 56)")
    parser.add_argument("--search-queries", type=int, default=1000,
                        help="queries of the search and re-ranking stages (projected to all)")
    parser.add_argument("--splade-terms", type=int, default=120,
                        help="non-zero terms of a synthetic SPLADE document vector")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--markdown", type=Path, help="write the table here")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--training-path", action="store_true",
                        help="measure a training run's data path at each size instead (BM25 "
                             "over every training query, groups, tokens, first batches, then "
                             "irdistill train for --train-steps steps)")
    parser.add_argument("--queries", type=int,
                        help="queries at every size (default: one per --docs-per-query "
                             "documents)")
    parser.add_argument("--candidates", choices=("bm25", "synthetic"), default="bm25",
                        help="candidates of --training-path: BM25 over every training query "
                             "(as irdistill train makes them), or the synthetic run as a "
                             "given data.run")
    parser.add_argument("--train-steps", type=int, default=2,
                        help="steps of the training run of --training-path")
    parser.add_argument("--epochs", type=float, default=1.0,
                        help="train.epochs of --training-path (groups are counted over every "
                             "epoch, one held at a time)")
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)  # one size, in-process
    args = parser.parse_args(argv)
    if args.size:
        print(json.dumps(training_path(args) if args.training_path else run_size(args)),
              flush=True)
        return {}
    rows = []
    base = Path(args.work or tempfile.mkdtemp(prefix="irdistill-scale-"))
    try:
        for size in args.sizes:
            work = base / str(size)
            shutil.rmtree(work, ignore_errors=True)
            command = [sys.executable, __file__, "--size", str(size), "--work", str(work),
                       "--docs-per-query", str(args.docs_per_query), "--depth", str(args.depth),
                       "--doc-words", str(args.doc_words), "--search-queries",
                       str(args.search_queries), "--splade-terms", str(args.splade_terms),
                       "--train-steps", str(args.train_steps), "--epochs", str(args.epochs)]
            if args.training_path:
                command += ["--training-path", "--candidates", args.candidates]
            if args.queries:
                command += ["--queries", str(args.queries)]
            out = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
            lines = out.stdout.strip().splitlines()
            print("\n".join(lines[:-1]), flush=True)
            rows.append(json.loads(lines[-1]))
            shutil.rmtree(work, ignore_errors=True)
    finally:
        if args.work is None:
            shutil.rmtree(base, ignore_errors=True)
    report = {"machine": machine(), "command": " ".join(["python", "benchmarks/scale.py",
                                                         *(argv or sys.argv[1:])]),
              "search_queries": args.search_queries, "sizes": rows}
    text = render(report)
    print(text)
    for path, content in ((args.json, json.dumps(report, indent=1)),
                          (args.markdown, text + "\n")):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    return report


if __name__ == "__main__":
    main()
