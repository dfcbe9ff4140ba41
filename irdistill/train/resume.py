"""Resuming an interrupted training run safely.

The Hugging Face Trainer writes ``checkpoint-N`` in place, file after file (weights, optimizer,
scheduler, RNG states, and ``trainer_state.json`` last), and deletes older checkpoints after a
new one is written. A run killed at any moment can therefore leave a half-written newest
checkpoint or a half-deleted older one. :func:`latest_checkpoint` returns the newest checkpoint
whose every file is there (``trainer_state.json`` last written, so its presence and a matching
``global_step`` say the rest is complete) and removes the incomplete ones, so the Trainer never
loads a torn file and never mixes a stale file into a checkpoint it writes again.

:func:`check_resume_config` refuses to continue checkpoints made by a different config in the
same folder, and :func:`trim_log` drops the log lines of steps that will be trained again.

Any trainer built on the HF Trainer (cross-encoders here, SPLADE) should call, before
``trainer.train(resume_from_checkpoint=...)``::

    check_resume_config(output_dir, config_hash(config))   # before writing config/provenance
    resume = latest_checkpoint(output_dir / "checkpoints")
    trim_log(output_dir / "train_log.jsonl", step_of(resume) if resume else 0)
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from irdistill.errors import IrdistillError
from irdistill.io import atomic_write

log = logging.getLogger(__name__)

PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"
#: each entry is satisfied by any one of its names (weights: safetensors or bin, sharded or not)
REQUIRED = (("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
             "pytorch_model.bin.index.json", "adapter_model.safetensors", "adapter_model.bin"),
            ("optimizer.pt", "optimizer.bin"),
            ("scheduler.pt",),
            ("rng_state.pth", "rng_state_0.pth"))


def step_of(checkpoint: str | Path) -> int:
    return int(Path(checkpoint).name.removeprefix(PREFIX))


def list_checkpoints(folder: str | Path) -> list[Path]:
    """``checkpoint-N`` folders of ``folder``, oldest first (other names are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir()
             if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=step_of)


def incomplete_reason(checkpoint: str | Path, required=REQUIRED) -> str | None:
    """Why ``checkpoint`` cannot be resumed from, or None if it is complete."""
    checkpoint = Path(checkpoint)
    state = checkpoint / STATE_FILE
    if not state.is_file():
        return f"no {STATE_FILE} (the save was interrupted)"
    try:
        step = json.loads(state.read_text(encoding="utf-8"))["global_step"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return f"{STATE_FILE} is incomplete"
    if step != step_of(checkpoint):
        return f"{STATE_FILE} says step {step}"
    for names in required:
        if not any((checkpoint / name).is_file() for name in names):
            return f"{names[0]} is missing"
    return None


def latest_checkpoint(folder: str | Path, required=REQUIRED, clean: bool = True) -> Path | None:
    """The newest complete checkpoint under ``folder`` (None if there is none).

    Incomplete checkpoints (a save or a deletion cut by a kill) are logged and, with ``clean``,
    deleted: the Trainer would otherwise write the same step's checkpoint over leftovers.
    """
    best = None
    for checkpoint in reversed(list_checkpoints(folder)):
        reason = incomplete_reason(checkpoint, required)
        if reason is None:
            best = best or checkpoint
            continue
        log.warning("ignoring incomplete checkpoint %s: %s", checkpoint, reason)
        if clean:
            shutil.rmtree(checkpoint, ignore_errors=True)
    return best


def check_resume_config(output_dir: str | Path, digest: str,
                        provenance: str = "provenance.json",
                        finished_marker: str = "model/config.json") -> None:
    """Raise if ``output_dir`` holds checkpoints or a finished model made by another config
    than ``digest``.

    Continuing them would mix two configs in one model while the folder's provenance names only
    the second; returning the finished model would pass it off as the new config's. A folder
    without checkpoints or model may be reused freely. ``finished_marker`` is the file whose
    presence says the model was saved (a SPLADE model: ``model/irdistill.json``).
    """
    output_dir = Path(output_dir)
    finished = (output_dir / finished_marker).exists()
    if not finished and not list_checkpoints(output_dir / "checkpoints"):
        return
    record = output_dir / provenance
    try:
        previous = json.loads(record.read_text(encoding="utf-8")).get("config_hash")
    except (OSError, ValueError):
        return  # no record to compare with (written by an older version)
    if previous and previous != digest:
        what = "finished model in this folder was" if finished else \
            "checkpoints in this folder were"
        raise IrdistillError(
            f"the {what} made by another config (hash {previous}; this one is {digest})",
            path=output_dir,
            hint="train into a new --output folder, or run the same config again to resume; "
                 "compare with its config.yaml")


def trim_log(path: str | Path, step: int) -> None:
    """Keep the lines of a JSONL training log up to ``step`` (the checkpoint resumed from).

    Steps after the checkpoint are trained again and logged again; a line cut by the kill is
    dropped. The log is rewritten atomically.
    """
    path = Path(path)
    if not path.exists():
        return
    kept, dropped = [], 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or int(record.get("step", 0)) > step:
                    raise ValueError
            except (ValueError, TypeError):
                dropped += 1
                continue
            kept.append(line if line.endswith("\n") else line + "\n")
    if dropped:
        log.info("%s: dropped %d line(s) after step %d (trained again)", path, dropped, step)
        with atomic_write(path) as handle:
            handle.writelines(kept)
