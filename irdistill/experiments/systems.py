"""Systems a grid lists beside its trained cells: baselines that need no training, and each
re-ranker fused with the first stage by a weight tuned on held-out training queries.

Baselines (the grid's ``baselines`` key; evaluated once per dataset, in ``OUTPUT/shared``)::

    baselines:
      bi-encoder: {type: dense, model: minilm, depth: 100}   # dense retrieval, top-100
      hybrid: {type: hybrid, model: minilm, depth: 100}      # first stage + bi-encoder

* ``dense``: a bi-encoder (a sentence-transformers folder, hub name, or the bundled ``minilm``)
  retrieves the top-``depth`` of the whole collection (exact search);
* ``hybrid``: the first stage's top-``depth`` rescored as the sum of the per-query z-scores of
  the first stage's scores and the bi-encoder's (the ranking of their mean;
  :func:`irdistill.teachers.hybrid.hybrid_teacher`, the teacher of the demo).

Like every row, a baseline is measured on its top-``depth`` of the suite (a dense top-100 in a
suite of depth 20 is measured over its first 20 documents), so all rows see as many documents.

Fusion (``evaluation.fusion: true``): every trained cross-encoder also gives the row
``<system> + <first stage>``, its scores interpolated with the first stage's over the same
candidates (min-max normalised per query, :func:`irdistill.evaluation.fusion.interpolate`). The
weight (0, 0.1, ..., 1) is the best nDCG@10 on the cell's own held-out queries
(``data.dev_fraction``, ``data.dev_queries`` or ``data.dev_collection``: never a test query)
re-ranked from BM25's top-``depth`` (or ``data.dev_run``), tuned once per cell and depth and kept
in ``fusion-top<depth>-<precision>.json`` in the cell folder; every dataset of every suite, in
domain or not, uses that weight (a suite scored by passages, MaxP/FirstP, gets no fused row:
there the re-ranker's run is per variant). A ``data.dev_collection`` that is one of the grid's
suite datasets is refused. The weight is tuned against BM25 even when a suite's first stage is a run
file (the fused row then mixes the re-ranker with that run by a weight chosen for BM25).
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from irdistill.config import Config, dev_source, from_dict
from irdistill.data.collection import Collection, load_collection
from irdistill.data.trec import Run, ranked, read_run
from irdistill.errors import IrdistillError, unknown_name
from irdistill.evaluation.fusion import interpolate, tune_alpha
from irdistill.evaluation.suites import Suite, first_stage_run, judged_query_ids
from irdistill.io import write_json
from irdistill.models.cross_encoder import CrossEncoder
from irdistill.rerank.scoring import rerank_run, scoring_identity
from irdistill.retrieval.bm25 import bm25_run
from irdistill.retrieval.dense import dense_run
from irdistill.teachers.hybrid import hybrid_teacher
from irdistill.train.dev import hold_out
from irdistill.train.sources import group_source

log = logging.getLogger(__name__)

BASELINE_TYPES = ("dense", "hybrid")
FUSION_MEASURE = "nDCG@10"


@dataclass
class Baseline:
    """A system evaluated once per dataset, with no training."""

    name: str = ""  # its row in the tables (the key in ``baselines``)
    type: str = "dense"  # dense | hybrid
    model: str = "minilm"  # the bi-encoder
    depth: int = 100  # dense: documents retrieved; hybrid: first-stage candidates rescored

    def check(self) -> None:
        if self.type not in BASELINE_TYPES:
            exc = unknown_name("baseline type", self.type, BASELINE_TYPES)
            exc.message = f"baseline '{self.name}': {exc.message}"
            raise exc
        if not isinstance(self.depth, int) or self.depth < 1:
            raise IrdistillError(f"baseline '{self.name}': depth {self.depth} must be a whole "
                                 "number of at least 1")
        if not self.model:
            raise IrdistillError(f"baseline '{self.name}' names no model",
                                 hint="e.g. model: minilm (the bundled bi-encoder)")

    def settings(self) -> dict[str, Any]:
        """What its runs depend on (part of its evaluation file's name)."""
        return dataclasses.asdict(self)

    def run(self, suite: Suite, spec, collection: Collection, show_progress: bool = True) -> Run:
        """Its run of the dataset's judged queries."""
        depth = max(self.depth, suite.depth)
        if self.type == "dense":
            return dense_run(collection, self.model, k=depth,
                             query_ids=judged_query_ids(collection), show_progress=show_progress)
        first = first_stage_run(dataclasses.replace(suite, depth=depth), spec, collection)
        return hybrid_teacher(collection, first, self.model, show_progress)[1]


def parse_baselines(raw: Any) -> list[Baseline]:
    """The grid's ``baselines`` mapping (name -> settings), checked."""
    if not raw:
        return []
    if not isinstance(raw, dict):
        raise IrdistillError("'baselines' must map system names to their settings",
                             hint="e.g. baselines: {bi-encoder: {type: dense, model: minilm}}")
    out = []
    for name, body in raw.items():
        if not isinstance(body, dict):
            raise IrdistillError(f"baseline '{name}' must be a mapping of its settings",
                                 hint="e.g. {type: dense, model: minilm, depth: 100}")
        baseline = from_dict(Baseline, {**body, "name": str(name)}, f"baselines.{name}")
        baseline.check()
        out.append(baseline)
    return out


# -- fusion with the first stage --------------------------------------------------------------
def check_fusion(config: Config, suites: list[Suite] = ()) -> None:
    """A cell can be fused: it names held-out queries to tune the weight on, and they are not
    the queries of a dataset the grid evaluates on."""
    if config.stages:
        raise IrdistillError("evaluation.fusion tunes its weight on a cell's held-out queries, "
                             "and staged cells are not supported",
                             hint="set evaluation.fusion: false for a grid of staged cells")
    if dev_source(config.data) is None:
        raise IrdistillError("evaluation.fusion tunes its weight on the cell's held-out queries, "
                             "and the cell names none",
                             hint="set data.dev_fraction (e.g. 0.1), data.dev_queries or "
                                  "data.dev_collection in the base config")
    d = config.data
    if d.dev_collection is not None:
        for suite in suites:
            for spec in suite.datasets:
                if spec.id == d.dev_collection and (spec.split or None) == (d.dev_split or None):
                    raise IrdistillError(
                        f"data.dev_collection {d.dev_collection} is the dataset "
                        f"'{spec.label}' of suite '{suite.name}': the fusion weight would be "
                        "tuned on the queries it is then measured on",
                        hint="hold out training queries (data.dev_fraction) or use another "
                             "split or collection")


def fusion_dev_set(config: Config, depth: int) -> tuple[Collection, Run, dict]:
    """The held-out queries of a cell's training with their BM25 top-``depth`` (or
    ``data.dev_run``) and judgements: ``(collection, candidates, qrels)``."""
    d = config.data
    if dev_source(d) == "dev_collection":
        collection = load_collection(d.dev_collection, d.dev_split)
        ids = judged_query_ids(collection)
    else:
        collection = load_collection(d.collection, d.split)
        _, ids = hold_out(config, collection, group_source(d).candidates(collection))
    if d.dev_run:
        given = read_run(d.dev_run, depth=depth)
        candidates = {q: given[q] for q in ids if q in given}
    else:
        candidates = bm25_run(collection, k=depth, query_ids=ids)
    candidates = {q: docs for q, docs in candidates.items() if docs}
    if not candidates:
        raise IrdistillError("no held-out query has candidates to tune the fusion weight on",
                             hint="check data.dev_* and data.dev_run")
    return collection, candidates, {q: collection.qrels[q] for q in candidates}


def fusion_weight(config: Config, folder: Path, model_dir: Path, depth: int,
                  precision: str | None, device=None, batch_size: int = 64,
                  show_progress: bool = True) -> float:
    """The interpolation weight of a cell's re-ranker with BM25 over the top-``depth``, tuned on
    the cell's held-out queries (kept in ``folder/fusion-top<depth>-<precision>.json``)."""
    path = folder / f"fusion-top{depth}-{precision or 'fp32'}.json"
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))["alpha"]
    collection, candidates, qrels = fusion_dev_set(config, depth)
    model = CrossEncoder.from_pretrained(str(model_dir), precision=precision, device=device)
    scores = rerank_run(model, collection, candidates, depth=depth, batch_size=batch_size,
                        show_progress=show_progress,
                        checkpoint=path.with_suffix(".scores.jsonl"),
                        identity=scoring_identity(str(model_dir), model, collection, candidates,
                                                  depth))
    top = {q: dict(ranked(docs, depth)) for q, docs in candidates.items()}
    alpha, value = tune_alpha(top, scores, qrels, FUSION_MEASURE)
    log.info("fusion weight %.1f (re-ranker) chosen on %d held-out queries of %s (%s %.4f)",
             alpha, len(top), collection.name, FUSION_MEASURE, value)
    write_json(path, {"alpha": alpha, "measure": FUSION_MEASURE, "dev_value": value,
                      "depth": depth, "collection": collection.name,
                      "dev_queries": sorted(top)})
    return alpha


def fused_run(first_stage: Run, reranked: Run, alpha: float, depth: int) -> Run:
    """The re-ranked top-``depth`` interpolated with the first stage's scores."""
    first = {q: dict(ranked(docs, depth)) for q, docs in first_stage.items()}
    return interpolate(first, reranked, alpha)
