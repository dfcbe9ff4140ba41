"""The layout of a training run's folder, in one place.

Every trainer (cross-encoder, SPLADE, MLM) and every reader of a run (the grid's status, the
plots, resume) goes through :class:`RunFolder`::

    config.yaml        the resolved config
    provenance.json    config hash, versions, data ids, seed (and, at the end, the outcome)
    train_log.jsonl    one line per logging step and per evaluation
    checkpoints/       the Trainer's checkpoints (the newest complete one is resumed)
    tokens/            the token ids of the training texts, memory-mapped (removed at the end)
    candidates/        under DDP, the candidate run the first process read, for the others
                       (memory-mapped, removed at the end)
    model/             the final model, written to ``model.tmp/`` and renamed when complete
    stage-1/, ...      a multi-stage run: one such folder per stage, ``model`` a link to the last
                       stage's model

A run is finished when its model's marker file exists (``model/config.json`` for Hugging Face
models, ``model/irdistill.json`` for SPLADE, whose folder holds several encoders).
"""
from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from irdistill.config import dump_yaml, to_dict
from irdistill.io import atomic_write
from irdistill.provenance import write_provenance
from irdistill.train.resume import (check_resume_config, latest_checkpoint, list_checkpoints,
                                    step_of, trim_log)

STAGE_PREFIX = "stage-"


def _entry(name: str, doc: str) -> property:
    """The path of ``name`` in the run's folder, as a read-only attribute."""
    return property(lambda self: self.root / name, doc=f"``{name}``: {doc}")


@dataclass(frozen=True)
class RunFolder:
    """The files of one training run under ``root``; ``marker``: the file (relative to
    ``root``) whose presence says the model was saved."""

    root: Path
    marker: str = "model/config.json"

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    config = _entry("config.yaml", "the resolved config")
    provenance = _entry("provenance.json", "config hash, versions, data ids, seed, outcome")
    log = _entry("train_log.jsonl", "one line per logging step and per evaluation")
    checkpoints = _entry("checkpoints", "the Trainer's checkpoints")
    model = _entry("model", "the saved model (complete once it exists)")
    tokens = _entry("tokens", "token ids of the training texts (irdistill.train.tokens)")
    candidates = _entry("candidates", "the candidate run under DDP, compact (for all ranks)")

    def finished(self) -> bool:
        return (self.root / self.marker).exists()

    def check_config(self, digest: str) -> None:
        """Refuse checkpoints or a model in this folder made by another config (see
        :func:`irdistill.train.resume.check_resume_config`)."""
        check_resume_config(self.root, digest, finished_marker=self.marker)

    def write_config(self, config, digest: str, **provenance) -> None:
        """Write ``config.yaml`` and ``provenance.json`` (config, hash, versions and
        ``provenance``'s sections), creating the folder."""
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.config) as handle:
            handle.write(dump_yaml(config))
        write_provenance(self.root, config=to_dict(config), config_hash=digest, **provenance)

    def resume_point(self) -> Path | None:
        """The newest complete checkpoint (incomplete ones removed), with the log trimmed to
        its step (later steps are trained again); None to start from the beginning."""
        checkpoint = latest_checkpoint(self.checkpoints)
        trim_log(self.log, step_of(checkpoint) if checkpoint else 0)
        return checkpoint

    def save_model(self, save: Callable[[Path], None]) -> Path:
        """``save(folder)`` into ``model.tmp/``, then rename it to ``model/``: a model folder
        is always complete."""
        tmp = self.root / "model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save(tmp)
        tmp.rename(self.model)
        return self.model

    # -- multi-stage runs ---------------------------------------------------------------------

    def stage(self, index: int) -> RunFolder:
        """The folder of stage ``index`` (0-based) of a multi-stage run."""
        return RunFolder(self.root / f"{STAGE_PREFIX}{index + 1}", self.marker)

    def stages(self) -> list[RunFolder]:
        """The stage folders that exist, in order."""
        found = [p for p in self.root.glob(f"{STAGE_PREFIX}*")
                 if p.name[len(STAGE_PREFIX):].isdigit()]
        found.sort(key=lambda p: int(p.name[len(STAGE_PREFIX):]))
        return [RunFolder(p, self.marker) for p in found]

    def link_model(self, target: Path) -> Path:
        """Point ``model`` at ``target`` (the last stage's model), atomically."""
        tmp = self.root / ".model.link.tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(os.path.relpath(target, self.root), tmp)
        os.replace(tmp, self.model)
        return self.model

    # -- what a reader sees ---------------------------------------------------------------------

    def state(self) -> str:
        """``done``, ``step N`` (the newest *complete* checkpoint: where a rerun resumes),
        ``stage K done`` / ``stage K step N`` for a multi-stage run, or ``todo``."""
        state = "todo"
        if self.finished():
            return "done"
        for stage in self.stages():
            name = stage.root.name.replace("-", " ")
            checkpoint = latest_checkpoint(stage.checkpoints, clean=False)
            if stage.finished():
                state = f"{name} done"
            elif checkpoint is not None:
                state = f"{name} step {step_of(checkpoint)}"
        checkpoint = latest_checkpoint(self.checkpoints, clean=False)
        if checkpoint is not None:
            state = f"step {step_of(checkpoint)}"
        return state

    def has_checkpoints(self) -> bool:
        return bool(list_checkpoints(self.checkpoints))
