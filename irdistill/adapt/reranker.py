"""Adapt a cross-encoder re-ranker to an unlabelled target corpus, in one command, and compare
it there with the zero-shot re-ranker and the first stages.

Two methods; each is a sequence of steps under one output folder, and a finished step is reused
(an interrupted training resumes from its last checkpoint, re-ranking keeps its scores as they
come):

``pseudo``: pseudo-queries and a teacher, as GPL (Wang et al., NAACL 2022) does for dense
retrievers, without a query generator. For each seed:

1. inverse-cloze pseudo-queries from the target's documents (:mod:`irdistill.adapt.pseudo`), or
   queries written by a language model (``generator``, doc2query);
2. their candidates, BM25 over the pseudo-query collection (top ``teacher_depth``, plus each
   pseudo-query's source document), scored by the teacher (default: the z-scored mean of BM25 and
   the bundled bi-encoder, :func:`irdistill.teachers.ensemble.build_ensemble`);
3. distillation of the teacher (``training``, default KL over 1 + 3 candidates, 200 steps of 8)
   starting from the source-trained re-ranker ``model``.

``mlm``: the recipe of the SPLADE adaptation study (Vast et al., ECIR 2024, after Artetxe et al.,
ACL 2020; see :mod:`irdistill.adapt.recipe`) with a cross-encoder as the task model:

1. MLM of the domain part (embeddings + first ``layers`` layers) of ``backbone`` on the source
   corpus, and on the target corpus;
2. cross-encoder training on the labelled source (``source_training``) with the source domain
   part frozen;
3. the target domain part put in its place (and, as a control, the model as trained).

Evaluation (``evaluate``) is the only step that reads the target's queries and judgements: BM25,
the bi-encoder, their hybrid, the zero-shot re-ranker and every adapted one over the BM25
top-``depth``, with paired tests against the zero-shot re-ranker (``report/``).

Output folder::

    pseudo/seed{s}/queries/   the pseudo-query collection (docs.tsv, queries.tsv, qrels.txt)
    pseudo/seed{s}/teacher/   teacher.trec and each teacher's scores
    pseudo/seed{s}/train/     the adapted re-ranker (model/) and its log
    mlm/base/  mlm/k{k}/{mlm-source,mlm-target,task,adapted}/
    eval/runs/*.trec  eval/scores/*.jsonl  report/ (against-bm25/)  results.json
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers import AutoConfig

from irdistill.adapt.mlm import MLMConfig
from irdistill.adapt.pseudo import ClozeSettings, GenerationSettings, write_pseudo_collection
from irdistill.adapt.recipe import domain_mlm, prepare_base, save_recombined, settings_guard
from irdistill.config import Config, check_config, from_dict, load_config, merge, to_dict
from irdistill.data.collection import Collection, load_collection
from irdistill.data.trec import ranked, write_qrels, write_run
from irdistill.demo import FIRST_STAGE_DEPTH, source_recipe
from irdistill.errors import IrdistillError, unknown_name
from irdistill.evaluation.metrics import parse_measures
from irdistill.evaluation.suites import slug
from irdistill.experiments.report import build_report, load_run_results, write_report
from irdistill.io import write_json
from irdistill.models.cross_encoder import CrossEncoder
from irdistill.models.parts import check_layer_count
from irdistill.models.paths import resolve_model_path
from irdistill.models.runtime import check_precision, training_precision
from irdistill.rerank.scoring import rerank_run, scoring_identity
from irdistill.retrieval.bm25 import bm25_run
from irdistill.retrieval.dense import dense_run
from irdistill.teachers.ensemble import NORMALISATIONS, Teacher, build_ensemble
from irdistill.teachers.hybrid import hybrid_teacher
from irdistill.teachers.llm import check_backend
from irdistill.train.dev import scoring_precision
from irdistill.train.engine import train
from irdistill.utils import stable_hash

log = logging.getLogger(__name__)

METHODS = ("pseudo", "mlm")

#: distillation on the pseudo-queries: KL from the teacher over 1 + 3 of the BM25 top-30 (the
#: first 200 steps of 2 epochs over 1,000 pseudo-queries), at the source model's own small lr
PSEUDO_TRAINING = {
    "data": {"mode": "teacher_scores", "depth": 30, "negatives": 3},
    "loss": "kl",
    "train": {"epochs": 2, "max_steps": 200, "batch_size": 8, "lr": 5e-5, "head_lr": 5e-5,
              "precision": "auto", "save_steps": 50},
}


def _source_training() -> Config:
    return from_dict(Config, source_recipe())


@dataclass
class RerankerAdaptConfig:
    """Adapt a source-trained cross-encoder to an unlabelled target corpus (module docstring)."""

    model: str = "minilm"  # the source-trained re-ranker (pseudo), the zero-shot system
    target: str = "cranfield"  # only its documents are read, except by the evaluation
    target_split: str | None = None
    methods: list[str] = field(default_factory=lambda: ["pseudo"])  # pseudo, mlm
    seeds: list[int] = field(default_factory=lambda: [1])  # pseudo: pseudo-query + training seed
    pseudo: ClozeSettings = field(default_factory=ClozeSettings)  # its seed comes from seeds
    # queries written by this language model instead (doc2query; pseudo.queries of them), with
    # this prompt ({document}; default: irdistill.adapt.pseudo.GenerationSettings's)
    generator: str | None = None
    generator_prompt: str | None = None
    generator_max_new_tokens: int = 32
    generator_backend: str = "auto"  # transformers, vllm (causal LMs on a GPU), auto
    generator_device: str | None = None
    teachers: list[str] = field(default_factory=lambda: ["bm25", "bi:minilm"])
    normalisation: str = "zscore"  # of each teacher's scores per query before the mean
    teacher_depth: int = 30  # BM25 candidates per pseudo-query scored by the teacher
    training: Config = field(default_factory=lambda: from_dict(Config, PSEUDO_TRAINING))
    # mlm: the backbone whose domain part is trained by MLM, and the cross-encoder training of
    # the task part on the labelled source (default: the demo's recipe and budget)
    backbone: str = "minilm"
    layers: int = 2
    mlm: MLMConfig = field(default_factory=MLMConfig)
    source_training: Config = field(default_factory=_source_training)
    evaluate: bool = True
    depth: int = 20  # BM25 candidates re-ranked per target query
    measures: list[str] = field(default_factory=lambda: ["nDCG@10", "AP"])
    bi_encoder: str = "minilm"  # the bi-encoder row and the hybrid's dense half
    precision: str | None = None  # inference precision (default: the training precision's)

    def check(self) -> None:
        for method in self.methods:
            if method not in METHODS:
                raise unknown_name("adaptation method", method, METHODS)
        if not self.methods:
            raise IrdistillError("no adaptation method", hint=f"choose from {', '.join(METHODS)}")
        if "pseudo" in self.methods and not self.seeds:
            raise IrdistillError("the pseudo method needs at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise IrdistillError(f"seeds repeat: {self.seeds}")
        if self.teacher_depth < 1 or self.depth < 1:
            raise IrdistillError("teacher_depth and depth must be at least 1")
        if self.layers < 0:
            raise IrdistillError(f"layers={self.layers} must be at least 0")
        models = {"model": self.model, "bi_encoder": self.bi_encoder}
        for spec in self.teachers:
            teacher = Teacher.parse(spec)
            if teacher.is_model:
                models[f"teacher '{spec}'"] = teacher.source
        if "mlm" in self.methods:
            models["backbone"] = self.backbone
        if self.generator is not None:
            models["generator"] = self.generator
        for what, name in models.items():  # a missing model fails before hours of work
            _check_model(what, name)
        if self.normalisation not in NORMALISATIONS:
            raise unknown_name("normalisation", self.normalisation, NORMALISATIONS)
        check_precision(self.precision)
        parse_measures(self.measures)
        self.pseudo.check()
        if self.generator is not None:
            GenerationSettings(model=self.generator, prompt=self.generator_prompt,
                               max_new_tokens=self.generator_max_new_tokens).check()
            check_backend(self.generator_backend)
        check_config(self.training)
        if "mlm" in self.methods:
            check_config(self.source_training)
        if not self.measures:
            raise IrdistillError("no measure to report", hint="give measures, e.g. [nDCG@10]")


def _check_model(what: str, name: str) -> None:
    """``name`` resolves to a model whose config loads (a local folder, the bundled MiniLM, or
    a hub model that is cached or reachable)."""

    try:
        AutoConfig.from_pretrained(resolve_model_path(name))
    except (OSError, ValueError) as exc:
        raise IrdistillError(f"{what}: cannot load '{name}': {str(exc).splitlines()[0]}",
                             hint="give a model folder, or a hub name that is cached here"
                             ) from None


def load_adapt_config(path: str | Path | None = None, overrides: list[str] | None = None
                      ) -> RerankerAdaptConfig:
    """The config of a YAML file and ``--set`` overrides over the defaults, where a partly
    given ``training`` or ``source_training`` keeps the rest of its recipe."""
    return load_config(path, overrides, cls=RerankerAdaptConfig,
                       base={"training": PSEUDO_TRAINING, "source_training": source_recipe()})


def adapt_reranker(config: RerankerAdaptConfig, output_dir: str | Path, *,
                   show_progress: bool = True, target: Collection | None = None
                   ) -> dict[str, Any]:
    """Run the methods of ``config`` (module docstring) and, if ``config.evaluate``, compare the
    adapted re-rankers on the target. Returns ``{"models": {system: {seed label: model
    folder}}, "results": {system: measures (mean over seeds)}, "runs": {system: {run: measures}},
    "seconds": {step: s}}``.

    ``target`` replaces the collection named in ``config`` (e.g. a subset)."""
    config.check()
    output_dir = Path(output_dir)
    target = target or load_collection(config.target, config.target_split)  # a bad one fails first
    settings_guard(output_dir, {"target": config.target, "split": config.target_split})
    seconds: dict[str, float] = {}
    models: dict[str, dict[str, str]] = {}
    if "pseudo" in config.methods:
        for seed in config.seeds:
            started = time.time()
            models.setdefault("adapted (pseudo-queries)", {})[f"seed{seed}"] = str(
                pseudo_adapt(config, seed, output_dir / "pseudo" / f"seed{seed}", target,
                             show_progress))
            seconds[f"pseudo seed {seed}"] = round(time.time() - started, 1)
    if "mlm" in config.methods:
        started = time.time()
        adapted, control = mlm_adapt(config, output_dir / "mlm", target, show_progress)
        k = f"k{config.layers}"
        models[f"adapted (MLM k={config.layers})"] = {k: str(adapted)}
        models[f"source domain (MLM k={config.layers})"] = {k: str(control)}
        seconds["mlm"] = round(time.time() - started, 1)
    report: dict[str, Any] = {"models": models, "results": {}, "runs": {}, "seconds": seconds}
    if config.evaluate:
        started = time.time()
        report["results"], report["runs"] = evaluate_on_target(
            config, models, target, output_dir / "eval", output_dir / "report", show_progress)
        seconds["evaluation"] = round(time.time() - started, 1)
    write_json(output_dir / "results.json", report)
    return report


# -- the pseudo-query method ----------------------------------------------------------------------
def pseudo_adapt(config: RerankerAdaptConfig, seed: int, folder: Path, target: Collection,
                 show_progress: bool = True) -> Path:
    """Pseudo-queries of ``seed``, their teacher and the distillation; the model's folder."""
    settings: ClozeSettings | GenerationSettings = ClozeSettings(
        **{**asdict(config.pseudo), "seed": seed})
    if config.generator is not None:
        settings = GenerationSettings(model=config.generator, queries=config.pseudo.queries,
                                      seed=seed, prompt=config.generator_prompt,
                                      max_new_tokens=config.generator_max_new_tokens,
                                      backend=config.generator_backend,
                                      device=config.generator_device)
    queries = folder / "queries"
    settings_guard(folder, {"target": target.docs_name, "pseudo": asdict(settings),
                             "teachers": config.teachers, "normalisation": config.normalisation,
                             "teacher_depth": config.teacher_depth})
    if not (queries / "queries.tsv").exists():
        log.info("[pseudo seed %d] pseudo-queries from %s", seed, target.docs_name)
        counts = write_pseudo_collection(config.target, target.docs, queries, settings,
                                         show_progress)
        log.info("%d pseudo-queries over %d documents", counts["queries"], counts["documents"])
    pseudo = load_collection(queries)
    teacher_run = folder / "teacher" / "teacher.trec"
    if not teacher_run.exists():
        log.info("[pseudo seed %d] teacher %s over the BM25 top-%d", seed,
                 " + ".join(config.teachers), config.teacher_depth)
        build_ensemble(config.teachers, pseudo, bm25_run(pseudo, config.teacher_depth),
                       folder / "teacher", depth=config.teacher_depth,
                       normalisation=config.normalisation, name="teacher", add_positives=True,
                       source=f"bm25 top-{config.teacher_depth}", show_progress=show_progress)
    training = _with(config.training, {
        "model": {"name": config.model}, "train": {"seed": seed},
        "data": {"collection": str(queries), "split": None, "teacher_run": str(teacher_run)}})
    log.info("[pseudo seed %d] %s from the teacher, starting from %s", seed, training.loss,
             config.model)
    return train(training, folder / "train", collection=pseudo, show_progress=show_progress)


# -- the MLM method ------------------------------------------------------------------------------
def mlm_adapt(config: RerankerAdaptConfig, folder: Path, target: Collection,
              show_progress: bool = True) -> tuple[Path, Path]:
    """``(adapted, control)``: the task model with the target's domain part, and as trained."""
    k = config.layers
    base = prepare_base(config.backbone, folder / "base")
    check_layer_count(str(base), k)
    source = load_collection(config.source_training.data.collection,
                             config.source_training.data.split)
    step = folder / f"k{k}"
    mlm_source, mlm_target = domain_mlm(base, config.backbone, source, target, k, config.mlm,
                                        step, show_progress)
    log.info("[3/4] cross-encoder training of the task part on %s (domain part frozen)",
             source.name)
    task = _with(config.source_training, {"model": {"name": str(mlm_source)},
                                          "train": {"freeze_domain_layers": k}})
    task_model = train(task, step / "task", collection=source, show_progress=show_progress)
    log.info("[4/4] recombining: target domain part + source task part")
    return recombined_cross_encoder(task_model, mlm_target, k, step / "adapted"), task_model


def recombined_cross_encoder(task_model: Path, domain_model: Path, layers: int,
                             folder: Path) -> Path:
    """Save the cross-encoder ``task_model`` with the domain part of the masked LM
    ``domain_model`` (:func:`irdistill.models.parts.recombine`)."""
    if (folder / "config.json").exists():
        return folder
    model = CrossEncoder.from_pretrained(str(task_model), device="cpu")
    return save_recombined(model, model.model, domain_model, layers, folder)


def _with(config: Config, changes: dict[str, Any]) -> Config:
    return from_dict(Config, merge(to_dict(config), changes))


# -- evaluation on the target --------------------------------------------------------------------
def evaluate_on_target(config: RerankerAdaptConfig, models: dict[str, dict[str, str]],
                       target: Collection, folder: Path, report_dir: Path,
                       show_progress: bool = True
                       ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, Any]]]:
    """BM25, the bi-encoder, their hybrid, the zero-shot re-ranker and each adapted model
    (every seed) over the BM25 top-``depth`` of the target's queries; paired tests against the
    zero-shot re-ranker in ``report_dir`` (against BM25 in ``report_dir/against-bm25``). Returns the measures of each system (mean over
    seeds) and of each of its runs (by run file name)."""
    qrels = target.require_qrels()  # the first read of the target's judgements
    runs_dir = folder / "runs"
    log.info("evaluation on %s: BM25, bi-encoder %s, hybrid", target.name, config.bi_encoder)
    bm25 = bm25_run(target, k=FIRST_STAGE_DEPTH)
    runs = {"bm25": bm25,
            "bi-encoder": dense_run(target, config.bi_encoder, k=FIRST_STAGE_DEPTH,
                                    show_progress=show_progress),
            "hybrid": hybrid_teacher(target, bm25, config.bi_encoder, show_progress)[1]}
    files: list[tuple[str, Path]] = []
    for name, run in runs.items():
        write_run(runs_dir / f"{name}.trec", run, tag=name)
        files.append((name, runs_dir / f"{name}.trec"))
    candidates = {q: dict(ranked(docs, config.depth)) for q, docs in bm25.items()}
    precision = config.precision or scoring_precision(
        training_precision(config.training.train.precision))
    systems = [("zero-shot", "model", config.model)] + [
        (name, label, path) for name, paths in models.items() for label, path in paths.items()]
    for name, label, path in systems:
        stem = f"{slug(name)}-{label}"
        log.info("re-ranking the BM25 top-%d with %s (%s)", config.depth, name, path)
        reranker = CrossEncoder.from_pretrained(path, precision=precision)
        identity = scoring_identity(path, reranker, target, candidates, config.depth)
        # scores named by what they depend on: a retrained model never meets stale ones
        digest = stable_hash(identity, length=10)
        run = rerank_run(reranker, target, candidates, depth=config.depth,
                         show_progress=show_progress,
                         checkpoint=folder / "scores" / f"{stem}-{digest}.jsonl",
                         identity=identity)
        write_run(runs_dir / f"{stem}.trec", run, tag=slug(name))
        files.append((name, runs_dir / f"{stem}.trec"))
        del reranker
    qrels_file = folder / "qrels.txt"
    write_qrels(qrels_file, qrels)
    results = load_run_results(files, str(qrels_file), config.measures, dataset=target.name,
                               first_stage="bm25")
    report = build_report(results, "zero-shot", measures=config.measures)
    write_report(report, report_dir)
    against_bm25 = build_report(results, "bm25", measures=config.measures)
    write_report(against_bm25, report_dir / "against-bm25")
    per_run: dict[str, dict[str, dict[str, float]]] = {}
    for (_, path), result in zip(files, results.results):  # in the order of the files
        per_run.setdefault(result.system, {})[path.stem] = result.aggregate
    means = {name: {m: sum(r[m] for r in rows.values()) / len(rows) for m in config.measures}
             for name, rows in per_run.items()}
    return means, per_run


