"""Leases on a grid's work, so that any number of workers (jobs of a cluster, or several
``irdistill experiment run`` processes started by hand) share one grid on a shared filesystem:
a piece of work (a cell, or the grid's shared evaluations) is done by one worker at a time,
never twice at once, and a dead worker's piece is taken over.

A claim is the file ``claim.json`` in the piece's folder, created with ``O_CREAT | O_EXCL`` (one
creator wins, on local filesystems and on NFS v3+). While the worker holds it, a thread touches
the file every ``lease / 4`` seconds; a claim whose file has not been touched for ``lease``
seconds is stale (its worker died or hangs), and another worker takes it over: it removes the
stale file and creates its own, under a lock named after the stale claim (so of several takers
one does). The new holder resumes the cell from its last complete checkpoint; the old holder,
if it was only stalled, sees at its next heartbeat that the claim is no longer its own, stops
touching it and marks itself ``lost`` (the grid then refuses to record its cell). Every piece a
worker starts on is appended to ``OUTPUT/claims.log`` (one JSON line: time, worker, piece,
whom it was taken over from), so one can check who did what.

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
    """The holder of ``folder``'s claim (None: unclaimed). A file being written, or left empty
    by a worker that died while writing it, reads as held by '?' and goes stale as any other."""
    path = Path(folder) / CLAIM
    try:
        age = time.time() - path.stat().st_mtime
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:  # released
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = {}
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

    def __init__(self, folder: Path, worker: str, lease: float, log_file: Path | None = None,
                 name: str | None = None, taken_over_from: str | None = None):
        self.folder, self.worker, self.lease = Path(folder), worker, lease
        self.path = self.folder / CLAIM
        self.log_file = log_file
        self.name = name or self.folder.name  # the piece, in claims.log
        self.taken_over_from = taken_over_from
        self._stop = threading.Event()
        self.lost = False  # another worker took the claim over (this one stalled too long)
        self._thread = threading.Thread(target=self._beat, daemon=True,
                                        name=f"claim {self.folder.name}")

    def _beat(self) -> None:
        while not self._stop.wait(max(self.lease / 4, 0.05)):
            current = holder(self.folder)
            if current is None or current.worker != self.worker:
                self.lost = True  # never touch another worker's claim
                log.error("the claim of %s was taken over by %s: this worker stalled for "
                          "longer than its lease", self.folder,
                          current.worker if current else "nobody")
                return
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
        # of several workers taking over one stale claim, the one that creates its lock does
        # (the lock is named after the stale claim, so a later claim gets a lock of its own)
        stale_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{current.worker} {current.since!r}").hex
        lock = folder / f".{CLAIM}.takeover-{stale_id[:12]}"
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            return None
        try:
            again = holder(folder)
            if again is None or (again.worker, again.since) != (current.worker, current.since):
                return None  # taken over meanwhile, or released
            os.unlink(path)
            if not _create(path, worker):
                return None
        finally:
            lock.unlink(missing_ok=True)
        taken_over = current.worker
        log.warning("took over %s from %s (no heartbeat for %.0f s)", folder, current.worker,
                    current.age)
    return Claim(folder, worker, lease, Path(log_file) if log_file else None, name,
                 taken_over).start()


def log_claim(claim: Claim) -> None:
    """Append the claim to the grid's ``claims.log`` (when the worker starts on its piece)."""
    if claim.log_file is not None:
        with open(claim.log_file, "a", encoding="utf-8") as handle:  # a short line: one write
            handle.write(json.dumps({"time": round(time.time(), 3), "worker": claim.worker,
                                     "piece": claim.name,
                                     "taken_over_from": claim.taken_over_from}) + "\n")


def read_claims_log(output: str | Path) -> list[dict]:
    """Every claim taken on a grid (``OUTPUT/claims.log``), oldest first."""
    path = Path(output) / CLAIMS_LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
