"""The teacher store: each teacher's scores of a candidate set, kept as a TREC run.

A teacher's run is named by what produced it: ``<name>-<hash>.trec`` under ``OUT/teachers/``,
where the hash covers the model's files (config and weights, by content), the candidate set
(query ids and document ids) and every setting that changes a score (lengths, precision). A new
ensemble of teachers already scored on the same candidates reads their runs and scores nothing
(also when a teacher is given another name);
a teacher changed in any of those respects gets a new file. Scoring in progress is kept in
``<name>-<hash>.partial.jsonl`` (the checkpoint of :func:`irdistill.rerank.scoring.rerank_run`)
until the run is complete.

Every run written here (a teacher's, an ensemble's, an LLM's, an imported one) has a provenance
file beside it, ``<stem>.provenance.json`` (:func:`irdistill.provenance.write_run_provenance`):
what produced it, from which source, with which settings and package versions.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from irdistill.utils import stable_hash

Candidates = dict[str, list[str]]


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe short form of ``text`` (letters, digits, ``.``, ``_``, ``-``)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "teacher"
    return cleaned[-limit:].lstrip("-.") or "teacher"


def default_teacher_name(source: str) -> str:
    """A readable name for a model folder or hub name: the folder's name, or its parent's when
    the folder is a training output's ``model`` (``runs/teacher-a/model`` -> ``teacher-a``)."""
    path = Path(source)
    parts = [p for p in path.parts if p not in ("/", ".", "..")]
    if not parts:
        return "teacher"
    name = parts[-1]
    if name in ("model", "checkpoint", "final") and len(parts) > 1:
        name = parts[-2]
    return slug(name)


def settings_hash(**settings: Any) -> str:
    return stable_hash(settings, length=10, algorithm="sha1")


class TeacherStore:
    """Runs of teachers under ``folder/teachers``, named ``<name>-<hash>.trec``."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder) / "teachers"

    def key(self, name: str, **identity: Any) -> str:
        return f"{slug(name)}-{settings_hash(**identity)}"

    def run_path(self, key: str) -> Path:
        return self.folder / f"{key}.trec"

    def checkpoint_path(self, key: str) -> Path:
        return self.folder / f"{key}.partial.jsonl"

    def find(self, key: str) -> Path | None:
        """The stored run of ``key``, or of the same hash under another teacher name."""
        if self.run_path(key).exists():
            return self.run_path(key)
        digest = key.rsplit("-", 1)[-1]
        found = sorted(self.folder.glob(f"*-{digest}.trec")) if self.folder.is_dir() else []
        return found[0] if found else None
