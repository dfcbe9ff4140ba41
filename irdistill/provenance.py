"""Provenance of an output folder: the resolved config, its hash, versions, data ids, seeds."""
from __future__ import annotations

import datetime
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from irdistill.io import write_json

PACKAGES = ("irdistill", "torch", "transformers", "accelerate", "ir_datasets", "ir_measures",
            "bm25s", "numpy")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def write_provenance(folder: str | Path, *, config: Any = None, config_hash: str | None = None,
                     **extra: Any) -> None:
    record = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": package_versions(),
    }
    if config_hash is not None:
        record["config_hash"] = config_hash
    if config is not None:
        record["config"] = config
    record.update(extra)
    write_json(Path(folder) / "provenance.json", record)
