"""SPLADE training on the Hugging Face Trainer, with the same groups and losses as cross-encoders.

A training group (one query, a positive and sampled negatives, from
:mod:`irdistill.data.sampling`) becomes one row of the ``[queries, list_size]`` score tensor;
the scores are dot products of the query's and the documents' SPLADE vectors, and any loss of
:data:`irdistill.losses.LOSSES` applies. With ``in_batch_negatives`` (label groups only), every
other document of the batch is appended to a query's row as a further negative, unless it is
judged relevant for that query. FLOPS (or L1) regularisation of the query and of the document
vectors is added, each with its own weight, warmed up quadratically over
``reg_warmup_steps`` (SPLADE v2, Formal et al. 2021, arXiv 2109.10086).

``freeze_domain_layers = k`` keeps the embeddings and the first ``k`` transformer layers fixed
(the "domain part" of :mod:`irdistill.models.parts`): only the rest of the model is trained.

Output folder (as for cross-encoders)::

    config.yaml, provenance.json, train_log.jsonl, checkpoints/, model/  (a SPLADE model)
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from irdistill.config import (Config, DataConfig, ModelConfig, TrainConfig, check_config,
                              check_not_evaluated, config_hash, load_config)
from irdistill.data.collection import Collection, load_collection
from irdistill.data.sampling import Group
from irdistill.data.trec import Qrels, Run
from irdistill.errors import IrdistillError
from irdistill.io import check_output_folder
from irdistill.losses import get_loss, get_regularizer
from irdistill.models.parts import freeze_domain
from irdistill.models.splade import SETTINGS_FILE, Splade, regularizer_weight
from irdistill.provenance import model_fingerprint
from irdistill.train.base import BaseTrainer, JsonlLog, run_trainer, training_arguments
from irdistill.train.data import check_group_ids, group_ids
from irdistill.train.folder import RunFolder
from irdistill.train.sources import group_source
from irdistill.train.trackers import tracker_callbacks
from irdistill.utils import seed_everything

log = logging.getLogger(__name__)


@dataclass
class SpladeModelConfig:
    name: str = "minilm"  # masked LM or SPLADE folder, hub name, or the bundled 'minilm'
    separate_encoders: bool = False  # a query encoder of its own (initialised as the documents')
    max_query_length: int = 32
    max_doc_length: int = 128


@dataclass
class SpladeConfig:
    """A SPLADE training run: data, model, ranking loss, sparsity regularisation, optimisation."""

    data: DataConfig = field(default_factory=lambda: DataConfig(negatives=1))
    model: SpladeModelConfig = field(default_factory=SpladeModelConfig)
    loss: str = "infonce"
    loss_params: dict[str, Any] = field(default_factory=dict)
    in_batch_negatives: bool = True  # other queries' documents as extra negatives (labels mode)
    regularizer: str = "flops"  # flops | l1
    lambda_q: float = 1e-2  # weight of the query regulariser
    lambda_d: float = 5e-3  # weight of the document regulariser
    reg_warmup_steps: int = 100  # the weights grow quadratically to their value over these steps
    freeze_domain_layers: int | None = None  # keep embeddings + the first k layers fixed
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=5e-5, batch_size=16))


def load_splade_config(path=None, overrides=None, base=None) -> SpladeConfig:
    return load_config(path, overrides, cls=SpladeConfig, base=base)


@dataclass
class SpladeCollator:
    """Groups -> padded query and (deduplicated) document batches, slot indices, targets, mask."""

    model: Splade
    query_tokens: dict[str, list[int]]
    doc_tokens: dict[str, list[int]]
    qrels: Qrels
    in_batch_negatives: bool = False

    def __call__(self, groups: list[Group]) -> dict[str, torch.Tensor]:
        doc_ids = list(dict.fromkeys(d for g in groups for d in g.doc_ids))
        position = {d: i for i, d in enumerate(doc_ids)}
        width = max(len(g.doc_ids) for g in groups)
        slots = torch.zeros((len(groups), width), dtype=torch.long)
        mask = torch.zeros((len(groups), width), dtype=torch.bool)
        targets = torch.zeros((len(groups), width), dtype=torch.float)
        for row, group in enumerate(groups):
            for col, (doc_id, target) in enumerate(zip(group.doc_ids, group.targets)):
                slots[row, col] = position[doc_id]
                mask[row, col] = True
                targets[row, col] = target
        queries = self.model.collate([self.query_tokens[g.query_id] for g in groups])
        docs = self.model.collate([self.doc_tokens[d] for d in doc_ids])
        batch = {f"q_{k}": v for k, v in queries.items()}
        batch.update({f"d_{k}": v for k, v in docs.items()})
        batch.update(slots=slots, mask=mask, targets=targets)
        if self.in_batch_negatives:
            extra = torch.ones((len(groups), len(doc_ids)), dtype=torch.bool)
            for row, group in enumerate(groups):
                judged = self.qrels.get(group.query_id, {})
                for doc_id in group.doc_ids:
                    extra[row, position[doc_id]] = False  # already in the row
                for doc_id, i in position.items():
                    if judged.get(doc_id, 0) > 0:
                        extra[row, i] = False  # relevant: not a negative
            batch["in_batch"] = extra
        return batch


def splade_scores(encoders, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Encode a collated batch; return the score tensor, its mask and targets, and the vectors."""
    q_reps = encoders.encode({k[2:]: v for k, v in batch.items() if k.startswith("q_")}, "query")
    d_reps = encoders.encode({k[2:]: v for k, v in batch.items() if k.startswith("d_")}, "doc")
    all_scores = q_reps.float() @ d_reps.float().T  # [queries, docs in batch]
    scores = torch.gather(all_scores, 1, batch["slots"])
    mask, targets = batch["mask"], batch["targets"]
    if "in_batch" in batch:
        scores = torch.cat([scores, all_scores], dim=1)
        mask = torch.cat([mask, batch["in_batch"]], dim=1)
        targets = torch.cat([targets, torch.zeros_like(all_scores)], dim=1)
    return {"scores": scores, "mask": mask, "targets": targets, "q_reps": q_reps,
            "d_reps": d_reps}


class SpladeTrainer(BaseTrainer):
    """Trainer whose loss is a ranking loss of dot products plus sparsity regularisers."""

    def __init__(self, *args, loss_fn, loss_params, regularizer, lambda_q, lambda_d,
                 reg_warmup_steps, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_fn = loss_fn
        self.loss_params = loss_params
        self.regularizer = regularizer
        self.lambda_q = lambda_q
        self.lambda_d = lambda_d
        self.reg_warmup_steps = reg_warmup_steps
        self._extra: dict[str, float] = {}
        self._extra_n = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = splade_scores(model, inputs)
        ranking = self.loss_fn(out["scores"], out["targets"], out["mask"],
                               **self.loss_params)
        step = self.state.global_step
        w_q = regularizer_weight(self.lambda_q, step, self.reg_warmup_steps)
        w_d = regularizer_weight(self.lambda_d, step, self.reg_warmup_steps)
        reg_q = self.regularizer(out["q_reps"].float())
        reg_d = self.regularizer(out["d_reps"].float())
        loss = self.finite_loss(ranking + w_q * reg_q + w_d * reg_d, out["scores"])
        with torch.no_grad():
            values = {"ranking_loss": ranking.item(), "reg_q": reg_q.item(),
                      "reg_d": reg_d.item(), "lambda_q": w_q, "lambda_d": w_d,
                      "q_terms": (out["q_reps"] > 0).sum(1).float().mean().item(),
                      "d_terms": (out["d_reps"] > 0).sum(1).float().mean().item()}
        for key, value in values.items():
            self._extra[key] = self._extra.get(key, 0.0) + value
        self._extra_n += 1
        return (loss, out["scores"]) if return_outputs else loss

    def log(self, logs, *args, **kwargs):  # FaultGuard adds the skipped counts
        if "loss" in logs and self._extra_n:
            logs.update({k: round(v / self._extra_n, 6) for k, v in self._extra.items()})
            self._extra, self._extra_n = {}, 0
        return super().log(logs, *args, **kwargs)

    def _save(self, output_dir=None, state_dict=None):
        output_dir = Path(output_dir or self.args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        save_model(self.accelerator.unwrap_model(self.model),
                   str(output_dir / "model.safetensors"))  # handles the tied head

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        load_model(model or self.model,
                   str(Path(resume_from_checkpoint) / "model.safetensors"))



def tokenise_texts(model: Splade, collection: Collection, groups: Iterable[Group]
                   ) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Tokenise every query and document of the groups once."""
    qids, dids = group_ids(groups)
    queries = collection.query_texts(qids)
    query_tokens = dict(zip(qids, model.tokenize([queries[q] for q in qids], "query")))
    doc_tokens: dict[str, list[int]] = {}
    for start in range(0, len(dids), 4096):
        chunk = dids[start:start + 4096]
        texts = collection.docs.get_many(chunk)
        doc_tokens.update(zip(chunk, model.tokenize([texts[d] for d in chunk], "doc")))
    return query_tokens, doc_tokens


def check_splade_config(config: SpladeConfig) -> SpladeConfig:
    """Check the values of a SPLADE config before any data is loaded: its data, loss and
    training sections as :func:`irdistill.config.check_config` checks a cross-encoder's, and
    what is SPLADE's own."""
    check_not_evaluated(config, "SPLADE training")
    m = config.model
    check_config(Config(data=config.data, loss=config.loss, loss_params=config.loss_params,
                        train=config.train,
                        model=ModelConfig(name=m.name, max_query_length=m.max_query_length,
                                          max_doc_length=m.max_doc_length)))
    get_regularizer(config.regularizer)
    if config.train.freeze_domain_layers is not None:
        raise IrdistillError("train.freeze_domain_layers is a cross-encoder key",
                             hint="SPLADE freezes with freeze_domain_layers (at the top level)")
    if config.train.lora is not None:
        raise IrdistillError("train.lora is not supported by SPLADE training yet",
                             hint="remove train.lora; cross-encoder training has it")
    for where, value in (("lambda_q", config.lambda_q), ("lambda_d", config.lambda_d),
                         ("reg_warmup_steps", config.reg_warmup_steps),
                         ("freeze_domain_layers", config.freeze_domain_layers)):
        if value is not None and value < 0:
            raise IrdistillError(f"{where}={value} must be at least 0")
    if config.in_batch_negatives and config.data.mode != "labels":
        raise IrdistillError("in_batch_negatives needs data.mode=labels",
                             hint="documents of other queries have no teacher score; set "
                                  "in_batch_negatives=false for teacher modes")
    if config.model.separate_encoders and config.freeze_domain_layers is not None:
        raise IrdistillError("freeze_domain_layers applies to a shared encoder only",
                             hint="set model.separate_encoders=false")
    return config


def train_splade(config: SpladeConfig, output_dir: str | Path, *,
                 collection: Collection | None = None, run: Run | None = None,
                 show_progress: bool = True) -> Path:
    """Train a SPLADE model as ``config`` says; return the folder of the saved model.

    A finished run (``output_dir/model`` exists) is not redone; an interrupted one resumes
    from its newest checkpoint. A folder that holds a run with other settings is refused.
    """
    folder = RunFolder(check_output_folder(output_dir), marker=f"model/{SETTINGS_FILE}")
    digest = config_hash(config)
    folder.check_config(digest)  # checkpoints or a model of another config: refused
    if folder.finished():
        log.info("%s is finished; nothing to do", folder.model)
        return folder.model
    check_splade_config(config)
    loss_fn = get_loss(config.loss)
    regularizer = get_regularizer(config.regularizer)
    trackers = tracker_callbacks(config.train.report_to, folder.root)
    source = group_source(config.data)

    # every input is read and checked before anything is written: bad input leaves no folder
    collection = collection or load_collection(config.data.collection, config.data.split)
    run = run if run is not None else source.candidates(collection)
    if source.streamed:
        raise IrdistillError(f"SPLADE training takes its groups in memory; data.mode="
                             f"{config.data.mode} streams them", hint="use a TREC teacher run")
    groups = source.groups(config, collection, run)
    check_group_ids(collection, groups)
    folder.write_config(config, digest,
                        data={"collection": collection.name, "run": config.data.run or "bm25",
                              "groups": len(groups)},
                        model={"name": config.model.name,
                               "fingerprint": model_fingerprint(config.model.name)},
                        seed=config.train.seed)

    seed_everything(config.train.seed)
    m = config.model
    model = Splade.from_pretrained(m.name, separate_encoders=m.separate_encoders,
                                   max_query_length=m.max_query_length,
                                   max_doc_length=m.max_doc_length, device="cpu")
    if config.freeze_domain_layers is not None:
        frozen = freeze_domain(model.encoders.doc, config.freeze_domain_layers)
        log.info("domain part frozen: embeddings and the first %d layers (%d tensors)",
                 config.freeze_domain_layers, len(frozen))
    query_tokens, doc_tokens = tokenise_texts(model, collection, groups)
    log.info("training SPLADE on %d groups of up to %d documents (%s loss%s, %s regulariser)",
             len(groups), config.data.negatives + 1, config.loss,
             " + in-batch negatives" if config.in_batch_negatives else "", config.regularizer)

    t = config.train
    trainer = SpladeTrainer(
        model=model.encoders, args=training_arguments(t, folder.root, show_progress),
        train_dataset=groups,
        data_collator=SpladeCollator(model, query_tokens, doc_tokens, collection.qrels,
                                     config.in_batch_negatives),
        loss_fn=loss_fn, loss_params=dict(config.loss_params), regularizer=regularizer,
        lambda_q=config.lambda_q, lambda_d=config.lambda_d,
        reg_warmup_steps=config.reg_warmup_steps, on_nan=t.on_nan,
        callbacks=[JsonlLog(folder.log), *trackers])
    run_trainer(trainer, folder.resume_point(), t)

    if trainer.is_world_process_zero():
        model.encoders = trainer.accelerator.unwrap_model(trainer.model)
        for param in model.encoders.parameters():
            param.requires_grad_(True)
        folder.save_model(model.save_pretrained)
    return folder.model
