"""The course of a training run: its clock, its time budget, its evaluations and when it stops.

:class:`TrainingProgress` is a Hugging Face ``TrainerCallback`` whose state goes into every
checkpoint (``trainer_state.json``, as an ``ExportableState``), so a resumed run continues with
its clock, its evaluation history, its best evaluation so far and its stop reason intact:

* **clock**: seconds of training (``train_seconds``) and of evaluation during training
  (``eval_seconds``), kept apart: evaluation does not count towards a time budget. Time is read
  from :func:`now` (``time.monotonic``), a module-level function that tests replace.
* **time budget** (``train.max_minutes``): checked at each step boundary; when the training time
  reaches the budget, training stops and a checkpoint is written at that step. A resumed run
  trains only what is left of the budget.
* **evaluation flow**: the model is also evaluated when training stops (unless that step was just
  evaluated); with ``keep_best`` a checkpoint is written at each new best evaluation, so the best
  weights always exist as a checkpoint (which the Trainer's rotation keeps, see
  ``metric_for_best_model``); after ``early_stopping_patience`` evaluations without improvement
  training stops.
* **stop reason** (``stopped``): recorded before the checkpoint of the step that ends training,
  so a run killed after that checkpoint but before its model was saved is finished from the
  checkpoint rather than trained a step further (see :func:`stopped_at`).

Under DDP every process runs the same decisions: the training clock is the first process's
(broadcast at each optimizer step when a budget is set), and evaluation values come broadcast
from the first process (see :mod:`irdistill.train.dev`).

:func:`time_schedule` is the learning-rate schedule of a time budget: warmup and decay follow
the fraction of the budget used (or of the steps, whichever is further), so a recipe that says
"15 minutes" decays to zero at 15 minutes on any machine. Such a run is not bit-reproducible
across machines (how many steps fit in the budget depends on speed), but it resumes exactly
from its checkpoints: the clock is part of them.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from torch.optim.lr_scheduler import LambdaLR
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from irdistill.distributed import broadcast
from irdistill.train.resume import step_of

log = logging.getLogger(__name__)

#: why a run stopped, as recorded in its checkpoints and model card
END, BUDGET, EARLY = "end of training", "time budget", "early stopping"


def now() -> float:
    """The clock of training time (seconds; only differences matter). Tests replace it."""
    return time.monotonic()


class TrainingProgress(TrainerCallback, ExportableState):
    """Clock, time budget, evaluation history and stop reason of a run (see the module).

    ``metric``: the key of the evaluation value in the metrics (``eval_nDCG@10``), None when
    the run is not evaluated; ``eval_steps``: the Trainer's own evaluation interval (None: at
    the end only).
    """

    def __init__(self, max_minutes: float | None = None, metric: str | None = None,
                 eval_steps: int | None = None, keep_best: bool = False,
                 patience: int | None = None):
        self.max_minutes = max_minutes
        self.metric = metric
        self.eval_steps = eval_steps
        self.keep_best = keep_best
        self.patience = patience
        self.train_seconds = 0.0
        self.eval_seconds = 0.0
        self.history: list[list] = []  # [step, value, train_seconds] per evaluation
        self.best_step: int | None = None
        self.best_value: float | None = None
        self.stopped: str | None = None
        self.stopped_step: int | None = None
        self._mark: float | None = None  # start of the running interval of training time

    # -- state kept in checkpoints -------------------------------------------------------------
    def state(self) -> dict:
        return {"args": {"max_minutes": self.max_minutes, "metric": self.metric,
                         "eval_steps": self.eval_steps, "keep_best": self.keep_best,
                         "patience": self.patience},
                "attributes": {"train_seconds": self.train_seconds,
                               "eval_seconds": self.eval_seconds, "history": self.history,
                               "best_step": self.best_step, "best_value": self.best_value,
                               "stopped": self.stopped, "stopped_step": self.stopped_step}}

    # -- clock ---------------------------------------------------------------------------------
    def tick(self) -> float:
        """Add the training time since the last mark; the training seconds so far."""
        if self._mark is not None:
            t = now()
            self.train_seconds += t - self._mark
            self._mark = t
        return self.train_seconds

    @contextlib.contextmanager
    def evaluating(self):
        """A block whose time counts as evaluation, not training."""
        self.tick()
        start = now()
        try:
            yield
        finally:
            end = now()
            self.eval_seconds += end - start
            if self._mark is not None:
                self._mark = end

    def budget_fraction(self) -> float:
        """The fraction of the time budget used (0 without a budget)."""
        if not self.max_minutes:
            return 0.0
        return self.train_seconds / (60.0 * self.max_minutes)

    def stop(self, reason: str, step: int, control) -> None:
        if self.stopped is None:
            self.stopped, self.stopped_step = reason, step
        control.should_training_stop = True

    # -- Trainer events ------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        self._mark = now()
        if self.max_minutes and state.is_world_process_zero:
            left = 60.0 * self.max_minutes - self.train_seconds
            log.info("time budget: %.3g of %g minutes left", max(left, 0) / 60,
                     self.max_minutes)

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.tick()
        if self.max_minutes:  # one clock for every process: the steps and schedule must agree
            self.train_seconds = float(broadcast(self.train_seconds))

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if self.max_minutes and self.budget_fraction() >= 1.0 and not control.should_training_stop:
            (log.info if state.is_world_process_zero else log.debug)("time budget of %g minutes reached at step %d (%.1f s of training, "
                     "%.1f s of evaluation)", self.max_minutes, step, self.train_seconds,
                     self.eval_seconds)
            self.stop(BUDGET, step, control)
            control.should_save = True
        if control.should_training_stop:
            if self.stopped is None and self.max_minutes and state.is_world_process_zero:
                log.warning("training reached its last step (%d) after %.3g of the %g minutes of "
                            "train.max_minutes; raise train.epochs (or train.max_steps) to train "
                            "for the whole budget", step, self.train_seconds / 60,
                            self.max_minutes)
            self.stop(END, step, control)
            if self.metric is not None and not (self.eval_steps and step % self.eval_steps == 0):
                control.should_evaluate = True  # the model as it ends is evaluated too
            control.should_save = True  # so the stop is in the checkpoint (see stopped_at)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.metric is None or not metrics or self.metric not in metrics:
            return
        step, value = state.global_step, float(metrics[self.metric])
        if self.history and self.history[-1][0] == step:  # evaluated twice at one step
            return
        self.history.append([step, value, round(self.train_seconds, 3)])
        if self.best_value is None or value > self.best_value:  # ties keep the earlier one
            self.best_step, self.best_value = step, value
            if self.keep_best:
                control.should_save = True  # the best weights exist as a checkpoint
        since = sum(1 for s, *_ in self.history if s > self.best_step)
        if self.patience and since >= self.patience and not control.should_training_stop:
            (log.info if state.is_world_process_zero else log.debug)("early stopping at step %d: %s did not improve on %.4f (step %d) in %d "
                     "evaluations", step, self.metric, self.best_value, self.best_step, since)
            self.stop(EARLY, step, control)
            control.should_save = True

    # -- what the run did ------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"train_seconds": round(self.train_seconds, 3),
                               "eval_seconds": round(self.eval_seconds, 3),
                               "stopped": self.stopped, "stopped_step": self.stopped_step}
        if self.max_minutes:
            out["max_minutes"] = self.max_minutes
        if self.metric is not None:
            out.update(measure=self.metric.removeprefix("eval_"), evaluations=self.history,
                       best_step=self.best_step, best_value=self.best_value)
        return out


def progress_of(callbacks) -> TrainingProgress | None:
    """The :class:`TrainingProgress` among a Trainer's callbacks (the Trainer replaces the
    instance when it restores callback states from a checkpoint: always look it up)."""
    for callback in callbacks:
        if isinstance(callback, TrainingProgress):
            return callback
    return None


def stored_progress(checkpoint: str | Path) -> TrainingProgress | None:
    """The :class:`TrainingProgress` saved in ``checkpoint`` (None if it has none)."""
    path = Path(checkpoint) / "trainer_state.json"
    try:
        stored = json.loads(path.read_text(encoding="utf-8")).get("stateful_callbacks", {})
    except (OSError, ValueError):
        return None
    data = stored.get(TrainingProgress.__name__)
    if isinstance(data, list):
        data = data[-1] if data else None
    if not isinstance(data, dict):
        return None
    return TrainingProgress.from_state(data)


def stopped_at(checkpoint: str | Path) -> TrainingProgress | None:
    """The stored progress if training stopped at ``checkpoint`` (time budget, early stopping or
    its last step), else None: such a checkpoint is finished, not resumed."""
    progress = stored_progress(checkpoint)
    if progress is None or progress.stopped is None:
        return None

    return progress if progress.stopped_step == step_of(checkpoint) else None


def schedule_factor(kind: str, progress: float, warmup: float) -> float:
    """The learning-rate factor at ``progress`` (0..1) of training: linear warmup over the first
    ``warmup`` fraction, then ``kind`` (linear | cosine decay to zero, constant)."""
    progress = min(max(progress, 0.0), 1.0)
    if kind == "constant":
        return 1.0
    if warmup > 0 and progress < warmup:
        return progress / warmup
    if kind == "constant_with_warmup":
        return 1.0
    done = (progress - warmup) / (1.0 - warmup)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * done))
    return max(0.0, 1.0 - done)


def time_schedule(optimizer, kind: str, warmup: float, max_steps: int, progress_fn):
    """A ``LambdaLR`` whose progress is ``max(step / max_steps, budget fraction used)``, the
    fraction read from ``progress_fn()`` (the :class:`TrainingProgress` of the run) when the
    scheduler steps, i.e. after each optimizer step. ``max_steps``: the Trainer's bound on steps
    (``train.max_steps``, or the groups of the epochs asked), so the schedule also ends at zero
    when the groups run out before the budget."""
    def factor(step: int) -> float:
        progress = progress_fn()
        used = progress.budget_fraction() if progress is not None else 0.0
        return schedule_factor(kind, max(step / max(max_steps, 1), used), warmup)

    return LambdaLR(optimizer, factor)
