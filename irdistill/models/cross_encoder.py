"""The cross-encoder: a plain Hugging Face ``AutoModelForSequenceClassification`` with one output.

Saved models are ordinary Hugging Face checkpoints (config, weights, tokenizer) plus a small
``irdistill.json`` with the query/document lengths, so sentence-transformers' ``CrossEncoder``,
PyTerrier or rerankers load them as they are.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import transformers
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from irdistill.errors import IrdistillError, suggest
from irdistill.io import write_json
from irdistill.models import backbones, cls_only
from irdistill.models.model_card import EVALUATION_FILE, write_model_card
from irdistill.models.onnx import OnnxRunner, export_onnx
from irdistill.models.paths import BUNDLED_ALIASES, resolve_model_path
from irdistill.models.runtime import (DEFAULT_MAX_TOKENS, autocast_context, budget_for,
                                      check_device, check_precision, plan_batches,
                                      resolve_precision)
from irdistill.models.tokenization import PairEncoder
from irdistill.utils import default_device

log = logging.getLogger(__name__)

SETTINGS_FILE = "irdistill.json"


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


class CrossEncoder:
    """Scores (query, document) pairs with a sequence-classification model with one output."""

    def __init__(self, model, tokenizer, max_query_length: int = 64, max_doc_length: int = 256,
                 device: str | torch.device | None = None, precision: str | None = None,
                 truncation: str = "segments"):
        """``truncation``: ``segments`` (query and document cut to their own lengths) or
        ``pair`` (the pair cut to their sum, longest first, as sentence-transformers does); see
        :mod:`irdistill.models.tokenization`."""
        self.model = model
        self.tokenizer = tokenizer
        check_precision(precision)
        self.device = check_device(device or default_device())
        self.precision = resolve_precision(self.device, precision)
        self.model.to(self.device)
        if self.precision in ("bf16-full", "fp16-full"):  # inference weights in half precision
            self.model.to({"bf16-full": torch.bfloat16, "fp16-full": torch.float16}[
                self.precision])
        self.runner = None  # ONNX Runtime or a compiled model (use_onnx, use_compile)
        self.backend = "torch"  # what scores: torch, compile or onnx
        self.encoder = PairEncoder(tokenizer, max_query_length, max_doc_length,
                                   max_positions=backbones.max_input_length(model, tokenizer),
                                   use_token_types=backbones.uses_token_types(model, tokenizer),
                                   pad_id=backbones.padding_id(model, tokenizer),
                                   truncation=truncation)
        self.base_model = getattr(model.config, "_name_or_path", None) or None
        self.card: dict | None = None  # training record for the model card (see model_card)
        self.evaluation: dict = {}  # figures recorded since (evaluation.json, see model_card)

    @property
    def max_query_length(self) -> int:
        return self.encoder.max_query_length

    @property
    def max_doc_length(self) -> int:
        return self.encoder.max_doc_length

    @property
    def truncation(self) -> str:
        return self.encoder.truncation

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, max_query_length: int | None = None,
                        max_doc_length: int | None = None, device: str | None = None,
                        precision: str | None = None, num_hidden_layers: int | None = None,
                        truncation: str | None = None,
                        attn_implementation: str | None = None, attn_device: str | None = None,
                        cls_only_last_layer: bool = True, **model_kwargs) -> CrossEncoder:
        """Load a hub name, a local folder, or the bundled MiniLM (``"minilm"``).

        ``num_hidden_layers`` keeps only the first layers (a smaller student). Lengths and
        ``truncation`` not given are the saved model's (``irdistill.json``), else 64 and 256
        tokens and ``segments``. A checkpoint
        without a classification head (an encoder or sentence-embedding model) gets a new
        randomly initialised one-output head. ``attn_implementation``: ``sdpa`` (default),
        ``eager``, ``flash_attention_2`` or ``auto`` (see
        :func:`irdistill.models.backbones.resolve_attn_implementation`), chosen for the device
        the model will run on: ``attn_device``, else ``device``, else the best available.
        ``cls_only_last_layer``: compute the last layer for the [CLS] row only where that is
        exact (:mod:`irdistill.models.cls_only`; BERT, RoBERTa, ELECTRA).
        """

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
        if "tokenizer_max_length" in settings:  # saved here: its own limit, not the pair's
            tokenizer.model_max_length = settings["tokenizer_max_length"] or int(1e30)
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
        if cls_only_last_layer:
            cls_only.enable(model)  # checked on a probe batch; a family it does not fit is kept
        saved = settings.get("truncation", "segments")
        if truncation is not None and truncation != saved and settings:
            log.warning("%s was trained with truncation=%s; loaded with truncation=%s",
                        name_or_path, saved, truncation)
        ce = cls(model, tokenizer,
                 max_query_length or settings.get("max_query_length", 64),
                 max_doc_length or settings.get("max_doc_length", 256),
                 device=device, precision=precision,
                 truncation=truncation or settings.get("truncation", "segments"))
        # a model trained here names the checkpoint it started from; others are their own base
        ce.base_model = settings.get("base_model") or name_or_path
        ce.card = settings.get("card")
        figures = Path(path) / EVALUATION_FILE
        ce.evaluation = json.loads(figures.read_text(encoding="utf-8")) if figures.is_file() else {}
        return ce

    def save_pretrained(self, directory: str | Path, card: dict | None = None) -> None:
        """Write a plain Hugging Face checkpoint that other libraries load as it is, with a
        model card (README.md). ``card``: what training produced the model (see
        :func:`irdistill.models.model_card.render_card`); kept in ``irdistill.json`` so the card
        can be rewritten later, e.g. with evaluation figures."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # sentence-transformers applies no activation on top of the raw score
        self.model.config.sentence_transformers = {
            "activation_fn": "torch.nn.modules.linear.Identity"}
        self.model.save_pretrained(directory)
        # the tokenizer's own max length is the pair's, so that sentence-transformers (and any
        # tool that lets the tokenizer truncate) cuts pairs to it: as irdistill does in ``pair``
        # truncation, closest to it in ``segments``
        kept = self.tokenizer.model_max_length
        self.tokenizer.model_max_length = self.encoder.max_model_length
        try:
            self.tokenizer.save_pretrained(directory)
        finally:
            self.tokenizer.model_max_length = kept
        if card is not None:  # a new training: the figures of the model it started from go
            self.card, self.evaluation = card, {}
        elif self.card is not None:  # a trained model saved again: its card names the new folder
            self.card = {**self.card, "name": str(directory)}
        settings = {"max_query_length": self.max_query_length,
                    "max_doc_length": self.max_doc_length,
                    "truncation": self.truncation,
                    # the tokenizer's own limit, given back on loading (the saved one is the
                    # pair's): longer lengths stay possible later where the model takes them
                    "tokenizer_max_length": kept if kept < 1_000_000 else None,
                    "base_model": self.base_model,
                    "card": self.card}
        write_json(directory / SETTINGS_FILE, settings)
        if self.evaluation:  # figures recorded after training travel with the weights
            write_json(directory / EVALUATION_FILE, self.evaluation)
        write_model_card(directory)

    # -- inference -------------------------------------------------------------------------
    def score_ids(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], batch_size: int = 64,
                  max_tokens: int | str | None = DEFAULT_MAX_TOKENS, show_progress: bool = False
                  ) -> list[float]:
        """Score pre-tokenised pairs (lists or arrays of token ids).

        Pairs are sorted by length, longest first (stable, so ties keep their order), and cut
        into batches of at most ``batch_size`` pairs and at most ``max_tokens`` padded tokens
        (None: no token budget; "auto": a budget for the device, see :func:`budget_for`); each
        batch is padded only to its longest pair (rounded up to a multiple of 8). Scores come back in the order of ``pairs`` and do not depend on it.
        """
        n = len(pairs)
        if n == 0:
            return []
        lengths = self.encoder.pair_lengths(
            np.fromiter((len(q) for q, _ in pairs), dtype=np.int64, count=n),
            np.fromiter((len(d) for _, d in pairs), dtype=np.int64, count=n))
        order = np.argsort(-lengths, kind="stable")
        spans = plan_batches(lengths[order], batch_size, budget_for(self.device, max_tokens),
                             self.encoder.padded_width)
        scores = np.empty(n, dtype=np.float32)
        self.model.eval()
        bar = tqdm(total=n, desc="scoring", unit="pair", disable=not show_progress)
        with torch.inference_mode(), autocast_context(self.device, self.precision):
            for start, end in spans:
                chunk = order[start:end]
                scores[chunk] = self.forward_batch(self.encoder.collate([pairs[i] for i in chunk]))
                bar.update(end - start)
        bar.close()
        return scores.tolist()

    def forward_batch(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        """One float32 score per row of a collated batch (PyTorch, or ONNX Runtime after
        :meth:`use_onnx`, or the compiled model after :meth:`use_compile`)."""
        if self.runner is not None:
            return self.runner(batch)
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        return self.model(**batch).logits[:, 0].float().cpu().numpy()

    def _check_no_backend(self) -> None:
        if self.runner is not None:
            raise IrdistillError("this model already scores through another backend "
                                 "(torch.compile or ONNX Runtime)",
                                 hint="load the model again to choose another backend")

    def use_compile(self, backend: str = "inductor", mode: str | None = None) -> None:
        """Score with a ``torch.compile``'d model from now on (``dynamic=True``: batches of other
        sizes and lengths reuse the compiled graph; a few shapes, such as a single pair, still
        compile their own). Fuses the
        element-wise work around the matrix products (GELU, bias, LayerNorm, softmax), and on a
        CPU freezes the weights (folded as constants, packed for oneDNN); the
        first batch pays the compilation (tens of seconds on a CPU), so it is worth it for long
        re-rankings. Scores equal the eager model's up to float rounding."""
        self._check_no_backend()
        options = None
        if backend == "inductor" and mode is None and self.device.type == "cpu":
            # weights become constants: inductor folds them and packs the linear layers' weights
            # for oneDNN (see docs/performance.md for what it gave); the model is only scored,
            # never trained, here
            options = {"freezing": True}
        compiled = torch.compile(self.model, dynamic=True, backend=backend, mode=mode,
                                 options=options)

        def run(batch: dict[str, torch.Tensor]) -> np.ndarray:
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            return compiled(**batch).logits[:, 0].float().cpu().numpy()

        self.runner = run
        self.backend = "compile"

    def use_onnx(self, folder: str | Path | None = None, optimize: bool = True,
                 quantize: str | None = None) -> Path:
        """Score with ONNX Runtime from now on: export the model to ONNX (once; cached by the
        weights' content under ``folder``, default the irdistill cache) and open a session.
        Scores match PyTorch's fp32 scores to about 1e-5; with ``quantize="int8"`` (backend
        ``onnx-int8``) the weights are int8 and scores move, rankings a little
        (:mod:`irdistill.models.onnx`). Returns the ONNX file."""
        if self.precision is not None:
            raise IrdistillError(f"the ONNX backend runs in fp32, not {self.precision}",
                                 hint="leave precision unset (fp32) with the ONNX backend")
        self._check_no_backend()
        path = export_onnx(self.model, self.encoder, folder, optimize=optimize,
                           quantize=quantize)
        self.runner = OnnxRunner(path, self.device)
        self.backend = "onnx" if quantize is None else f"onnx-{quantize}"
        return path

    def score(self, pairs: Sequence[tuple[str, str]], batch_size: int = 64,
              show_progress: bool = False, max_tokens: int | str | None = DEFAULT_MAX_TOKENS
              ) -> list[float]:
        """One float per (query, document) pair, higher = more relevant."""
        if not pairs:
            return []
        queries = list(dict.fromkeys(q for q, _ in pairs))
        docs = list(dict.fromkeys(d for _, d in pairs))
        q_ids = dict(zip(queries, self.encoder.encode_queries(queries)))
        d_ids = dict(zip(docs, self.encoder.encode_docs(docs)))
        return self.score_ids([(q_ids[q], d_ids[d]) for q, d in pairs], batch_size=batch_size,
                              max_tokens=max_tokens, show_progress=show_progress)

    def rerank(self, query: str, documents: Sequence[str], batch_size: int = 64,
               top_k: int | None = None) -> list[tuple[int, float]]:
        """(index into ``documents``, score) best first."""
        scores = self.score([(query, d) for d in documents], batch_size=batch_size)
        order = sorted(range(len(documents)), key=lambda i: -scores[i])
        return [(i, scores[i]) for i in order[:top_k]]
