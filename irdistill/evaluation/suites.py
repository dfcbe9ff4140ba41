"""Evaluation suites: named sets of test collections with their first stage, depth and measures.

A suite lists datasets (ir_datasets ids or local folders), the first stage that gives the
candidates (BM25 built in, or a run file per dataset), how many candidates are re-ranked, the
measures, and for long documents how they are cut into passages (MaxP/FirstP). The built-in
suites (:data:`SUITES`) are those of the studies irdistill reproduces; users define their own in
YAML (:func:`load_suites`)::

    my-suite:
      description: two BEIR sets re-ranked from my own first stage
      first_stage: run          # bm25 (default) or run: every dataset names its run file
      depth: 100
      measures: [nDCG@10, R@100]
      datasets:
        - {id: beir/nfcorpus/test, name: nfcorpus, run: runs/nfcorpus.trec}
        - {id: /data/my-beir-folder, split: test, name: mine, run: runs/mine.trec}

Measures use ir_measures notation. On TREC-DL, whose qrels are graded 0-3, AP and RR count only
label >= 2 as relevant (``AP(rel=2)``, ``RR(rel=2)@10``), as is customary for the passage task
since the track overviews; nDCG@10 uses the graded labels.

Evaluation of one system on one dataset (:func:`evaluate_on_dataset`) writes the re-ranked run
and its measures atomically, and reuses them when they exist, so an interrupted evaluation
redoes at most one dataset.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from irdistill.config import from_dict, read_yaml
from irdistill.data.collection import Collection, check_collection_spec, load_collection
from irdistill.data.trec import Run, ranked, read_run, write_run
from irdistill.distributed import is_distributed, is_main, main_process_first, wait_for_everyone
from irdistill.errors import IrdistillError, unknown_name
from irdistill.evaluation.metrics import Evaluation, evaluate, parse_measures
from irdistill.evaluation.passages import PassageSettings, rerank_passages
from irdistill.io import write_json
from irdistill.provenance import package_versions
from irdistill.rerank.scoring import rerank_to_file
from irdistill.retrieval.bm25 import bm25_run
from irdistill.utils import stable_hash

log = logging.getLogger(__name__)

FIRST_STAGES = ("bm25", "run")
VARIANT_TITLES = {"maxp": "MaxP", "firstp": "FirstP"}


@dataclass
class DatasetSpec:
    """One test collection of a suite."""

    id: str  # ir_datasets id, or a local BEIR/plain folder
    split: str | None = None  # split of a BEIR folder
    name: str | None = None  # short label in tables (default: the id)
    run: str | None = None  # first-stage run file (required when the suite's first_stage is 'run')

    @property
    def label(self) -> str:
        return self.name or self.id


@dataclass
class Suite:
    """A named evaluation suite."""

    name: str
    datasets: list[DatasetSpec]
    measures: list[str]
    depth: int = 100  # candidates re-ranked per query
    first_stage: str = "bm25"  # bm25 | run
    passages: PassageSettings | None = None  # long documents: MaxP/FirstP over passages
    description: str = ""

    def first_stage_name(self) -> str:
        return "BM25" if self.first_stage == "bm25" else "first stage"

    def first_stage_text(self) -> str:
        what = "BM25 (bm25s, English stopwords, no stemming)" if self.first_stage == "bm25" \
            else "the given run file of each dataset"
        text = f"first stage: {what}, top-{self.depth} re-ranked"
        if self.passages is not None:
            text += (f"; documents cut into passages of {self.passages.length} words, stride "
                     f"{self.passages.stride}, scored by "
                     + " and ".join(VARIANT_TITLES[a] for a in self.passages.aggregate))
        return text

    def with_overrides(self, depth: int | None = None, measures: list[str] | None = None
                       ) -> Suite:
        return dataclasses.replace(self, depth=depth or self.depth,
                                   measures=list(measures or self.measures))


def _ds(id_: str, name: str | None = None) -> DatasetSpec:
    return DatasetSpec(id=id_, name=name)


BEIR_13 = ("arguana", "climate-fever", "dbpedia-entity/test", "fever/test", "fiqa/test",
           "hotpotqa/test", "nfcorpus/test", "nq", "quora/test", "scidocs", "scifact/test",
           "trec-covid", "webis-touche2020/v2")
LOTTE = ("writing", "recreation", "science", "technology", "lifestyle")

SUITES: dict[str, Suite] = {}


def register_suite(suite: Suite) -> Suite:
    SUITES[suite.name] = suite
    return suite


register_suite(Suite(
    "msmarco-dev", [_ds("msmarco-passage/dev/small", "msmarco-dev")], ["RR@10"], depth=100,
    description="MS MARCO passage dev (small: 6,980 queries), in domain"))
register_suite(Suite(
    "trec-dl", [_ds("msmarco-passage/trec-dl-2019/judged", "dl19"),
                _ds("msmarco-passage/trec-dl-2020/judged", "dl20")],
    ["nDCG@10", "AP(rel=2)", "RR(rel=2)@10"], depth=100,
    description="TREC Deep Learning 2019 and 2020 passage, judged queries (43 and 54); graded "
                "qrels: AP and RR count label >= 2 as relevant"))
register_suite(Suite(
    "beir-13", [_ds(f"beir/{d}", d.split("/")[0]) for d in BEIR_13], ["nDCG@10"], depth=100,
    description="the 13 public BEIR test sets, out of domain"))
register_suite(Suite(
    "lotte", [_ds(f"lotte/{d}/test/search", d) for d in LOTTE], ["nDCG@10", "Success@5"],
    depth=100, description="LoTTE test, search queries, out of domain"))
register_suite(Suite(
    "robust04", [_ds("disks45/nocr/trec-robust-2004", "robust04")], ["nDCG@20", "P@20", "AP"],
    depth=100, passages=PassageSettings(),
    description="TREC Robust 2004 news articles: long documents scored by passages "
                "(MaxP and FirstP)"))
register_suite(Suite(
    "scifact", [_ds("beir/scifact/test", "scifact")], ["nDCG@10", "RR@10"], depth=20,
    description="BEIR SciFact test (300 queries), offline; depth 20 for a CPU"))
register_suite(Suite(
    "cranfield", [_ds("cranfield", "cranfield")], ["nDCG@10", "AP"], depth=20,
    description="Cranfield (225 queries, graded qrels), offline; depth 20 for a CPU"))


def suite_from_dict(name: str, data: dict[str, Any], where: str = "suite") -> Suite:
    """Build a :class:`Suite` from a YAML mapping; datasets may be given as bare ids."""
    if not isinstance(data, dict):
        raise IrdistillError(f"suite '{name}' must be a mapping of settings")
    data = dict(data)
    datasets = data.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise IrdistillError(f"suite '{name}' lists no datasets",
                             hint="add 'datasets: [beir/scifact/test, ...]'")
    data["datasets"] = [{"id": d} if isinstance(d, str) else d for d in datasets]
    if "measures" not in data:
        raise IrdistillError(f"suite '{name}' names no measures", hint="e.g. measures: [nDCG@10]")
    if isinstance(data["measures"], str):
        data["measures"] = data["measures"].split()
    return check_suite(from_dict(Suite, {"name": name, **data}, f"{where}.{name}"))


def load_suites(path: str | Path) -> dict[str, Suite]:
    """User suites from a YAML file: ``{name: {datasets, measures, ...}}``, at the top or under
    ``suites:``."""
    data = read_yaml(path)
    data = data.get("suites", data) if isinstance(data.get("suites"), dict) else data
    try:
        return {name: suite_from_dict(name, body) for name, body in data.items()}
    except IrdistillError as exc:
        if exc.path is None:
            exc.path = str(path)
        raise


def check_dataset_id(spec: DatasetSpec) -> str:
    """'folder' or 'ir_datasets' for a valid spec; the error of
    :func:`irdistill.data.collection.check_collection_spec` (the closest id) otherwise."""
    check_collection_spec(spec.id, spec.split)
    return "folder" if Path(spec.id).is_dir() else "ir_datasets"


def check_suite(suite: Suite) -> Suite:
    """Validate a suite without loading any data: ids, measures, first stage, depth, passages."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", suite.name):
        raise IrdistillError(f"suite name '{suite.name}' may use only letters, digits, '.', '_' "
                             "and '-'")
    if suite.first_stage not in FIRST_STAGES:
        raise unknown_name("first stage", suite.first_stage, FIRST_STAGES)
    if suite.depth < 1:
        raise IrdistillError(f"suite '{suite.name}': depth must be at least 1")
    parse_measures(suite.measures)
    labels = set()
    for spec in suite.datasets:
        check_dataset_id(spec)
        if suite.first_stage == "run" and not spec.run:
            raise IrdistillError(f"suite '{suite.name}': dataset '{spec.label}' gives no run "
                                 "file but the first stage is 'run'",
                                 hint="add 'run: path/to/run.trec' or use first_stage: bm25")
        if spec.label in labels:
            raise IrdistillError(f"suite '{suite.name}' has two datasets labelled "
                                 f"'{spec.label}'", hint="give them distinct 'name's")
        labels.add(spec.label)
    if suite.passages is not None:
        suite.passages.check()
    return suite


def get_suite(name: str, extra: dict[str, Suite] | None = None) -> Suite:
    """A suite by name: the user's (``extra``) first, then the built-in ones."""
    pool = {**SUITES, **(extra or {})}
    if name not in pool:
        raise unknown_name("suite", name, pool)
    return pool[name]


# -- evaluating one system on one dataset ---------------------------------------------------
def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "dataset"


def dataset_key(suite: Suite, spec: DatasetSpec, **settings: Any) -> str:
    """Hash of everything that changes the runs of a dataset (not the measures: those are
    recomputed from the saved runs)."""
    return stable_hash({"dataset": dataclasses.asdict(spec), "first_stage": suite.first_stage,
                        "depth": suite.depth,
                        "passages": dataclasses.asdict(suite.passages) if suite.passages
                        else None, **settings}, length=10)


def load_dataset(spec: DatasetSpec) -> Collection:
    collection = load_collection(spec.id, spec.split)
    collection.require_qrels()
    return collection


def judged_query_ids(collection: Collection) -> list[str]:
    """The queries a suite evaluates: those with judgements, in sorted order."""
    return sorted(q for q, docs in collection.qrels.items() if docs and q in collection.queries)


def first_stage_run(suite: Suite, spec: DatasetSpec, collection: Collection) -> Run:
    """The candidates of the judged queries: the dataset's run file, or BM25 top-``depth``."""
    judged = judged_query_ids(collection)
    if suite.first_stage == "run":
        run = read_run(spec.run, depth=suite.depth)
        return {q: docs for q, docs in run.items() if q in collection.qrels}

    return bm25_run(collection, k=suite.depth, query_ids=judged)


def _variants(suite: Suite) -> list[str]:
    return list(suite.passages.aggregate) if suite.passages is not None else [""]


def _run_path(prefix: Path, variant: str) -> Path:
    return prefix.with_name(prefix.name + (f".{variant}" if variant else "") + ".trec")


def _evaluation_from_json(data: dict[str, Any]) -> Evaluation:
    queries = data.get("queries", {})
    return Evaluation(data["aggregate"], data["per_query"], queries.get("missing_from_run", []),
                      queries.get("without_qrels", []))


def read_evaluation(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def evaluate_on_dataset(prefix: str | Path, suite: Suite, spec: DatasetSpec, *,
                        system: str, collection: Callable[[], Collection],
                        candidates: Callable[[], Run],
                        model: Callable[[], Any] | None = None, batch_size: int = 64,
                        show_progress: bool = True, info: dict[str, Any] | None = None
                        ) -> dict[str, Evaluation]:
    """Evaluate one system on one dataset; results at ``prefix.json``, runs at
    ``prefix[.variant].trec``. ``{variant: Evaluation}`` (variant '' unless passages are used).

    ``model`` loads the re-ranker (None: the system is the first stage itself). Everything is
    loaded lazily: when the results exist with the same measures nothing is loaded; when only
    the runs exist they are re-evaluated with the suite's measures. Under ``torchrun`` the
    processes share the re-ranking (passage scoring is done by the first process while the
    others wait) and the first one writes the run and the results (the others return an empty
    dict).
    """
    wait_for_everyone()  # under torchrun every process looks at the files at the same moment
    prefix = Path(prefix)
    result_path = prefix.with_name(prefix.name + ".json")
    measures = [str(m) for m in parse_measures(suite.measures)]
    variants = [""] if model is None else _variants(suite)

    if result_path.exists():
        data = read_evaluation(result_path)
        if data.get("measures") == measures and set(data.get("variants", {})) == set(variants):
            return {v: _evaluation_from_json(e) for v, e in data["variants"].items()}
    started = time.time()
    paths = {v: _run_path(prefix, v) for v in variants}
    partial = prefix.with_name(prefix.name + ".partial.jsonl")
    if all(p.exists() for p in paths.values()):
        runs = {v: read_run(p) for v, p in paths.items()}
    elif model is None:
        with main_process_first():  # under torchrun the first process writes, the others read
            if paths[""].exists():
                runs = {"": read_run(paths[""])}
            else:
                runs = {"": candidates()}
                write_run(paths[""], runs[""], tag=slug(system))
    else:
        log.info("%s re-ranks %s (%s)", system, spec.label, suite.name)
        with main_process_first():  # caches are built by one process, the others read them
            coll = collection()
            cands = candidates()
            # the first fetch builds an ir_datasets document store (its lookup files)
            coll.docs.get_many([next(iter(cands[q])) for q in sorted(cands)[:1] if cands[q]])
        scorer = model()
        if suite.passages is not None:
            # one process scores the passages, the others wait (distributed.TIMEOUT)
            with main_process_first():
                if all(p.exists() for p in paths.values()):
                    runs = {v: read_run(p) for v, p in paths.items()}
                else:
                    runs = rerank_passages(scorer, coll, cands, suite.depth, suite.passages,
                                           batch_size=batch_size, show_progress=show_progress)
                    for v, run in runs.items():
                        write_run(paths[v], run, tag=slug(system))
        else:
            # finished blocks are kept (a killed grid loses at most one block here); under
            # torchrun each process scores its share and the first one writes the merged run
            rerank_to_file(scorer, coll, cands, paths[""], depth=suite.depth,
                           batch_size=batch_size, show_progress=show_progress,
                           tag=slug(system), identity={
                               "system": system, "dataset": spec.label, "depth": suite.depth,
                               **(info or {})})
            runs = {"": read_run(paths[""])} if is_main() else {}
        partial.unlink(missing_ok=True)  # the name of an earlier version's checkpoint
    if is_distributed() and not is_main():
        return {}  # the first process evaluates and writes the results
    qrels = collection().qrels
    out = {}
    for v, run in runs.items():
        top = {q: dict(ranked(docs, suite.depth)) for q, docs in run.items()}
        out[v] = evaluate(top, qrels, measures)
    write_json(result_path, {
        "system": system, "suite": suite.name, "dataset": spec.label, "dataset_id": spec.id,
        "measures": measures, "depth": suite.depth, "seconds": round(time.time() - started, 1),
        **(info or {}), "versions": package_versions(),
        "variants": {v: e.to_json() for v, e in out.items()}})
    return out
