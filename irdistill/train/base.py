"""What every irdistill trainer shares, on the Hugging Face Trainer.

* :class:`BaseTrainer`: ``transformers.Trainer`` with the fault guard (:class:`FaultGuard`:
  a non-finite loss or gradient stops training with a clear message, or is skipped) and a
  dataset that is ordered (``ordered``) read in sequence. The
  cross-encoder's :class:`irdistill.train.engine.GroupTrainer`, SPLADE's
  :class:`irdistill.train.splade.SpladeTrainer` and the domain MLM's
  :class:`irdistill.adapt.mlm.MaskedPositionsTrainer` subclass it, as sentence-transformers'
  ``CrossEncoderTrainer`` subclasses the Trainer: each overrides ``compute_loss`` (and what else
  its model needs).
* :class:`JsonlLog`: the callback that writes ``train_log.jsonl``.
* :func:`training_arguments`: the ``TrainingArguments`` of a :class:`irdistill.config.TrainConfig`.
* :func:`run_trainer`: how every run trains: from the newest complete checkpoint of its
  :class:`irdistill.train.folder.RunFolder` (the log trimmed to it), with cheap CPU dropout;
  the folder then saves the model atomically (:meth:`~irdistill.train.folder.RunFolder.save_model`).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch.utils.data import SequentialSampler
from transformers import Trainer, TrainerCallback, TrainingArguments

from irdistill.config import TrainConfig
from irdistill.distributed import TIMEOUT as DIST_TIMEOUT
from irdistill.errors import IrdistillError
from irdistill.models.dropout import cpu_dropout
from irdistill.train.folder import RunFolder
from irdistill.train.resume import latest_checkpoint

log = logging.getLogger(__name__)

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


class BaseTrainer(FaultGuard, Trainer):
    """The Hugging Face ``Trainer`` with the fault guard (``on_nan``: ``stop`` or ``skip``);
    the base of every irdistill trainer, which overrides ``compute_loss``."""

    def __init__(self, *args, on_nan: str = "stop", **kwargs):
        super().__init__(*args, **kwargs)
        self.init_guard(on_nan)

    def _get_train_sampler(self, train_dataset=None):
        """A dataset whose order is the training order (``ordered``: e.g.
        :class:`irdistill.train.data.EpochGroups`) is read in sequence, not shuffled."""
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if getattr(dataset, "ordered", False):
            return SequentialSampler(dataset)
        return super()._get_train_sampler(train_dataset)


class JsonlLog(TrainerCallback):
    """Appends every log of the first process to ``path`` as one JSON line with its step."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"step": state.global_step, **logs}) + "\n")


def training_arguments(t: TrainConfig, output_dir: Path, show_progress: bool = True,
                       **overrides) -> TrainingArguments:
    """The Hugging Face ``TrainingArguments`` of a :class:`irdistill.config.TrainConfig`
    (``overrides``: other ``TrainingArguments`` keys, or replaced ones).

    Groups already cover every epoch, so the Trainer makes one pass over them; checkpoints go
    to ``output_dir/checkpoints`` (the newest is kept and resumed). Shared by every trainer.
    """
    cuda = torch.cuda.is_available()
    compile_backend = getattr(t, "torch_compile_backend", None)
    settings = dict(
        output_dir=str(RunFolder(output_dir).checkpoints),
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


def fast_dropout(model: torch.nn.Module, t: TrainConfig):
    """The block in which a trainer runs: on a CPU (and without ``torch_compile``), the
    model's dropout drawn cheaply (:func:`irdistill.models.dropout.cpu_dropout`) unless
    ``train.fast_dropout`` is off."""
    return cpu_dropout(model, t.fast_dropout and not t.torch_compile
                       and not torch.cuda.is_available())


def run_trainer(trainer: Trainer, checkpoint: Path | None, t: TrainConfig, what: str = "") -> None:
    """Train ``trainer`` to its end from ``checkpoint`` (None: from the start; see
    :meth:`irdistill.train.folder.RunFolder.resume_point`), with the cheap CPU dropout of
    :func:`fast_dropout`."""
    if checkpoint is not None:
        log.info("%sresuming from %s", f"{what}: " if what else "", checkpoint)
    with fast_dropout(trainer.model, t):
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
