"""The one call behind ``irdistill rerank``: settings checked, candidates read or retrieved, the
model loaded with its backend, the run re-ranked (resumable, sharded or under ``torchrun``) and
written with its provenance.

    from irdistill.rerank import RerankSettings, run_rerank

    result = run_rerank(RerankSettings(model="minilm", collection="beir/scifact/test",
                                       output="runs/reranked.trec", depth=20))
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from irdistill.data.collection import load_collection
from irdistill.data.trec import Run, read_run
from irdistill.distributed import device_for_rank, is_main, main_process_first
from irdistill.errors import IrdistillError
from irdistill.io import check_output_file
from irdistill.models.cross_encoder import CrossEncoder
from irdistill.models.paths import resolve_model_path
from irdistill.models.runtime import budget_for, check_device, check_precision
from irdistill.provenance import file_fingerprint, write_run_provenance
from irdistill.rerank.quality import int8_agreement
from irdistill.rerank.scoring import check_candidates, rerank_to_file, scoring_identity
from irdistill.rerank.sharding import check_shard
from irdistill.retrieval.bm25 import bm25_run

BACKENDS = ("torch", "compile", "onnx", "onnx-int8")


@dataclass
class RerankSettings:
    """What to re-rank and how (the options of ``irdistill rerank``)."""

    model: str  # model folder, hub name, or 'minilm'
    collection: str  # ir_datasets id, BEIR folder or plain folder
    output: str | Path  # the re-ranked TREC run to write
    run: str | Path | None = None  # candidate run; None: BM25 top-depth
    depth: int = 100  # documents per query to re-rank
    split: str | None = None  # of a BEIR folder
    batch_size: int = 64  # most pairs per batch
    max_tokens: int | None = None  # padded tokens per batch; None: auto; 0: no budget
    precision: str | None = None  # see irdistill.models.runtime.INFERENCE_PRECISIONS
    backend: str = "torch"  # torch, compile, onnx or onnx-int8
    check_queries: int = 20  # onnx-int8: queries of the sample compared with fp32 (0: none)
    shard: tuple[int, int] | None = None  # score only shard (i, n)
    block_pairs: int = 8192  # pairs per block of queries
    max_doc_length: int | None = None  # document tokens kept (default: the model's)
    device: str | None = None  # cpu, cuda, cuda:1 ... (default: the best there is)

    def check(self) -> None:
        """Every setting, before anything is read or loaded."""
        check_output_file(self.output, "output run")
        for name, value in (("depth", self.depth), ("batch_size", self.batch_size),
                            ("block_pairs", self.block_pairs),
                            ("max_doc_length", self.max_doc_length)):
            if value is not None and value < 1:
                raise IrdistillError(f"{name} {value} must be at least 1")
        if self.check_queries < 0:
            raise IrdistillError(f"check_queries {self.check_queries} must be at least 0 (0: "
                                 "no check of int8 against fp32)")
        if self.max_tokens is not None and self.max_tokens < 0:
            raise IrdistillError(f"max_tokens {self.max_tokens} must be at least 0 (0: no "
                                 "token budget)")
        if self.backend not in BACKENDS:
            raise IrdistillError(f"unknown backend '{self.backend}'",
                                 hint="choose " + ", ".join(BACKENDS))
        check_precision(self.precision)
        check_device(self.device)
        if self.shard is not None:
            check_shard(self.shard)
        resolve_model_path(self.model)  # a model folder's files, before any work


@dataclass
class RerankResult:
    run: Run  # the queries this process scored
    queries: int  # queries in the candidates
    output: Path
    int8_check: dict | None = None  # onnx-int8: the sample's agreement with fp32


def run_rerank(settings: RerankSettings, show_progress: bool = True) -> RerankResult:
    """Re-rank ``settings.run`` (or BM25's top-``depth``) and write ``settings.output``.

    Finished queries are kept in ``OUTPUT.partial.jsonl`` while it works, so the same call
    goes on after an interruption. Under ``torchrun`` the processes share the work and the first
    one writes the merged run, identical to a single process's; with ``shard``, only that shard
    is scored and written (join them with :func:`irdistill.rerank.merge_runs`). The provenance
    (model, data, settings, versions) goes beside the run as ``<stem>.provenance.json``.
    """
    s = settings
    s.check()
    with main_process_first():  # caches (BM25, ONNX export) are built by one process
        candidates = read_run(s.run, depth=s.depth) if s.run is not None else None
        collection = load_collection(s.collection, s.split)
        if candidates is None:
            candidates = bm25_run(collection, s.depth)
        check_candidates(collection, candidates, s.depth)  # before the model is loaded
        model = CrossEncoder.from_pretrained(s.model, max_doc_length=s.max_doc_length,
                                             device=device_for_rank(s.device),
                                             precision=s.precision)
        # the int8 check's fp32 reference: the same weights (an untrained head included)
        reference = copy.deepcopy(model) if s.backend == "onnx-int8" and s.check_queries \
            and is_main() else None
        if s.backend.startswith("onnx"):
            model.use_onnx(quantize="int8" if s.backend == "onnx-int8" else None)
        elif s.backend == "compile":
            model.use_compile()
    quality = None
    if reference is not None:
        # the cost of int8, measured before the whole run: rankings of a sample against fp32
        quality = int8_agreement(model, reference, collection, candidates, s.depth,
                                 s.check_queries, s.batch_size)
        del reference
    identity = scoring_identity(s.model, model, collection, candidates, s.depth)
    budget = "auto" if s.max_tokens is None else (s.max_tokens or None)  # 0: no token budget
    out = rerank_to_file(model, collection, candidates, s.output, depth=s.depth,
                         batch_size=s.batch_size, max_tokens=budget, shard=s.shard,
                         block_pairs=s.block_pairs, identity=identity,
                         show_progress=show_progress)
    if s.shard is not None or is_main():  # a shard's provenance names its shard
        write_run_provenance(
            s.output, kind="rerank",
            config={"model": s.model, "collection": str(s.collection), "split": s.split,
                    "depth": s.depth, "batch_size": s.batch_size,
                    "max_tokens": budget_for(model.device, budget),
                    "precision": model.precision or "fp32", "backend": model.backend,
                    "max_query_length": model.max_query_length,
                    "max_doc_length": model.max_doc_length, "truncation": model.truncation,
                    "block_pairs": s.block_pairs,
                    "shard": None if s.shard is None else f"{s.shard[0]}/{s.shard[1]}"},
            model={"name": s.model, "fingerprint": identity["model"],
                   "base_model": model.base_model,
                   "trained": (model.card or {}).get("config_hash")},
            data={"collection": collection.name,
                  "queries": len(out if s.shard is not None else candidates),
                  "candidates": file_fingerprint(s.run) if s.run is not None
                  else f"bm25 top-{s.depth}", "candidates_digest": identity["candidates"]},
            device=str(model.device), **({"int8_check": quality} if quality else {}))
    return RerankResult(out, len(candidates), Path(s.output), quality)
