"""Training on the Hugging Face Trainer: groups in, a saved cross-encoder out.

The Trainer brings gradient accumulation, mixed precision, gradient checkpointing,
checkpoints and exact resume (model, optimizer, scheduler, RNG and sampler position), and
DDP under ``torchrun``/``accelerate launch``. irdistill adds the group data, the collator that
assembles pre-tokenised pairs, and the loss on the ``[queries, list_size]`` score tensor.

Output folder::

    config.yaml        the resolved config
    provenance.json    config hash, versions, data ids, seed
    train_log.jsonl    one line per logging step and per evaluation (written as training goes)
    checkpoints/       the Trainer's checkpoints (the newest is resumed; with keep_best also the
                       best evaluated one)
    model/             the final model: a plain Hugging Face checkpoint

A config with ``stages`` trains each stage in ``stage-1/``, ``stage-2/``, ... (each laid out as
above, each starting from the previous stage's model); ``model`` is then a link to the last
stage's model.

Groups come from the data mode (:mod:`irdistill.data.sampling`): lists of groups are
tokenised once before training (token ids kept as compact arrays; every epoch reuses them); a
streamed mode (``triples``) is read as training goes, its texts fetched and tokenised per batch.
With ``train.group_by_length``, batches hold groups of similar length
(:mod:`irdistill.train.ordering`), in an order fixed by the seed, so resuming is exact.

With dev queries (``data.dev_*``), the model is evaluated during training
(:mod:`irdistill.train.dev`, through ``Trainer.evaluate``: see ``GroupTrainer``), the best
checkpoint can be kept and training stopped early; ``train.max_minutes`` bounds training in time
(:mod:`irdistill.train.progress`). The state of both is in every checkpoint. Details:
``docs/training.md``.

Under ``torchrun`` (DDP; gloo on CPUs), the first process prepares the data first (caches are
built once), only it writes the config, provenance, log and model, and every process returns
once the model is saved.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, IterableDataset

from irdistill.config import (Config, TrainConfig, check_config, config_hash, dump_yaml,
                              resolve_stage, to_dict)
from irdistill.data.collection import Collection, load_collection
from irdistill.data.sampling import Group, build_groups, mining_options, mode_source
from irdistill.data.trec import Run, read_run
from irdistill.errors import IrdistillError
from irdistill.io import atomic_write, check_output_folder
from irdistill.losses import get_loss
from irdistill.models.backbones import check_training_options, split_parameters
from irdistill.models.cross_encoder import CrossEncoder
from irdistill.models.tokenization import PairEncoder
from irdistill.train.dev import DevEvaluator, build_dev_set, hold_out
from irdistill.train.resume import check_resume_config, latest_checkpoint, step_of, trim_log
from irdistill.train.trackers import tracker_callbacks

log = logging.getLogger(__name__)


class GroupDataset(Dataset):
    """Groups by index; ``ordered``: their order is the training order (length-grouped), so
    the Trainer reads them in sequence instead of shuffling."""

    def __init__(self, groups: list[Group], ordered: bool = False):
        self.groups = groups
        self.ordered = ordered

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> Group:
        return self.groups[index]


class GroupStream(IterableDataset):
    """Groups read as training goes (a streamed data mode), pass after pass without end.

    The stream is endless (training stops at ``train.max_steps``) so that the Trainer sees one
    epoch: resuming then skips exactly the batches already trained, also past the end of the
    first pass. (With one Trainer epoch per pass, a resume after the first pass skipped a whole
    pass and started the next one from its beginning: not the data an uninterrupted run saw.)
    """

    def __init__(self, groups: Iterable[Group]):
        self.groups = groups

    def __iter__(self):
        passes = 0
        while True:
            count = 0
            for group in self.groups:
                count += 1
                yield group
            if count == 0:
                if passes == 0:
                    raise IrdistillError(f"the training stream {self.groups} holds no groups")
                return
            passes += 1
            log.debug("pass %d over %s done", passes, self.groups)


class LazyTokens:
    """Token ids of texts fetched and tokenised on first use, for streamed groups.

    ``fetch(ids) -> {id: text}`` and ``encode(texts) -> token ids``; the newest ``capacity``
    entries are kept.
    """

    def __init__(self, fetch: Callable[[list[str]], dict[str, str]],
                 encode: Callable[[Sequence[str]], list[list[int]]], capacity: int = 200_000):
        self.fetch = fetch
        self.encode = encode
        self.capacity = capacity
        self.cache: OrderedDict[str, list[int]] = OrderedDict()

    def load(self, ids: Iterable[str]) -> None:
        missing = [i for i in dict.fromkeys(ids) if i not in self.cache]
        if missing:
            texts = self.fetch(missing)
            self.cache.update(zip(missing, self.encode([texts[i] for i in missing])))
            while len(self.cache) > self.capacity:
                self.cache.popitem(last=False)

    def __getitem__(self, key: str) -> list[int]:
        if key not in self.cache:
            self.load([key])
        self.cache.move_to_end(key)
        return self.cache[key]


@dataclass
class GroupCollator:
    """Turns groups into model inputs plus ``targets``/``mask`` ``[queries, list_size]``.

    Texts were tokenised once before training (dicts), or are tokenised per batch
    (:class:`LazyTokens`); the collator assembles and pads.
    """

    encoder: PairEncoder
    query_tokens: Any  # {id: token ids} or LazyTokens
    doc_tokens: Any

    def __call__(self, groups: list[Group]) -> dict[str, torch.Tensor]:
        for tokens, ids in ((self.query_tokens, [g.query_id for g in groups]),
                            (self.doc_tokens, [d for g in groups for d in g.doc_ids])):
            if isinstance(tokens, LazyTokens):
                tokens.load(ids)
        width = max(len(g.doc_ids) for g in groups)
        mask = torch.zeros((len(groups), width), dtype=torch.bool)
        targets = torch.zeros((len(groups), width), dtype=torch.float)
        pairs = []
        for row, group in enumerate(groups):
            q = self.query_tokens[group.query_id]
            for col, (doc_id, target) in enumerate(zip(group.doc_ids, group.targets)):
                pairs.append((q, self.doc_tokens[doc_id]))
                mask[row, col] = True
                targets[row, col] = target
        batch = self.encoder.collate(pairs)
        batch["targets"] = targets
        batch["mask"] = mask
        return batch


MAX_FAULTS_IN_A_ROW = 10  # on_nan=skip gives up after this many non-finite batches in a row


class FaultGuard:
    """Mixin for a Hugging Face ``Trainer`` (put it first among the bases): a non-finite loss or
    gradient stops training with a message naming the step and the last good checkpoint, or
    (``on_nan="skip"``) skips that batch or optimizer step, so no checkpoint ever holds weights
    broken by such a step. The counts of skipped batches and steps go to the log."""

    def init_guard(self, on_nan: str = "stop") -> None:
        self.on_nan = on_nan
        self.skipped_batches = 0  # micro-batches whose loss was not finite (on_nan=skip)
        self.skipped_steps = 0  # optimizer steps skipped for non-finite gradients
        self.faults_in_a_row = 0  # non-finite losses or gradients since the last good step
        self.fault_this_step = False
        self.skip_next_step = False

    def non_finite(self, what: str) -> None:
        """A non-finite loss or gradient at the coming step: stop with a clear message,
        or (``on_nan=skip``) count it, unless it keeps happening."""
        from irdistill.train.resume import latest_checkpoint

        step = self.state.global_step + 1
        self.faults_in_a_row += 1
        self.fault_this_step = True
        if self.on_nan == "skip" and self.faults_in_a_row < MAX_FAULTS_IN_A_ROW:
            log.warning("%s at step %d: skipped (train.on_nan=skip)", what, step)
            return
        good = latest_checkpoint(self.args.output_dir, clean=False)
        kept = (f"the last good checkpoint is kept: {good}" if good is not None
                else "no checkpoint had been saved yet")
        if self.on_nan == "skip":
            raise IrdistillError(
                f"{what} at step {step}, the {MAX_FAULTS_IN_A_ROW}th fault in a row: the model "
                f"has diverged", hint=f"{kept}; lower train.lr or use fp32 precision")
        raise IrdistillError(
            f"training stopped: {what} at step {step}",
            hint=f"{kept}; lower train.lr, use fp32 precision, or set train.on_nan=skip to "
                 "skip such batches, in a new --output folder")

    def finite_loss(self, loss: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """``loss``, or (when it is not finite and skipping is allowed) a zero loss that gives
        this batch no contribution; a gradient that is still not finite (from non-finite
        scores) is caught before the optimizer step."""
        if torch.isfinite(loss):
            return loss
        self.non_finite(f"the loss became {loss.item()}")
        self.skipped_batches += 1
        return (torch.nan_to_num(scores, nan=0.0, posinf=0.0, neginf=0.0) * 0.0).sum()

    def check_gradients(self, parameters) -> None:
        """Before each optimizer step: non-finite gradients stop training, or (skip) the
        step is skipped."""
        grads = [p.grad for p in parameters if p.grad is not None]
        if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
            self.non_finite("the gradients became non-finite")
            self.skipped_steps += 1
            self.skip_next_step = True
            for g in grads:
                g.zero_()
        if not self.fault_this_step:
            self.faults_in_a_row = 0
        self.fault_this_step = False

    def guard_optimizer(self) -> None:
        """Check the gradients before every optimizer step and make the step a no-op when they
        were not finite and ``on_nan=skip``."""
        inner = getattr(self.optimizer, "optimizer", self.optimizer)  # accelerate wraps it
        step = inner.step

        def guarded(*args, **kwargs):
            self.check_gradients(p for group in inner.param_groups for p in group["params"])
            if self.skip_next_step:
                self.skip_next_step = False
                return None
            return step(*args, **kwargs)

        inner.step = guarded

    def create_optimizer(self, model=None):
        created = self.optimizer is None
        optimizer = super().create_optimizer(model)
        if created:
            self.guard_optimizer()
        return optimizer

    def log(self, logs, *args, **kwargs):
        if self.skipped_batches or self.skipped_steps:
            logs = {**logs, "skipped_batches": self.skipped_batches,
                    "skipped_steps": self.skipped_steps}
        return super().log(logs, *args, **kwargs)


def forward_budget(forward_tokens: int | None, device) -> int | None:
    """Padded tokens per forward pass of a training step (None: the whole batch at once), from
    ``train.forward_tokens`` (None = auto, see :class:`irdistill.config.TrainConfig`)."""
    from irdistill.distributed import is_distributed
    from irdistill.models.cross_encoder import CPU_MAX_TOKENS

    if forward_tokens is not None:
        return forward_tokens or None
    if torch.device(device).type != "cpu" or is_distributed():
        return None
    return CPU_MAX_TOKENS


def forward_in_pieces(model, inputs: dict[str, torch.Tensor], max_tokens: int | None
                      ) -> torch.Tensor:
    """The model's first logit for each row of a right-padded batch, computed in pieces of at
    most ``max_tokens`` padded tokens (rows sorted by length, each piece cut to its longest
    row, a multiple of 8), in the batch's order. One graph: a single backward goes through all
    pieces. Each row's score does not depend on the pieces (attention is within a row)."""
    rows, width = inputs["input_ids"].shape
    if max_tokens is None or rows * width <= max_tokens or rows == 1:
        return model(**inputs).logits[:, 0]
    lengths = inputs["attention_mask"].sum(1)
    order = torch.argsort(lengths, descending=True, stable=True)
    pieces, start = [], 0
    while start < rows:
        cut = min(width, -(-int(lengths[order[start]]) // 8) * 8)
        take = order[start:start + max(1, max_tokens // cut)]
        piece = {k: v[take, :cut] if v.dim() == 2 and v.shape == (rows, width) else v[take]
                 for k, v in inputs.items()}
        pieces.append(model(**piece).logits[:, 0])
        start += len(take)
    return torch.cat(pieces)[torch.argsort(order)]


def _trainer_class():
    from transformers import Trainer

    class GroupTrainer(FaultGuard, Trainer):
        """Trainer whose loss is a pure function of the [queries, list_size] scores.

        Evaluation during training (``evaluator``, a :class:`irdistill.train.dev.DevEvaluator`)
        is the Trainer's own: ``evaluate`` is overridden to re-rank the dev queries and measure
        the run, and everything around it is the Trainer's machinery: ``eval_strategy="steps"``
        schedules it (and the evaluation at the last step), the metrics go through
        ``Trainer.log`` (train_log.jsonl, the Trainer's log history, its reporters) and
        ``on_evaluate``; with ``keep_best``, ``metric_for_best_model`` makes the Trainer track the
        best checkpoint in its state and keep it from rotation. The dev set is the
        ``eval_dataset`` only nominally: a group loss over a re-ranked list is no per-batch
        ``prediction_step``, so the default evaluation loop and ``compute_metrics`` do not fit.
        ``load_best_model_at_end`` is not used: it needs ``save_steps`` to be a multiple of
        ``eval_steps`` and a checkpoint at the best step, and cannot finish a run from its last
        checkpoint; instead :class:`irdistill.train.progress.TrainingProgress` writes a
        checkpoint at each new best evaluation (a resume point too) and the engine loads the best
        one at the end. Its state (clock, evaluation history, best, stop reason) is in every
        checkpoint.

        ``time_budget``: ``(scheduler, warmup_ratio)`` when ``train.max_minutes`` is set: the
        learning rate follows the fraction of the budget used (see
        :func:`irdistill.train.progress.time_schedule`).
        """

        def __init__(self, *args, loss_fn, loss_params, head_lr=None, on_nan="stop",
                     forward_tokens=None, evaluator=None, time_budget=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.loss_fn = loss_fn
            self.loss_params = loss_params
            self.head_lr = head_lr
            self.forward_tokens = forward_budget(forward_tokens, self.args.device)
            self.evaluator = evaluator
            self.time_budget = time_budget
            self.init_guard(on_nan)

        @property
        def progress(self):
            """The run's :class:`TrainingProgress` (looked up: the Trainer replaces it when it
            restores callback states from a checkpoint)."""
            from irdistill.train.progress import progress_of

            return progress_of(self.callback_handler.callbacks)

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            """Re-rank the dev queries with the model as it is and measure the run (the time
            counts as evaluation, not training); log and return the metrics."""
            if self.evaluator is None:
                raise IrdistillError("no dev queries to evaluate",
                                     hint="set data.dev_fraction, data.dev_queries or "
                                          "data.dev_collection")
            progress = self.progress
            timer = progress.evaluating() if progress is not None else contextlib.nullcontext()
            with timer:
                value = self.evaluator.evaluate(self.model, self.args.device)
            metrics = {f"{metric_key_prefix}_{self.evaluator.measure}": value,
                       f"{metric_key_prefix}_queries": len(self.evaluator.dev)}
            if progress is not None:
                metrics["train_seconds"] = round(progress.train_seconds, 3)
                metrics["eval_seconds"] = round(progress.eval_seconds, 3)
            if self.is_world_process_zero():
                log.info("step %d: %s %.4f on %d dev queries", self.state.global_step,
                         self.evaluator.measure, value, len(self.evaluator.dev))
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state,
                                                             self.control, metrics)
            return metrics

        def create_scheduler(self, num_training_steps, optimizer=None):
            """The Trainer's schedule, or with a time budget one that spans the budget."""
            if self.time_budget is None or self.lr_scheduler is not None:
                return super().create_scheduler(num_training_steps, optimizer)
            from irdistill.train.progress import time_schedule

            kind, warmup = self.time_budget
            self.lr_scheduler = time_schedule(optimizer or self.optimizer, kind, warmup,
                                              num_training_steps, lambda: self.progress)
            self._created_lr_scheduler = True
            return self.lr_scheduler

        def log(self, logs, *args, **kwargs):
            progress = self.progress
            if progress is not None and (self.time_budget is not None or "train_runtime" in logs):
                logs = {**logs, "train_seconds": round(progress.train_seconds, 3)}
                if "train_runtime" in logs:  # the summary at the end
                    logs.update(eval_seconds=round(progress.eval_seconds, 3),
                                stopped=progress.stopped)
            return super().log(logs, *args, **kwargs)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            targets = inputs.pop("targets")
            mask = inputs.pop("mask")
            logits = forward_in_pieces(model, inputs, self.forward_tokens)
            scores = logits.new_zeros(mask.shape)
            scores = scores.masked_scatter(mask, logits.to(scores.dtype))
            loss = self.loss_fn(scores.float(), targets.float(), mask, **self.loss_params)
            loss = self.finite_loss(loss, scores)
            return (loss, scores) if return_outputs else loss

        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            if getattr(dataset, "ordered", False):
                from torch.utils.data import SequentialSampler

                return SequentialSampler(dataset)
            return super()._get_train_sampler(train_dataset)

        def create_optimizer(self, model=None):
            """The Trainer's optimizer, with the head (every parameter outside the
            pre-trained encoder, whatever the family calls it) at ``head_lr``."""
            if self.head_lr is None or self.optimizer is not None:
                return super().create_optimizer(model)
            model = model or self.model
            decay = set(self.get_decay_parameter_names(model))
            groups = []
            for params, lr in zip(split_parameters(model), (self.args.learning_rate,
                                                             self.head_lr)):
                for with_decay in (True, False):
                    chosen = [p for n, p in params if (n in decay) == with_decay]
                    if chosen:
                        groups.append({"params": chosen, "lr": lr, "weight_decay":
                                       self.args.weight_decay if with_decay else 0.0})
            optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
            kwargs = {k: v for k, v in kwargs.items() if k not in ("lr", "params", "model")}
            self.optimizer = optimizer_cls(groups, **kwargs)
            self.guard_optimizer()
            return self.optimizer

    return GroupTrainer


def _log_callback(path: Path):
    from transformers import TrainerCallback

    class JsonlLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                with open(path, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps({"step": state.global_step, **logs}) + "\n")

    return JsonlLog()


def _card(config: Config, digest: str, collection: str, groups, steps: int,
          model_dir: Path, outcome: dict | None = None) -> dict:
    """What the model card says about the training run (see irdistill.models.model_card);
    ``outcome``: evaluation during training, the step kept, the clock (see
    :func:`select_final_weights`)."""
    d, t = config.data, config.train
    teacher = d.teacher_run and {"run": d.teacher_run, "mode": d.mode}
    extra = {"outcome": outcome} if outcome is not None else {}
    return {"name": str(model_dir), "objective": config.loss, **extra,
            "loss_params": dict(config.loss_params), "teacher": teacher or None,
            "data": {"collection": collection, "candidates": d.run or f"bm25 top-{d.depth}",
                     "mode": d.mode,
                     "groups": len(groups) if isinstance(groups, list) else str(groups),
                     "documents_per_group": d.negatives + 1, "sampling": d.sampling},
            "steps": steps,
            "training": {"lr": t.lr, "head_lr": t.head_lr, "batch_size": t.batch_size,
                         "grad_accum": t.grad_accum, "precision": t.precision,
                         "scheduler": t.scheduler, "warmup_ratio": t.warmup_ratio,
                         "seed": t.seed},
            "config_hash": digest}


def check_inputs(config: Config, have_collection: bool = False, have_run: bool = False,
                 check_model: bool = True) -> None:
    """Cheap checks of what a training config reads, before anything is loaded or written: the
    files its data mode needs exist and are files, the collection is a folder or a known
    dataset id, the model folder is complete. (Their content is checked line by line when
    read.)"""
    from irdistill.data.collection import check_collection_spec
    from irdistill.io import check_input_file
    from irdistill.models.cross_encoder import resolve_model_path

    d = config.data
    source = mode_source(d.mode)
    needed = {"teacher_run": ("data.teacher_run", "a TREC run scored or ranked by the teacher",
                              "runs/teacher.trec"),
              "triples": ("data.triples", "a triple file", "triples.tsv")}
    if source in needed and not getattr(d, source):
        key, what, example = needed[source]
        raise IrdistillError(f"data.mode={d.mode} needs {key}, {what}",
                             hint=f"e.g. --set {key}={example}")
    files = {"run": ("data.run", d.run), "teacher_run": ("data.teacher_run", d.teacher_run),
             "triples": ("data.triples", d.triples)}
    key, value = files[source]
    if value and not (source == "run" and have_run):
        check_input_file(value, f"{key} file")
    if source == "run" and d.teacher_run and (d.false_negative_margin is not None
                                              or d.false_negative_relative_margin is not None):
        check_input_file(d.teacher_run, "data.teacher_run file")  # mining's teacher
    if not have_collection:
        check_collection_spec(d.collection, d.split)
    for key in ("dev_run", "dev_queries"):
        value = getattr(d, key)
        if isinstance(value, str):
            check_input_file(value, f"data.{key} file")
    if d.dev_collection is not None:
        check_collection_spec(d.dev_collection, d.dev_split)
    if check_model:
        resolve_model_path(config.model.name)


def candidate_run(config: Config, collection: Collection) -> Run:
    """The run training groups are sampled from, as the data mode says: the teacher's run
    (teacher modes), nothing (streamed triples), or the candidate run: the given file, or BM25
    over the collection."""
    source = mode_source(config.data.mode)
    if source == "teacher_run":
        if not config.data.teacher_run:
            raise IrdistillError(f"data.mode={config.data.mode} needs data.teacher_run, a TREC run "
                                 "scored or ranked by the teacher",
                                 hint="e.g. --set data.teacher_run=runs/teacher.trec")
        return read_run(config.data.teacher_run, depth=config.data.depth)
    if source == "triples":
        return {}
    if config.data.run:
        return read_run(config.data.run, depth=config.data.depth)
    from irdistill.retrieval.bm25 import bm25_run

    queries = sorted(collection.require_qrels())
    queries = [q for q in queries if q in collection.queries]
    return bm25_run(collection, k=config.data.depth, query_ids=queries)


def build_training_groups(config: Config, collection: Collection, run: Run
                          ) -> list[Group] | Iterable[Group]:
    """Groups for every epoch, concatenated, so one pass of the Trainer covers all epochs; for
    a streamed mode, the stream itself (the Trainer passes over it again each epoch)."""
    if mode_source(config.data.mode) == "triples":
        return build_groups(config.data.mode, epoch=0, triples=config.data.triples,
                            max_queries=config.data.max_queries)
    if config.data.max_queries:
        keep = sorted(run)[: config.data.max_queries]
        run = {q: run[q] for q in keep}
    epochs = max(1, math.ceil(config.train.epochs))
    mining = mining_options(config.data)  # {} unless labels mode mines its negatives
    groups: list[Group] = []
    for epoch in range(epochs):
        groups += build_groups(config.data.mode, epoch=epoch, run=run, qrels=collection.qrels,
                               collection=collection, negatives=config.data.negatives,
                               depth=config.data.depth, sampling=config.data.sampling,
                               seed=config.train.seed, teacher_run=config.data.teacher_run,
                               force_positive=config.data.force_positive, **mining)
    per_epoch = len(groups) // epochs
    return groups[: max(1, round(per_epoch * config.train.epochs))]


def check_group_ids(collection: Collection, groups: Iterable[Group]) -> None:
    """The queries and documents of ``groups`` belong to the collection (documents where that is
    cheap to know: local files), before a model is loaded or anything written. For a stream,
    its first groups (``head``)."""
    from irdistill.data.collection import missing_docs_error

    groups = list(groups)
    collection.query_texts(sorted({g.query_id for g in groups}))
    missing = collection.docs.missing(sorted({d for g in groups for d in g.doc_ids}))
    if missing:
        raise missing_docs_error(missing, collection.name)


def tokenise_groups(encoder: PairEncoder, collection: Collection, groups: list[Group]
                    ) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Tokenise every query and document of the groups once (compact arrays of token ids)."""
    qids = sorted({g.query_id for g in groups})
    dids = sorted({d for g in groups for d in g.doc_ids})
    queries = collection.query_texts(qids)
    query_tokens = dict(zip(qids, encoder.encode_queries([queries[q] for q in qids],
                                                         compact=True)))
    doc_tokens: dict[str, list[int]] = {}
    for start in range(0, len(dids), 4096):
        chunk = dids[start:start + 4096]
        texts = collection.docs.get_many(chunk)
        doc_tokens.update(zip(chunk, encoder.encode_docs([texts[d] for d in chunk],
                                                         compact=True)))
    return query_tokens, doc_tokens


def training_arguments(t, output_dir: Path, show_progress: bool = True, **overrides):
    """The Hugging Face ``TrainingArguments`` of a :class:`irdistill.config.TrainConfig`
    (``overrides``: other ``TrainingArguments`` keys, or replaced ones).

    Groups already cover every epoch, so the Trainer makes one pass over them; checkpoints go
    to ``output_dir/checkpoints`` (the newest is kept and resumed). Shared by cross-encoder and
    SPLADE training.
    """
    from transformers import TrainingArguments

    from irdistill.distributed import TIMEOUT as DIST_TIMEOUT

    cuda = torch.cuda.is_available()
    compile_backend = getattr(t, "torch_compile_backend", None)
    settings = dict(
        output_dir=str(Path(output_dir) / "checkpoints"),
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        num_train_epochs=1,  # the groups already cover every epoch
        max_steps=t.max_steps,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_ratio,
        max_grad_norm=t.max_grad_norm,
        bf16=t.precision == "bf16",
        fp16=t.precision == "fp16" and cuda,
        activation_checkpointing=t.gradient_checkpointing,
        torch_compile=getattr(t, "torch_compile", False),
        **({"torch_compile_backend": compile_backend} if compile_backend else {}),
        logging_steps=t.logging_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=1,
        seed=t.seed,
        data_seed=t.seed,
        report_to=[],
        dataloader_num_workers=t.num_workers,
        ddp_timeout=int(DIST_TIMEOUT.total_seconds()),  # evaluation between cells may be long
        remove_unused_columns=False,
        use_cpu=not cuda,
        disable_tqdm=not show_progress,
    )
    return TrainingArguments(**{**settings, **overrides})


def evaluation_arguments(t: TrainConfig, evaluator) -> dict:
    """``TrainingArguments`` of evaluation during training and of the run's progress state:
    callback states restored on resume (clock, evaluations, best); the Trainer's step-wise
    evaluation; with ``keep_best`` its tracking of the best checkpoint, which rotation keeps
    beside the newest (two checkpoints, so none is deleted before the model is saved)."""
    out: dict[str, Any] = {"restore_callback_states_from_checkpoint": True}
    if evaluator is None:
        return out
    out["eval_strategy"] = "steps" if t.eval_steps else "no"
    if t.eval_steps:
        out["eval_steps"] = t.eval_steps
    if t.keep_best:
        out.update(metric_for_best_model=evaluator.key, greater_is_better=True,
                   save_total_limit=2)
    return out


def training_precision(precision: str) -> str:
    """The precision training runs in: ``auto`` is bf16 where the device computes it natively
    (a GPU that supports it, a CPU with AVX-512 BF16 or AMX), fp16 on other GPUs, else fp32
    (emulated bf16 on a CPU is several times slower than fp32); others are as given."""
    if precision != "auto":
        return precision
    from irdistill.models.cross_encoder import resolve_precision

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return resolve_precision(device, "auto") or "fp32"


def with_training_precision(config: Config) -> Config:
    """``config`` with its training precision resolved (see :func:`training_precision`)."""
    import dataclasses

    precision = training_precision(config.train.precision)
    if precision == config.train.precision:
        return config
    log.info("train.precision=auto: training in %s", precision)
    return dataclasses.replace(config, train=dataclasses.replace(config.train,
                                                                 precision=precision))


def fast_dropout(model: torch.nn.Module, t: TrainConfig):
    """The block in which a trainer runs: on a CPU (and without ``torch_compile``), the
    model's dropout drawn cheaply (:func:`irdistill.models.dropout.cpu_dropout`) unless
    ``train.fast_dropout`` is off. Shared by cross-encoder, SPLADE and MLM training."""
    from irdistill.models.dropout import cpu_dropout

    return cpu_dropout(model, t.fast_dropout and not t.torch_compile
                       and not torch.cuda.is_available())


def train(config: Config, output_dir: str | Path, *, collection: Collection | None = None,
          run: Run | None = None, show_progress: bool = True) -> Path:
    """Train a cross-encoder as ``config`` says; return the folder of the saved model.

    If ``output_dir/model`` exists the run is finished and nothing is done; if checkpoints
    exist, training resumes from the newest.
    """
    from irdistill.distributed import is_main, main_process_first, wait_for_everyone, world_size
    from irdistill.provenance import file_fingerprint, model_fingerprint, write_provenance
    from irdistill.train.progress import TrainingProgress, stopped_at
    from irdistill.utils import seed_everything

    output_dir = Path(output_dir)
    model_dir = output_dir / "model"
    if (model_dir / "config.json").exists():
        check_resume_config(output_dir, config_hash(config))
        log.info("%s is finished; nothing to do", model_dir)
        return model_dir
    if config.stages:
        return train_stages(config, output_dir, collection=collection, run=run,
                            show_progress=show_progress)
    loss_fn = get_loss(config.loss)
    check_config(config)
    check_inputs(config, collection is not None, run is not None)
    check_output_folder(output_dir)
    if config.train.freeze_domain_layers is not None:
        from irdistill.adapt.parts import check_layer_count

        check_layer_count(config.model.name, config.train.freeze_domain_layers,
                          config.model.num_hidden_layers)
    digest = config_hash(config)  # of the config as given: "auto" precision stays "auto"
    check_resume_config(output_dir, digest)
    config = with_training_precision(config)

    # every input is read and checked before anything is written: bad input leaves no folder
    given_run = run is not None
    with main_process_first():  # under torchrun: caches (BM25, ir_datasets) are built once
        collection = collection or load_collection(config.data.collection, config.data.split)
        run = run if given_run else candidate_run(config, collection)
        train_run, held = hold_out(config, collection, run)  # dev queries leave the groups
        dev = build_dev_set(config, collection, run, held, given_run)
    groups = build_training_groups(config, collection, train_run)
    # the candidates are in the groups now: a run read or retrieved here (at MS MARCO's size,
    # gigabytes) is not held through training
    del run, train_run, held
    streamed = not isinstance(groups, list)
    if streamed and config.train.max_steps <= 0:
        raise IrdistillError(f"data.mode={config.data.mode} streams its groups, so the number of "
                             "steps cannot be derived from epochs",
                             hint="set train.max_steps, e.g. --set train.max_steps=10000")
    source = {"run": config.data.run or "bm25", "teacher_run": config.data.teacher_run,
              "triples": config.data.triples}[mode_source(config.data.mode)]
    check_group_ids(collection, getattr(groups, "head", []) if streamed else groups)

    seed_everything(config.train.seed)  # the new head's initialisation depends on it
    m = config.model
    cuda = torch.cuda.is_available()
    model = CrossEncoder.from_pretrained(m.name, max_query_length=m.max_query_length,
                                         max_doc_length=m.max_doc_length,
                                         truncation=m.truncation,
                                         num_hidden_layers=m.num_hidden_layers, device="cpu",
                                         attn_implementation=m.attn_implementation,
                                         attn_device="cuda" if cuda else "cpu")
    check_training_options(model.model, config.train.precision,
                           config.train.gradient_checkpointing)
    trackers = tracker_callbacks(config.train.report_to, output_dir)
    if config.train.lora is not None:
        from irdistill.train.lora import with_lora

        model.model = with_lora(model.model, config.train.lora)
    if config.train.freeze_domain_layers is not None:
        from irdistill.adapt.parts import freeze_domain

        frozen = freeze_domain(model.model, config.train.freeze_domain_layers)
        log.info("domain part frozen: the embeddings and the first %d layers (%d tensors)",
                 config.train.freeze_domain_layers, len(frozen))
    if streamed:
        encoder = model.encoder
        query_tokens = LazyTokens(collection.query_texts, encoder.encode_queries)
        doc_tokens = LazyTokens(collection.docs.get_many, encoder.encode_docs)
        dataset = GroupStream(groups)
        log.info("training on groups streamed from %s (%s loss)", groups, config.loss)
    else:
        with main_process_first():  # the document store may be built on first access
            query_tokens, doc_tokens = tokenise_groups(model.encoder, collection, groups)
        if config.train.group_by_length:
            from irdistill.train.ordering import group_length, length_grouped_order

            lengths = [group_length(model.encoder, query_tokens, doc_tokens, g) for g in groups]
            order = length_grouped_order(lengths, config.train.batch_size, config.train.seed,
                                         world_size=world_size())
            dataset = GroupDataset([groups[i] for i in order], ordered=True)
        else:
            dataset = GroupDataset(groups)
        log.info("training on %d groups of up to %d documents (%s loss)", len(groups),
                 max(len(g.doc_ids) for g in groups), config.loss)

    if is_main():
        output_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(output_dir / "config.yaml") as handle:
            handle.write(dump_yaml(config))
        d = config.data
        # the files the groups were built from: the mode's source, and the teacher whose
        # scores filter mined negatives in labels mode
        mines = d.false_negative_margin is not None or d.false_negative_relative_margin is not None
        files = {k: file_fingerprint(v) for k, v in (("run", d.run),
                                                      ("teacher_run", d.teacher_run),
                                                      ("triples", d.triples))
                 if v and (k == mode_source(d.mode) or (k == "teacher_run" and mines))}
        write_provenance(output_dir, config=to_dict(config), config_hash=digest,
                         data={"collection": collection.name, "mode": config.data.mode,
                               "source": source, "groups": "streamed" if streamed else len(groups),
                               "files": files},
                         model={"name": m.name, "fingerprint": model_fingerprint(m.name)},
                         seed=config.train.seed)

    t = config.train
    if t.precision == "fp16" and not cuda:
        log.warning("fp16 mixed precision needs a GPU; training in fp32 (bf16 works on a CPU)")
    evaluator = None if dev is None else DevEvaluator(
        dev, t.eval_measure, t.eval_depth, t.precision, model.tokenizer, model.max_query_length,
        model.max_doc_length, truncation=model.truncation)
    progress = TrainingProgress(max_minutes=t.max_minutes,
                                metric=evaluator.key if evaluator else None,
                                eval_steps=t.eval_steps, keep_best=t.keep_best,
                                patience=t.early_stopping_patience)
    args = training_arguments(t, output_dir, show_progress, **evaluation_arguments(t, evaluator))
    trainer = _trainer_class()(
        model=model.model, args=args, train_dataset=dataset, eval_dataset=dev,
        data_collator=GroupCollator(model.encoder, query_tokens, doc_tokens),
        loss_fn=loss_fn, loss_params=dict(config.loss_params), head_lr=t.head_lr,
        on_nan=t.on_nan, forward_tokens=t.forward_tokens, evaluator=evaluator,
        time_budget=(t.scheduler, t.warmup_ratio) if t.max_minutes else None,
        callbacks=[progress, _log_callback(output_dir / "train_log.jsonl"), *trackers])
    checkpoint = latest_checkpoint(output_dir / "checkpoints")
    trim_log(output_dir / "train_log.jsonl", step_of(checkpoint) if checkpoint else 0)
    stopped = stopped_at(checkpoint) if checkpoint is not None else None
    if stopped is not None:  # killed after its last checkpoint, before its model was saved
        log.info("training stopped at %s (%s); saving its model", checkpoint, stopped.stopped)
        finish_from_checkpoint(trainer, checkpoint, stopped)
    else:
        if checkpoint is not None:
            log.info("resuming from %s", checkpoint)
        with fast_dropout(model.model, t):
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)

    if trainer.is_world_process_zero():
        outcome = select_final_weights(trainer, output_dir, t, dev)
        model.model = trainer.model
        if t.lora is not None:
            from irdistill.train.lora import merged

            model.model = merged(model.model)  # a plain checkpoint, loadable without peft
        model.base_model = m.name
        tmp = output_dir / "model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, card=_card(config, digest, collection.name, groups,
                                              trainer.state.global_step, model_dir, outcome))
        tmp.rename(model_dir)
        if outcome is not None:
            _record_outcome(output_dir, outcome)
    wait_for_everyone()  # every process returns once the model is there
    return model_dir


def finish_from_checkpoint(trainer, checkpoint: Path, progress) -> None:
    """Put ``trainer`` in the state of ``checkpoint``, where training stopped (weights, Trainer
    state, progress), without training: the model is then saved as if the run had just ended."""
    from transformers import TrainerState

    from irdistill.train.progress import TrainingProgress

    trainer._load_from_checkpoint(str(checkpoint))  # the Trainer's own loading of its checkpoints
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
    trainer.callback_handler.remove_callback(TrainingProgress)
    trainer.callback_handler.add_callback(progress)


def select_final_weights(trainer, output_dir: Path, t: TrainConfig, dev) -> dict | None:
    """With ``keep_best``, load the weights of the best evaluated checkpoint into the trainer's
    model; return what the run did (steps, selected step, clock, evaluations) for the model card
    and provenance, or None for a run without evaluation or time budget."""
    from irdistill.train.resume import incomplete_reason

    progress = trainer.progress
    steps = trainer.state.global_step
    selected = steps
    if t.keep_best and progress.best_step is not None:
        selected = progress.best_step
        if selected != steps:
            best = Path(output_dir) / "checkpoints" / f"checkpoint-{selected}"
            reason = incomplete_reason(best)
            if reason is not None:
                raise IrdistillError(f"the best checkpoint (step {selected}) cannot be loaded: "
                                     f"{reason}", path=best,
                                     hint="train again in a new --output folder, or set "
                                          "train.keep_best=false to keep the last weights")
            log.info("keeping the best checkpoint: step %d (%s %.4f); training ran %d steps",
                     selected, progress.metric, progress.best_value, steps)
            trainer._load_from_checkpoint(str(best))
    if dev is None and not t.max_minutes:
        return None
    outcome = {"steps": steps, "selected_step": selected,
               "selected": "best evaluation" if selected != steps or t.keep_best else "last step",
               **progress.summary()}
    if dev is not None:
        outcome["dev"] = dev.describe()
    return outcome


def _record_outcome(output_dir: Path, outcome: dict) -> None:
    """Add what the run did to ``provenance.json`` (written before training)."""
    from irdistill.io import write_json

    path = Path(output_dir) / "provenance.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    record["outcome"] = outcome
    write_json(path, record)


def train_stages(config: Config, output_dir: str | Path, *, collection: Collection | None = None,
                 run: Run | None = None, show_progress: bool = True) -> Path:
    """Train the stages of ``config`` in sequence under ``output_dir/stage-N``, each starting
    from the previous stage's model; ``output_dir/model`` then links to the last stage's model.

    A finished stage is not trained again and an interrupted one resumes, so the recipe resumes
    where it stopped. ``collection``/``run`` are reused by stages that keep the base's data.
    """
    from irdistill.provenance import write_provenance

    output_dir = Path(output_dir)
    check_config(config)
    check_output_folder(output_dir)
    for index in range(len(config.stages)):  # every stage's inputs, before the first trains
        stage = resolve_stage(config, index, previous_model=None if index == 0 else "previous")
        try:
            check_inputs(stage, collection is not None and index == 0, False,
                         check_model=index == 0)
        except IrdistillError as exc:
            exc.message = f"stage {index + 1}: {exc.message}"
            raise
    created = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(output_dir / "config.yaml") as handle:
        handle.write(dump_yaml(config))
    write_provenance(output_dir, config=to_dict(config), config_hash=config_hash(config),
                     stages=len(config.stages), seed=config.train.seed)
    try:
        return _train_stages(config, output_dir, collection, run, show_progress)
    except IrdistillError:
        if created and not any(output_dir.glob("stage-*")):  # bad input: leave nothing behind
            shutil.rmtree(output_dir, ignore_errors=True)
        raise


def _train_stages(config: Config, output_dir: Path, collection: Collection | None,
                  run: Run | None, show_progress: bool) -> Path:
    previous: str | None = None
    model_dir = output_dir / "model"
    for index in range(len(config.stages)):
        stage = resolve_stage(config, index, previous_model=previous)
        same = (stage.data.collection, stage.data.split) == (config.data.collection,
                                                             config.data.split)
        same_run = same and (stage.data.mode, stage.data.run, stage.data.depth) == (
            config.data.mode, config.data.run, config.data.depth)
        log.info("stage %d of %d: %s loss, data mode %s", index + 1, len(config.stages),
                 stage.loss, stage.data.mode)
        model_dir = train(stage, output_dir / f"stage-{index + 1}",
                          collection=collection if same else None,
                          run=run if same_run else None, show_progress=show_progress)
        previous = str(model_dir.resolve())
    link = output_dir / "model"
    tmp = output_dir / ".model.link.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(os.path.relpath(model_dir, output_dir), tmp)
    os.replace(tmp, link)
    return link
