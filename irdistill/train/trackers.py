"""Experiment trackers (``train.report_to``): the Hugging Face Trainer's own integrations, each
keeping its files beside the run unless its own settings say where.

- ``tensorboard``: event files in ``OUTPUT/tensorboard`` (not inside the checkpoints).
- ``mlflow``: unless ``MLFLOW_TRACKING_URI`` (or ``mlflow.set_tracking_uri``) chooses a store,
  the local database ``OUTPUT/mlflow.db`` (the backend MLflow 3 recommends over its file
  store) with artifacts under ``OUTPUT/mlartifacts``, in the experiment
  ``MLFLOW_EXPERIMENT_NAME`` or ``irdistill``. ``mlflow ui --backend-store-uri
  sqlite:///OUTPUT/mlflow.db`` shows it.
- ``wandb``: run files under ``OUTPUT/wandb`` unless ``WANDB_DIR`` is set; ``WANDB_MODE=offline``
  keeps the run on disk, for ``wandb sync`` later.

Every figure the Trainer logs reaches them: the training loss, irdistill's evaluation during
training (``eval_nDCG@10``; MLflow writes it ``eval_nDCG_10``), SPLADE's regulariser terms.
Other names of ``report_to`` (``comet_ml``, ``clearml``, ...) get the Trainer's callbacks as
they are.
"""
from __future__ import annotations

import os
from pathlib import Path

from transformers.integrations import (MLflowCallback, TensorBoardCallback, WandbCallback,
                                       get_reporting_integration_callbacks)

from irdistill.errors import IrdistillError

#: MLflow stores this process chose for earlier runs (so a later run does not take one of
#: them for the user's choice)
_OUR_STORES: set[str] = set()


class TensorBoardIn(TensorBoardCallback):
    """TensorBoard writing to ``OUTPUT/tensorboard``, whichever way the Trainer's version picks
    its folder (``args.logging_dir`` before transformers 5, ``logging_dir`` since)."""

    def __init__(self, output_dir: Path):
        super().__init__()
        self.output_dir = Path(output_dir)

    def _init_summary_writer(self, args, log_dir=None):
        if self._SummaryWriter is not None:
            self.tb_writer = self._SummaryWriter(log_dir=str(self.output_dir / "tensorboard"))


class MLflowIn(MLflowCallback):
    """MLflow logging to the local store ``OUTPUT/mlflow.db`` unless a store is chosen.

    MLflow keeps its store and experiment in the process (and copies them into the
    environment); whatever this run set is put back when training ends, so code that runs
    after it, or the next run, sees MLflow as it was."""

    _ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")

    def __init__(self, output_dir: Path):
        super().__init__()
        self.output_dir = Path(output_dir)
        self._saved: dict | None = None

    def setup(self, args, state, model):
        flow = self._ml_flow
        if state.is_world_process_zero and self._saved is None:
            self._saved = self._state()
            # a store the user chose (environment or code) is kept; one this process chose
            # for an earlier run that did not end cleanly is not a choice
            chosen = os.environ.get("MLFLOW_TRACKING_URI") or (
                flow.get_tracking_uri() if flow.is_tracking_uri_set() else None)
            if chosen in _OUR_STORES:
                chosen = None
            if chosen and flow.get_tracking_uri() != chosen:
                flow.set_tracking_uri(chosen)
                flow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or "Default")
            if chosen is None:
                self.output_dir.mkdir(parents=True, exist_ok=True)
                here = self.output_dir.resolve()
                store = f"sqlite:///{here / 'mlflow.db'}"
                _OUR_STORES.add(store)
                flow.set_tracking_uri(store)
                name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "irdistill"
                if flow.get_experiment_by_name(name) is None:
                    flow.create_experiment(name,
                                           artifact_location=(here / "mlartifacts").as_uri())
                flow.set_experiment(name)
        super().setup(args, state, model)

    def on_train_end(self, args, state, control, **kwargs):
        try:
            super().on_train_end(args, state, control, **kwargs)
        finally:
            self._restore()

    def _state(self) -> dict:
        # mlflow is an optional dependency (irdistill[mlflow]), imported only when it is used
        import mlflow.tracking._tracking_service.utils as tracking
        import mlflow.tracking.fluent as fluent

        return {"uri": getattr(tracking, "_tracking_uri", None),
                "experiment": getattr(fluent, "_active_experiment_id", None),
                "env": {k: os.environ.get(k) for k in self._ENV}}

    def _restore(self) -> None:
        if self._saved is None:
            return
        import mlflow.tracking.fluent as fluent  # optional, as above

        saved, self._saved = self._saved, None
        self._ml_flow.set_tracking_uri(saved["uri"])
        if hasattr(fluent, "_active_experiment_id"):
            fluent._active_experiment_id = saved["experiment"]
        for key, value in saved["env"].items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class WandbIn(WandbCallback):
    """W&B keeping its run files under ``OUTPUT`` unless ``WANDB_DIR`` says where."""

    def __init__(self, output_dir: Path):
        super().__init__()
        self.output_dir = Path(output_dir)

    def setup(self, args, state, model, **kwargs):
        if os.environ.get("WANDB_DIR"):
            return super().setup(args, state, model, **kwargs)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        os.environ["WANDB_DIR"] = str(self.output_dir.resolve())
        try:  # wandb.init reads it here; a later run in this process gets its own folder
            super().setup(args, state, model, **kwargs)
        finally:
            del os.environ["WANDB_DIR"]


OURS = {TensorBoardCallback: TensorBoardIn, MLflowCallback: MLflowIn, WandbCallback: WandbIn}


def tracker_callbacks(report_to: list[str], output_dir: Path) -> list:
    """The Trainer callbacks of ``train.report_to``, built before any file is written, so a
    tracker whose package is missing fails first."""
    callbacks = []
    for cls in get_reporting_integration_callbacks(list(report_to)) if report_to else []:
        try:
            callbacks.append(OURS[cls](output_dir) if cls in OURS else cls())
        except (ImportError, RuntimeError) as exc:
            raise IrdistillError(f"tracker {cls.__name__}: {str(exc).splitlines()[0]}",
                                 hint="install its package, or remove it from train.report_to"
                                 ) from None
    return callbacks
