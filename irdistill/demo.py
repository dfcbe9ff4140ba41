"""The offline demo: a grid (``irdistill/experiments/demo.yaml``) that the experiment runner
executes, plus what only the demo does: its options and its printed tables.

Runs with no network on BEIR SciFact through ir_datasets and the bundled MiniLM, and reports
nDCG@10 and RR@10 (with paired t-tests against BM25, Holm-corrected) of

* ``BM25``: the BM25 top-20 of the test queries (the candidates the re-ranker re-ranks);
* ``bi-encoder``: the bundled all-MiniLM-L6-v2 used as a bi-encoder, dense top-100;
* ``hybrid``: BM25 + the bi-encoder, per-query z-scores of both over the BM25 top-100,
  summed (the ranking of their mean; :func:`irdistill.teachers.hybrid.hybrid_teacher`);
* ``untrained <model>`` (with ``untrained=True``, ``--untrained``): MiniLM as a cross-encoder
  with a new, random head, the base before training;
* ``re-ranker``: the trained cross-encoder re-ranking the BM25 top-20, on its own;
* ``re-ranker + BM25``: the re-ranker interpolated with BM25, the weight chosen on the held-out
  tenth of the training queries (never on the test queries).

Training has a time budget (``train.max_minutes``; the learning rate decays over it), so the
same command trains far more on a GPU than on a laptop. With a teacher data mode
(``--set data.mode=teacher_scores --set loss=kl``) the hybrid teacher is first built for the
training queries (``OUTPUT/teachers/hybrid-train.trec``) and trained on. ``--ood COLLECTION``
adds a suite of that collection, never trained on: the same rows, the fusion by the weight
chosen in domain. The output folder is the grid's (``irdistill compare OUTPUT`` reads it);
``results.json`` maps each dataset to each system's measures, ``report/`` holds the tables,
``model`` and ``runs/<dataset>/<system>.trec`` link to the trained model and every row's run. A
rerun goes on from what is finished (BM25 index and embeddings cached, every evaluation kept,
re-ranking scores kept as they come, training resumed from its checkpoint).
"""
from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path

from irdistill.config import read_yaml
from irdistill.data.collection import load_collection
from irdistill.data.trec import write_run
from irdistill.evaluation.suites import slug
from irdistill.experiments.compare import compare
from irdistill.experiments.grid import Grid, grid_from_dict, run_grid
from irdistill.experiments.report import Report
from irdistill.io import check_output_folder, write_json
from irdistill.retrieval.bm25 import bm25_run
from irdistill.teachers.hybrid import BI_ENCODER, hybrid_teacher

log = logging.getLogger(__name__)

DEMO_GRID = Path(__file__).parent / "experiments" / "demo.yaml"
FIRST_STAGE_DEPTH = 100  # the depth of the first stages the demo lists beside the re-ranker
MEASURES = ("nDCG@10", "RR@10")
RERANK_DEPTH = 20

#: the demo's training config (the grid's base, as ``irdistill config show demo`` prints it)
DEMO_RECIPE = read_yaml(DEMO_GRID)["base"]


def source_recipe() -> dict:
    """The demo's recipe trained on every training query (no held-out tenth): the source
    training of the label-free adaptation of a re-ranker (:mod:`irdistill.adapt.reranker`)."""
    recipe = copy.deepcopy(DEMO_RECIPE)
    recipe["data"].pop("dev_fraction", None)
    recipe["train"].pop("eval_depth", None)
    return recipe


def demo_grid(output: str | Path = "demo-output", overrides: list[str] | None = None,
              bi_encoder: str = BI_ENCODER, untrained: bool = False,
              ood: list[str] | tuple[str, ...] = ()) -> Grid:
    """The demo's grid with its options: ``overrides`` (``key=value``) of the training config
    (or of the grid: ``evaluation.depth=10``), the bi-encoder of the baselines, the untrained
    row, and a suite per out-of-domain collection."""
    data = read_yaml(DEMO_GRID)
    for baseline in data["baselines"].values():
        baseline["model"] = bi_encoder
    data["evaluation"]["untrained"] = untrained
    measures = list(MEASURES)
    for collection in ood:
        name = slug(collection)
        data.setdefault("suite_definitions", {})[name] = {
            "description": f"{collection}, never trained on", "measures": measures,
            "depth": RERANK_DEPTH, "datasets": [{"id": collection, "name": name}]}
        data["suites"].append(name)
    return grid_from_dict(data, overrides=overrides, output=output, source=str(DEMO_GRID))


def hybrid_teacher_run(grid: Grid, path: Path, show_progress: bool = True) -> Path:
    """The hybrid teacher of the training queries (BM25 top-``data.depth`` rescored), for a
    teacher data mode; written once."""
    if not path.exists():
        config = grid.cells()[0].config
        collection = load_collection(config.data.collection, config.data.split)
        judged = sorted(q for q, docs in collection.qrels.items()
                        if any(r > 0 for r in docs.values()) and q in collection.queries)
        bi_encoder = grid.baselines[0].model
        log.info("hybrid teacher (BM25 + %s) of the %d judged training queries", bi_encoder,
                 len(judged))
        bm25 = bm25_run(collection, k=config.data.depth, query_ids=judged)
        write_run(path, hybrid_teacher(collection, bm25, bi_encoder, show_progress)[1],
                  tag="hybrid")
    return path


def run_demo(output: str | Path = "demo-output", overrides: list[str] | None = None,
             bi_encoder: str = BI_ENCODER, untrained: bool = False,
             ood: list[str] | tuple[str, ...] = (), show_progress: bool = True) -> Report:
    """Run the demo's grid end to end; returns the comparison (also in ``OUTPUT/report``) and
    writes ``OUTPUT/results.json`` (``{dataset: {system: {measure: value}}}``). ``untrained``
    also scores the base model with its new, random head (as long as re-ranking with the
    trained one: about a sixth of the demo's time, spent on a row of about 0.20 nDCG@10)."""
    for collection in ood:
        load_collection(collection)  # a bad name fails now, not after the training
    output = check_output_folder(output)
    overrides = list(overrides or [])
    grid = demo_grid(output, overrides, bi_encoder, untrained, ood)
    config = grid.cells()[0].config
    if config.data.mode != "labels" and not config.data.teacher_run:
        teacher = hybrid_teacher_run(grid, output / "teachers" / "hybrid-train.trec",
                                     show_progress)
        grid = demo_grid(output, [*overrides, f"data.teacher_run={teacher}"], bi_encoder,
                         untrained, ood)
    run_grid(grid, show_progress=show_progress)
    report, _ = compare([str(output)], measures=list(MEASURES), plots=False)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for r in report.results.results:
        results.setdefault(r.dataset, {})[r.system] = {m: r.aggregate[m] for m in MEASURES}
    write_json(output / "results.json", results)
    link_outputs(output)
    return report


def link_outputs(output: Path) -> None:
    """Names a person can type for what the grid keeps under hashed folders:
    ``OUTPUT/model`` (the trained re-ranker) and ``OUTPUT/runs/<dataset>/<system>.trec`` (every
    row's run, e.g. ``runs/scifact/BM25.trec``), as relative symbolic links."""
    manifest = json.loads((output / "experiment.json").read_text(encoding="utf-8"))
    links = {output / "model": output / manifest["cells"][0]["folder"] / "model"}
    for entry in manifest["evaluations"]:
        run = output / (entry["file"].removesuffix(".json") + ".trec")
        if run.exists():
            links[output / "runs" / slug(entry["dataset"]) / f"{slug(entry['system'])}.trec"] = run
    for link, target in links.items():
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{link.name}.tmp")
        tmp.unlink(missing_ok=True)
        os.symlink(os.path.relpath(target, link.parent), tmp)
        os.replace(tmp, link)
