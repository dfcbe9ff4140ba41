"""Unsupervised domain adaptation of SPLADE (Vast et al., "Simple Domain Adaptation for Sparse
Retrievers", ECIR 2024, arXiv 2401.11509), transposing Artetxe et al. (ACL 2020, arXiv
1910.11856) from languages to domains.

With the parameters split into a domain part (embeddings + first ``k`` layers) and a task part
(the rest; see :mod:`irdistill.models.parts`):

1. MLM on the source corpus, updating only the domain part     -> P_domain(source)
2. MLM on the target corpus, updating only the domain part     -> P_domain(target)
   (both start from the same backbone; the task part stays as it was)
3. SPLADE training on the labelled source of the task part, with P_domain(source) frozen
                                                                -> P_task(source)
4. inference on the target with P_domain(target) + P_task(source).

It is compared with zero-shot SPLADE: the same SPLADE training of all parameters on the source,
used as it is on the target. Optionally (``source_control``) also with P_domain(source) +
P_task(source) on the target, which isolates the effect of the target MLM.

Output folder (several ``k`` can share one; every finished step is reused)::

    base/                 the backbone with its MLM head, the start of every step
    zero-shot/            standard SPLADE trained on the source (unless a model is given)
    k{k}/mlm-source/ k{k}/mlm-target/ k{k}/task/ k{k}/adapted/
    eval/<system>/        index/, run.trec, metrics.json for each evaluated system
    results-k{k}.json     measures, index size and postings of every system
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irdistill.adapt.mlm import MLMConfig, train_mlm
from irdistill.config import from_dict, to_dict, tree_hash
from irdistill.data.collection import Collection, load_collection
from irdistill.data.trec import write_run
from irdistill.errors import IrdistillError
from irdistill.evaluation.metrics import evaluate, parse_measures
from irdistill.io import write_json
from irdistill.models.parts import check_layer_count, recombine
from irdistill.models.runtime import check_precision
from irdistill.models.splade import Splade, load_masked_lm
from irdistill.retrieval.sparse_index import SparseIndex, build_splade_index, splade_search
from irdistill.train.splade import SpladeConfig, check_splade_config, train_splade

log = logging.getLogger(__name__)


@dataclass
class AdaptConfig:
    """Adapt a SPLADE recipe trained on a labelled source to an unlabelled target corpus."""

    source: SpladeConfig = field(default_factory=SpladeConfig)  # labelled source and training
    target: str = "cranfield"  # target collection (its queries and qrels serve evaluation only)
    target_split: str | None = None
    layers: int = 2  # k: the domain part is the embeddings and the first k layers
    mlm: MLMConfig = field(default_factory=MLMConfig)
    zero_shot_model: str | None = None  # a SPLADE model trained on the source (else trained here)
    source_control: bool = False  # also evaluate P_domain(source) + P_task(source) on the target
    evaluate: bool = True
    depth: int = 100  # documents retrieved per target query
    measures: list[str] = field(default_factory=lambda: ["nDCG@10", "R@100"])
    batch_size: int = 32  # documents per encoding batch
    precision: str | None = None  # inference precision: fp32 | bf16


def check_adapt_config(config: AdaptConfig) -> AdaptConfig:
    """Check the values of an adaptation config before any work (its SPLADE training too)."""
    check_splade_config(config.source)
    if config.source.model.separate_encoders:
        raise IrdistillError("domain adaptation needs a shared query/document encoder",
                             hint="set source.model.separate_encoders=false")
    if config.layers < 0:
        raise IrdistillError(f"domain layers k={config.layers} is out of range",
                             hint="choose 0 up to the model's number of layers")
    for where, value in (("depth", config.depth), ("batch_size", config.batch_size),
                         ("mlm.steps", config.mlm.steps),
                         ("mlm.batch_size", config.mlm.batch_size),
                         ("mlm.max_length", config.mlm.max_length),
                         ("mlm.max_docs", config.mlm.max_docs)):
        if value < 1:
            raise IrdistillError(f"{where}={value} must be at least 1")
    if not 0 < config.mlm.mlm_probability < 1:
        raise IrdistillError(f"mlm.mlm_probability={config.mlm.mlm_probability} must be "
                             "between 0 and 1")
    parse_measures(config.measures)
    if config.precision is not None and config.precision.endswith("-full"):
        raise IrdistillError(f"precision '{config.precision}' is a cross-encoder's (cast weights)",
                             hint="SPLADE takes fp32, bf16, fp16 (autocast) or auto")

    check_precision(config.precision)
    return config


def zero_shot_splade(config: AdaptConfig, folder: Path, show_progress: bool = True) -> Path:
    """Standard SPLADE training of every parameter on the source, from the backbone: the
    model that adaptation is compared with (``folder/base``, ``folder/train``)."""
    folder = Path(folder)
    base = prepare_base(config.source.model.name, folder / "base")
    return _train_zero_shot(config.source, base, folder / "train", None, show_progress)


def _train_zero_shot(source_cfg: SpladeConfig, base: Path, folder: Path,
                     source: Collection | None, show_progress: bool) -> Path:
    zs_cfg = _replace_model(source_cfg, str(base), freeze=None)
    settings_guard(folder, to_dict(zs_cfg))
    return train_splade(zs_cfg, folder, collection=source, show_progress=show_progress)


#: training keys added after the first adaptation folders were written, hashed by their plain
#: JSON: at these values a settings tree hashes as those folders did
ADDED_SINCE_FIRST_FOLDERS = {("train", "freeze_domain_layers"): None, ("train", "report_to"): [],
                             ("train", "lora"): None}


def settings_guard(folder: Path, settings: dict[str, Any]) -> None:
    """Refuse to reuse a folder that was made with other settings (hashed as configs are, so a
    key added later at its neutral value keeps the folders made before it valid)."""
    digest = tree_hash(settings)
    earlier = tree_hash(settings, neutral=ADDED_SINCE_FIRST_FOLDERS, ignored=set())
    path = folder / "settings.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("hash") not in (digest, earlier):
            raise IrdistillError("this output folder was made with other settings", path=folder,
                                 hint="choose a new output folder or delete this one")
        return
    folder.mkdir(parents=True, exist_ok=True)
    write_json(path, {"hash": digest, "settings": settings})


def prepare_base(name: str, folder: Path) -> Path:
    """Save the backbone with its MLM head (initialised once if it had none)."""
    if (folder / "config.json").exists():
        return folder
    model, tokenizer = load_masked_lm(name)
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(folder)
    return folder


def evaluate_model(model_dir: str | Path, collection: Collection, folder: Path, *,
                   depth: int = 100, measures=("nDCG@10", "R@100"), batch_size: int = 32,
                   precision: str | None = None, show_progress: bool = True) -> dict[str, Any]:
    """Index the collection with a SPLADE model, search its queries and evaluate: measures,
    index statistics and query throughput (cached in ``folder``)."""
    result_file = folder / "metrics.json"
    settings_guard(folder, {"model": str(model_dir), "collection": collection.name,
                             "depth": depth, "measures": list(measures),
                             "precision": precision})
    if result_file.exists():
        return json.loads(result_file.read_text())
    model = Splade.from_pretrained(str(model_dir), precision=precision)
    if (folder / "index" / "meta.json").exists():
        index = SparseIndex.load(folder / "index")
    else:
        index = build_splade_index(model, collection, folder / "index", batch_size=batch_size,
                                   show_progress=show_progress, model_name=str(model_dir))
    run, timing = splade_search(model, index, collection.queries, k=depth)
    write_run(folder / "run.trec", run, tag="splade")
    result = {"measures": evaluate(run, collection.require_qrels(), measures).aggregate,
              "index": index.stats().to_json(), "search": timing.to_json(),
              "model": str(model_dir)}
    write_json(result_file, result)
    return result


def adapt(config: AdaptConfig, output_dir: str | Path, *, show_progress: bool = True,
          source: Collection | None = None, target: Collection | None = None) -> dict[str, Any]:
    """Run the recipe (module docstring) and, if ``config.evaluate``, compare zero-shot and
    adapted SPLADE on the target queries. Returns ``{"models": ..., "results": ...}``.

    ``source``/``target`` replace the collections named in ``config`` (e.g. a subset).
    """
    output_dir = Path(output_dir)
    check_adapt_config(config)
    k = config.layers
    source_cfg = config.source
    base = prepare_base(source_cfg.model.name, output_dir / "base")
    check_layer_count(str(base), k)
    target = target or load_collection(config.target, config.target_split)
    source = source or load_collection(source_cfg.data.collection, source_cfg.data.split)
    if config.evaluate:
        target.require_qrels()
    step = output_dir / f"k{k}"

    mlm_source, mlm_target = domain_mlm(base, source_cfg.model.name, source, target, k,
                                        config.mlm, step, show_progress)

    log.info("[3/4] SPLADE training of the task part on %s (domain part frozen)",
             source_cfg.data.collection)
    task_cfg = _replace_model(source_cfg, str(mlm_source), freeze=k)
    settings_guard(step / "task", to_dict(task_cfg))
    task_model = train_splade(task_cfg, step / "task", collection=source,
                              show_progress=show_progress)

    log.info("[4/4] recombining: target domain part + source task part")
    adapted = _recombined(task_model, mlm_target, k, step / "adapted")

    models = {"adapted": str(adapted), "source-domain": str(task_model)}
    zero_shot = config.zero_shot_model
    if zero_shot is None and config.evaluate:
        zero_shot = str(_train_zero_shot(source_cfg, base, output_dir / "zero-shot", source,
                                         show_progress))
    if zero_shot is not None:
        models["zero-shot"] = zero_shot
    report: dict[str, Any] = {"layers": k, "models": models, "results": {}}
    if config.evaluate:
        systems = {"zero-shot": ("zero-shot", zero_shot), f"adapted k={k}":
                   (f"k{k}-adapted", adapted)}
        if config.source_control:
            systems[f"source domain k={k}"] = (f"k{k}-source-domain", task_model)
        for name, (folder, model_dir) in systems.items():
            log.info("evaluating %s on %s", name, target.name)
            report["results"][name] = evaluate_model(
                model_dir, target, output_dir / "eval" / folder, depth=config.depth,
                measures=config.measures, batch_size=config.batch_size,
                precision=config.precision, show_progress=show_progress)
    write_json(output_dir / f"results-k{k}.json", report)
    return report


def _replace_model(cfg: SpladeConfig, name: str, freeze: int | None) -> SpladeConfig:
    data = to_dict(cfg)
    data["model"]["name"] = name
    data["freeze_domain_layers"] = freeze
    return from_dict(SpladeConfig, data)


def _recombined(task_model: Path, domain_model: Path, layers: int, folder: Path) -> Path:
    """Save the SPLADE model of ``task_model`` with the domain part of ``domain_model``."""
    if (folder / "irdistill.json").exists():
        return folder
    model = Splade.from_pretrained(str(task_model), device="cpu")
    return save_recombined(model, model.encoders.doc, domain_model, layers, folder)


def save_recombined(model, encoder, domain_model: Path, layers: int, folder: Path) -> Path:
    """Put the domain part of the masked LM ``domain_model`` into ``encoder`` (the masked LM or
    classifier inside ``model``) and save ``model`` to ``folder`` atomically."""

    donor, _ = load_masked_lm(str(domain_model))
    names = recombine(encoder, donor, layers)
    log.info("copied %d domain tensors from %s", len(names), domain_model)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tmp.rename(folder)
    return folder


def domain_mlm(base: Path, backbone: str, source: Collection, target: Collection, layers: int,
               config: MLMConfig, step: Path, show_progress: bool = True) -> tuple[Path, Path]:
    """Steps 1 and 2 of the recipe: MLM of the domain part of ``base`` on the source corpus and
    on the target corpus (``step/mlm-source``, ``step/mlm-target``); their models' folders."""
    # what the MLM weights depend on (how often they are checkpointed or logged does not)
    weights = {key: value for key, value in to_dict(config).items()
               if key not in ("save_steps", "logging_steps")}
    settings = {"base": backbone, "mlm": weights, "layers": layers}
    models = []
    for i, (name, corpus) in enumerate((("source", source), ("target", target)), 1):
        log.info("[%d/4] MLM on the %s corpus (%s), domain part = embeddings + %d layers", i,
                 name, corpus.docs_name, layers)
        folder = step / f"mlm-{name}"
        settings_guard(folder, {**settings, "corpus": corpus.docs_name})
        models.append(train_mlm(str(base), corpus, folder, layers, config,
                                show_progress=show_progress))
    return models[0], models[1]
