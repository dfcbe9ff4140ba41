"""Provenance of every output: the resolved config, its hash, versions, data ids, seeds.

An output folder carries ``provenance.json`` (:func:`write_provenance`); a run file carries
``<stem>.provenance.json`` beside it (:func:`write_run_provenance`, e.g. ``ce.trec`` ->
``ce.provenance.json``), which also records the run's size and SHA-256, so a run edited or
swapped afterwards no longer matches its record. Inputs are named with
:func:`file_fingerprint` (path, size, SHA-256) and models with :func:`model_fingerprint`.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import platform
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from irdistill.config import config_hash as hash_of
from irdistill.io import write_json
from irdistill.models.paths import BUNDLED_ALIASES, WEIGHT_FILES, resolve_model_path
from irdistill.utils import stable_hash

PACKAGES = ("irdistill", "torch", "transformers", "accelerate", "sentence-transformers",
            "ir_datasets", "ir_measures", "bm25s", "numpy")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def provenance_record(*, config: Any = None, config_hash: str | None = None,
                      **extra: Any) -> dict[str, Any]:
    """Date, command line, Python, platform and package versions, plus the given fields."""
    record = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": package_versions(),
    }
    if config is not None and config_hash is None:
        config_hash = hash_of(config)
    if config_hash is not None:
        record["config_hash"] = config_hash
    if config is not None:
        record["config"] = config
    record.update(extra)
    return record


def write_provenance(folder: str | Path, *, config: Any = None, config_hash: str | None = None,
                     **extra: Any) -> None:
    """``folder/provenance.json`` (written atomically)."""
    write_json(Path(folder) / "provenance.json",
               provenance_record(config=config, config_hash=config_hash, **extra))


def provenance_path(run_path: str | Path) -> Path:
    """``OUT/ce.trec`` -> ``OUT/ce.provenance.json``."""
    run_path = Path(run_path)
    return run_path.with_name(f"{run_path.stem}.provenance.json")


def write_run_provenance(run_path: str | Path, *, config: Any = None, **extra: Any) -> Path:
    """The provenance of a run file just written: ``extra`` (what produced it: model,
    collection, candidates, settings as ``config``, seeds) plus the run's own fingerprint."""
    run_path = Path(run_path)
    path = provenance_path(run_path)
    write_json(path, provenance_record(config=config, run=file_fingerprint(run_path), **extra))
    return path


def read_run_provenance(run_path: str | Path) -> dict[str, Any] | None:
    """The provenance record of a run, or None when it has none."""
    path = provenance_path(run_path)
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_fingerprint(path: str | Path, hash_limit: int = 1 << 30) -> dict[str, Any]:
    """Path, size and SHA-256 of an input or output file (no hash above ``hash_limit`` bytes:
    the time to read it would rival the work itself)."""
    path = Path(path)
    size = path.stat().st_size
    return {"path": str(path.resolve()), "bytes": size,
            "sha256": sha256_file(path) if size <= hash_limit else None}


def _model_folder(name_or_path: str) -> Path | None:
    """The local folder of a model name (the bundled MiniLM's aliases included), else None."""
    if name_or_path in BUNDLED_ALIASES:
        path = Path(resolve_model_path(name_or_path))
        return path if path.is_dir() else None
    path = Path(name_or_path)
    return path if path.is_dir() else None


def _weights_digest(path: Path) -> str:
    """SHA-256 of a file, or for a file above 1 GiB (shards of large models) of its size, first
    and last MiB: reading many GB would rival the work the fingerprint identifies."""
    size = path.stat().st_size
    if size <= 1 << 30:
        return sha256_file(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(1 << 20))
        handle.seek(size - (1 << 20))
        digest.update(handle.read(1 << 20))
    return digest.hexdigest()


def model_fingerprint(name_or_path: str) -> str:
    """Content hash of a model folder (config, settings, tokenizer, weights: single files or
    shards), or ``hub:<name>`` for a hub model that is not a local folder. The bundled 'minilm'
    resolves to its folder; a model kept in subfolders (SPLADE with separate query and
    document encoders) is hashed with them."""
    folder = _model_folder(name_or_path)
    if folder is None:
        return f"hub:{name_or_path}"
    names = ("config.json", "irdistill.json", "tokenizer.json", "vocab.txt", *WEIGHT_FILES)
    digest = hashlib.sha256()
    for base in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
        prefix = "" if base == folder else f"{base.name}/"
        files = [base / n for n in names if (base / n).is_file()]
        files += sorted(f for pattern in ("model-*-of-*.safetensors", "pytorch_model-*-of-*.bin")
                        for f in base.glob(pattern))
        for file in files:
            digest.update(f"{prefix}{file.name}".encode())
            digest.update(_weights_digest(file).encode())
    return digest.hexdigest()[:16]


def candidates_digest(candidates: Mapping[str, Sequence[str]]) -> str:
    """Hash of a candidate set: its query ids and each query's document ids, in order."""
    return stable_hash({q: list(candidates[q]) for q in candidates}, separators=(",", ":"))
