"""Small shared helpers: cache folder, seeding, device choice, logging set-up, settings hashes."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    """Where indexes and tokenised corpora are cached (``IRDISTILL_CACHE`` or ~/.cache/irdistill)."""
    path = Path(os.environ.get("IRDISTILL_CACHE", Path.home() / ".cache" / "irdistill"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def stable_hash(obj: Any, length: int = 16, algorithm: str = "sha256",
                separators: tuple[str, str] | None = None) -> str:
    """The first ``length`` hex digits of the hash of ``obj``'s canonical JSON (sorted keys;
    other objects as ``str``): the one way irdistill names settings (configs, caches, cells,
    score files). Each caller keeps the length and algorithm it always had, so folders and
    caches made before keep their names."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=separators)
    return hashlib.new(algorithm, blob.encode()).hexdigest()[:length]


def seed_everything(seed: int) -> None:
    # the config and the CLI import this module at their start: torch loads only when used
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_device() -> str:
    import torch  # as above

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("bm25s", "transformers", "sentence_transformers", "urllib3", "httpx",
                  "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet_ir_datasets(logging.DEBUG if verbose else logging.WARNING)


def quiet_ir_datasets(level: int = logging.WARNING) -> None:
    """ir_datasets gives each of its loggers level INFO on creation; lower its chatter."""
    try:
        # ir_datasets takes a second to import: not at the CLI's start, which sets up logging
        from ir_datasets import log as irds_log
    except ImportError:
        return
    if getattr(irds_log.Logger, "_irdistill_level", None) is None:
        original = irds_log.Logger.logger

        def logger(self):
            created = original(self)
            created.setLevel(irds_log.Logger._irdistill_level)
            return created

        irds_log.Logger.logger = logger
    irds_log.Logger._irdistill_level = level
