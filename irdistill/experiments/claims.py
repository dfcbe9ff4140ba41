"""Leases on a grid's work, so that any number of workers (jobs of a cluster, or several
``irdistill experiment run`` processes started by hand) share one grid on a shared filesystem:
a piece of work (a cell, or the grid's shared evaluations) is done by one worker at a time,
never twice at once, and a dead worker's piece is taken over.

A claim is the file ``claim.json`` in the piece's folder, created with ``O_CREAT | O_EXCL`` (one
creator wins, on local filesystems and on NFS v3+). While the worker holds it, a thread touches
the file every ``lease / 4`` seconds; a claim whose file has not been touched for ``lease``
seconds is stale (its worker died or hangs), and another worker takes it over: it renames the
stale file away (one renamer wins) and creates its own. The new holder resumes the cell from its
last complete checkpoint. Every claim taken is appended to ``OUTPUT/claims.log`` (one JSON line:
time, worker, piece, whether it was taken over), so one can check who did what.

Choose the lease longer than the longest pause of a live worker's filesystem (default 300 s):
a worker paused for longer than its lease (a frozen node) could find its cell taken over.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CLAIM = "claim.json"
CLAIMS_LOG = "claims.log"
DEFAULT_LEASE = 300.0


def worker_id() -> str:
    """A name for this process that no other worker has: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class Holder:
    """Who holds a claim, as its file says."""

    worker: str
    since: float
    age: float  # seconds since the file was last touched

    def describe(self, lease: float) -> str:
        state = "stale" if self.age > lease else "alive"
        return f"{self.worker} ({state}, heartbeat {self.age:.0f} s ago)"


def holder(folder: Path) -> Holder | None:
    """The holder of ``folder``'s claim (None: unclaimed)."""
    path = Path(folder) / CLAIM
    try:
        age = time.time() - path.stat().st_mtime
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):  # released, or being written
        return None
    return Holder(str(data.get("worker", "?")), float(data.get("since", 0.0)), max(age, 0.0))


def _create(path: Path, worker: str) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"worker": worker, "since": time.time(), "pid": os.getpid(),
                   "host": socket.gethostname()}, handle)
    return True


class Claim:
    """A held claim: its heartbeat runs until :meth:`release` (or the ``with`` block ends)."""

    def __init__(self, folder: Path, worker: str, lease: float, log_file: Path | None):
        self.folder, self.worker, self.lease = Path(folder), worker, lease
        self.path = self.folder / CLAIM
        self.log_file = log_file
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True,
                                        name=f"claim {self.folder.name}")

    def _beat(self) -> None:
        while not self._stop.wait(max(self.lease / 4, 0.05)):
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.path)

    def start(self) -> Claim:
        self._thread.start()
        return self

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        if (h := holder(self.folder)) is not None and h.worker == self.worker:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def try_claim(folder: str | Path, worker: str, lease: float = DEFAULT_LEASE,
              log_file: str | Path | None = None, name: str | None = None) -> Claim | None:
    """Claim ``folder``'s work for ``worker``: a :class:`Claim` (heartbeat running), or None
    when a live worker holds it. A stale claim is taken over."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CLAIM
    taken_over = None
    if not _create(path, worker):
        current = holder(folder)
        if current is not None and current.worker == worker:
            return None  # held by this worker already (a nested call): not a second claim
        if current is None or current.age <= lease:
            return None
        stale = folder / f".{CLAIM}.stale-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(path, stale)  # of several workers taking over, one renames the file
        except FileNotFoundError:
            return None
        stale.unlink(missing_ok=True)
        if not _create(path, worker):
            return None
        taken_over = current.worker
        log.warning("took over %s from %s (no heartbeat for %.0f s)", folder, current.worker,
                    current.age)
    if log_file is not None:
        with open(log_file, "a", encoding="utf-8") as handle:  # one short line: atomic append
            handle.write(json.dumps({"time": round(time.time(), 3), "worker": worker,
                                     "piece": name or folder.name,
                                     "taken_over_from": taken_over}) + "\n")
    return Claim(folder, worker, lease, Path(log_file) if log_file else None).start()


def read_claims_log(output: str | Path) -> list[dict]:
    """Every claim taken on a grid (``OUTPUT/claims.log``), oldest first."""
    path = Path(output) / CLAIMS_LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
