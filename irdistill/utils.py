"""Small shared helpers: cache folder, seeding, device choice, logging set-up."""
from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np
import torch


def cache_dir() -> Path:
    """Where indexes and tokenised corpora are cached (``IRDISTILL_CACHE`` or ~/.cache/irdistill)."""
    path = Path(os.environ.get("IRDISTILL_CACHE", Path.home() / ".cache" / "irdistill"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_device() -> str:
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
