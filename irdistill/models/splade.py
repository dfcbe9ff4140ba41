"""SPLADE: a masked-LM backbone whose token logits are pooled into one sparse vocabulary vector.

A text is encoded as ``w_j = max_t log(1 + ReLU(logit_tj))`` over its non-padding tokens ``t``
(SPLADE-max, Formal et al. 2021, arXiv 2109.10086), and a document's score for a query is the
dot product of their vectors. The backbone is a plain Hugging Face ``AutoModelForMaskedLM``;
queries and documents use one shared encoder or two separate ones.

Saved models are ordinary Hugging Face checkpoints plus the few JSON files with which
sentence-transformers' ``SparseEncoder`` loads them as they are (``MLMTransformer`` followed by
``SpladePooling`` with max pooling, the layout of the published SPLADE models):

shared encoder::

    config.json, model.safetensors, tokenizer files      the masked LM (AutoModelForMaskedLM)
    modules.json, sentence_bert_config.json,
    1_SpladePooling/config.json,
    config_sentence_transformers.json                    for SparseEncoder
    irdistill.json                                       query/document lengths

separate encoders: the same masked-LM folders as ``query_0_MLMTransformer/`` and
``document_0_MLMTransformer/`` behind a sentence-transformers ``Router`` (``router_config.json``),
so ``SparseEncoder.encode_query`` and ``encode_document`` each use their own encoder.

A checkpoint without an MLM head (a sentence-embedding model such as the bundled MiniLM) gets
one built from its word embeddings: the output projection is tied to the input embeddings, the
head's transform starts as the identity, and the vocabulary bias starts negative so that about
1% of the vocabulary is active (a dense start would make the first index enormous).
"""
from __future__ import annotations

import copy
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import transformers
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModelForMaskedLM, AutoTokenizer

from irdistill.errors import IrdistillError
from irdistill.io import write_json
from irdistill.models.paths import resolve_model_path
from irdistill.models.runtime import autocast_context, resolve_precision
from irdistill.utils import default_device

log = logging.getLogger(__name__)

SETTINGS_FILE = "irdistill.json"
QUERY_FOLDER = "query_0_MLMTransformer"
DOC_FOLDER = "document_0_MLMTransformer"

# A few plain sentences on which a new MLM head's vocabulary bias is calibrated.
_PROBE_TEXTS = (
    "The cell is the basic unit of life and all organisms are made of cells.",
    "What are the effects of the new tax law on small businesses in rural areas?",
    "Wind tunnel measurements of the boundary layer on a flat plate at high speed.",
    "She walked to the station in the rain and missed the last train home.",
)
_INITIAL_ACTIVE_FRACTION = 0.01


# -- pure functions: pooling and regularisers -------------------------------------------------
def splade_pool(logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """SPLADE-max pooling ``[B, T, V] -> [B, V]``: ``max_t log(1 + ReLU(logits))`` over real tokens.

    ``log(1 + ReLU(x))`` is monotone, so the maximum is taken over the logits first and the
    activation applied to ``[B, V]`` only: the same values (and gradients) with far less memory.
    ``max`` with indices (not ``amax``) keeps the backward pass a cheap scatter.
    """
    mask = attention_mask.to(torch.bool).unsqueeze(-1)
    masked = logits.masked_fill(~mask, float("-inf"))
    pooled = masked.max(dim=1).values
    pooled = torch.nan_to_num(pooled, neginf=0.0)  # a text without real tokens scores nothing
    return torch.log1p(torch.relu(pooled))


def regularizer_weight(weight: float, step: int, warmup_steps: int) -> float:
    """Quadratic warm-up of a regulariser's weight (SPLADE, Formal et al. 2021):
    ``weight * min(1, step / warmup_steps) ** 2``; the full weight at once when warm-up is 0."""
    if warmup_steps <= 0:
        return weight
    return weight * min(1.0, step / warmup_steps) ** 2


# -- the backbone ------------------------------------------------------------------------------
def _head_modules(model) -> list[tuple[str, nn.Module]]:
    prefix = model.base_model_prefix
    return [(n, m) for n, m in model.named_children() if n != prefix]


@torch.no_grad()
def _init_mlm_head(model, tokenizer, missing: set[str], name: str) -> None:
    """Give a masked LM whose head was not in the checkpoint a head built from its embeddings."""
    embeddings = model.get_input_embeddings().weight
    vocab = embeddings.shape[0]
    vocab_biases = []
    for head_name, head in _head_modules(model):
        for mod_name, module in head.named_modules():
            full = f"{head_name}.{mod_name}" if mod_name else head_name
            if isinstance(module, nn.Linear) and f"{full}.weight" in missing:
                if module.weight.shape[0] == module.weight.shape[1]:
                    module.weight.copy_(torch.eye(module.weight.shape[0]))
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.LayerNorm):
                if module.weight is not None and f"{full}.weight" in missing:
                    module.weight.fill_(1.0)
                if module.bias is not None and f"{full}.bias" in missing:
                    module.bias.zero_()
        for pname, param in head.named_parameters():
            if f"{head_name}.{pname}" not in missing:
                continue
            if param.dim() == 1 and param.shape[0] == vocab:
                param.zero_()
                vocab_biases.append(param)
            elif param.shape == embeddings.shape:  # an untied output projection
                param.copy_(embeddings)
    # calibrate the vocabulary bias: about 1% of the terms active on plain text
    model.eval()
    batch = tokenizer(list(_PROBE_TEXTS), padding=True, truncation=True, max_length=64,
                      return_tensors="pt")
    batch = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask",
                                                      "token_type_ids")}
    logits = model(**batch).logits
    mask = batch["attention_mask"].bool().unsqueeze(-1)
    pooled = logits.masked_fill(~mask, float("-inf")).amax(dim=1).float()
    offset = float(torch.quantile(pooled.flatten(), 1 - _INITIAL_ACTIVE_FRACTION))
    for param in vocab_biases:
        param.fill_(-offset)
    log.warning("'%s' has no MLM head: one was initialised from the tied word embeddings "
                "(identity transform, vocabulary bias %.2f so that about %d%% of the terms start "
                "active); SPLADE training learns it", name, -offset,
                round(100 * _INITIAL_ACTIVE_FRACTION))


def load_masked_lm(name_or_path: str, **model_kwargs):
    """``(model, tokenizer)`` of a masked LM; a checkpoint without MLM head gets one (see module
    docstring)."""
    path = resolve_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # we report the missing head ourselves
        try:
            model, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True,
                                                               **model_kwargs)
        finally:
            transformers.logging.set_verbosity(verbosity)
    except (OSError, ValueError) as exc:
        raise IrdistillError(f"cannot load '{name_or_path}' as a masked language model: "
                             f"{str(exc).splitlines()[0]}",
                             hint="give a BERT-like checkpoint folder or the bundled 'minilm'"
                             ) from None
    prefix = model.base_model_prefix + "."
    missing = {k for k in info.get("missing_keys", ()) if not k.startswith(prefix)}
    if missing:
        _init_mlm_head(model, tokenizer, missing, name_or_path)
    return model, tokenizer


class SpladeEncoders(nn.Module):
    """The trainable module: a document encoder and a query encoder (the same one when shared)."""

    def __init__(self, doc: nn.Module, query: nn.Module | None = None):
        super().__init__()
        self.doc = doc
        self.query = query if query is not None else doc

    @property
    def shared(self) -> bool:
        return self.query is self.doc

    def encode(self, batch: dict[str, torch.Tensor], side: str = "doc") -> torch.Tensor:
        model = self.query if side == "query" else self.doc
        logits = model(**batch).logits
        return splade_pool(logits, batch["attention_mask"])

    def forward(self, side: str = "doc", **batch) -> torch.Tensor:
        return self.encode(batch, side)


def _pad(rows: Sequence[Sequence[int]], pad_id: int, multiple: int = 8,
         token_types: bool = False) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    width = (width + multiple - 1) // multiple * multiple
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if token_types:
        batch["token_type_ids"] = torch.zeros_like(ids)
    return batch


class Splade:
    """Encode queries and documents into sparse vocabulary vectors (scipy CSR, float32)."""

    def __init__(self, doc_model, tokenizer, query_model=None, max_query_length: int = 32,
                 max_doc_length: int = 256, device: str | torch.device | None = None,
                 precision: str | None = None):
        self.encoders = SpladeEncoders(doc_model, query_model)
        self.tokenizer = tokenizer
        self.max_query_length = max_query_length
        self.max_doc_length = max_doc_length
        self.device = torch.device(device or default_device())
        if precision is not None and precision.endswith("-full"):
            raise IrdistillError(f"precision '{precision}' is a cross-encoder's (cast weights)",
                                 hint="SPLADE takes fp32, bf16, fp16 (autocast) or auto")
        # an unknown name fails here; auto becomes what it means on this device (recorded so
        # in an index's metadata); None is fp32
        self.precision = resolve_precision(self.device, precision)
        self.encoders.to(self.device)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.use_token_types = "token_type_ids" in tokenizer.model_input_names
        max_positions = getattr(doc_model.config, "max_position_embeddings", None)
        if max_positions:
            self.max_doc_length = min(self.max_doc_length, max_positions)
            self.max_query_length = min(self.max_query_length, max_positions)

    @property
    def shared(self) -> bool:
        return self.encoders.shared

    @property
    def vocab_size(self) -> int:
        return self.encoders.doc.get_input_embeddings().weight.shape[0]

    # -- loading and saving ----------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str, *, separate_encoders: bool | None = None,
                        max_query_length: int | None = None, max_doc_length: int | None = None,
                        device: str | None = None, precision: str | None = None) -> Splade:
        """Load a SPLADE model saved by irdistill, any masked LM, or the bundled ``"minilm"``.

        ``separate_encoders=True`` on a shared model gives the query encoder its own copy of
        the weights (to be trained apart from the document encoder).
        """
        path = Path(name_or_path)
        settings = {}
        if (path / SETTINGS_FILE).exists():
            settings = json.loads((path / SETTINGS_FILE).read_text())
        if settings.get("encoders") == "separate":
            doc_model, tokenizer = load_masked_lm(str(path / DOC_FOLDER))
            query_model, _ = load_masked_lm(str(path / QUERY_FOLDER))
            if separate_encoders is False:
                raise IrdistillError("this SPLADE model has separate query and document "
                                     "encoders; they cannot be merged into one", path=path)
        else:
            doc_model, tokenizer = load_masked_lm(name_or_path)
            query_model = copy.deepcopy(doc_model) if separate_encoders else None
        return cls(doc_model, tokenizer, query_model,
                   max_query_length or settings.get("max_query_length", 32),
                   max_doc_length or settings.get("max_doc_length", 256),
                   device=device, precision=precision)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write plain Hugging Face checkpoint(s) that sentence-transformers' SparseEncoder loads."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        settings = {"model": "splade", "pooling": "max",
                    "encoders": "shared" if self.shared else "separate",
                    "max_query_length": self.max_query_length,
                    "max_doc_length": self.max_doc_length}
        if self.shared:  # one encoder, each side cut to its own length (sentence-transformers 6)
            self._save_masked_lm(self.encoders.doc, directory, self.max_doc_length,
                                 {"query_length": self.max_query_length,
                                  "document_length": self.max_doc_length})
            _write_json(directory / "modules.json", [
                {"idx": 0, "name": "0", "path": "",
                 "type": "sentence_transformers.sparse_encoder.models.MLMTransformer"},
                {"idx": 1, "name": "1", "path": "1_SpladePooling",
                 "type": "sentence_transformers.sparse_encoder.models.SpladePooling"}])
            _write_json(directory / "1_SpladePooling" / "config.json", self._pooling_config())
        else:
            self._save_masked_lm(self.encoders.query, directory / QUERY_FOLDER,
                                 self.max_query_length)
            self._save_masked_lm(self.encoders.doc, directory / DOC_FOLDER, self.max_doc_length)
            for side in ("query", "document"):
                _write_json(directory / f"{side}_1_SpladePooling" / "config.json",
                            self._pooling_config())
            mlm = "sentence_transformers.sparse_encoder.models.MLMTransformer"
            pool = "sentence_transformers.sparse_encoder.models.SpladePooling"
            _write_json(directory / "router_config.json", {
                "types": {QUERY_FOLDER: mlm, "query_1_SpladePooling": pool,
                          DOC_FOLDER: mlm, "document_1_SpladePooling": pool},
                "structure": {"query": [QUERY_FOLDER, "query_1_SpladePooling"],
                              "document": [DOC_FOLDER, "document_1_SpladePooling"]},
                "parameters": {"default_route": "document", "allow_empty_key": True}})
            _write_json(directory / "modules.json", [
                {"idx": 0, "name": "0", "path": "",
                 "type": "sentence_transformers.models.Router"}])
        _write_json(directory / "config_sentence_transformers.json", {
            "model_type": "SparseEncoder", "prompts": {"query": "", "document": ""},
            "default_prompt_name": None, "similarity_fn_name": "dot"})
        _write_json(directory / SETTINGS_FILE, settings)

    def _pooling_config(self) -> dict:
        return {"pooling_strategy": "max", "activation_function": "relu",
                "word_embedding_dimension": self.vocab_size}

    def _save_masked_lm(self, model, directory: Path, max_length: int,
                        lengths: dict | None = None) -> None:
        model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        _write_json(directory / "sentence_bert_config.json",
                    {"max_seq_length": max_length, "do_lower_case": False, **(lengths or {})})

    # -- encoding ----------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str], side: str) -> list[list[int]]:
        """Token ids with the model's special tokens, truncated to the side's maximum length."""
        if not texts:
            return []
        length = self.max_query_length if side == "query" else self.max_doc_length
        return self.tokenizer(list(texts), truncation=True, max_length=length,
                              return_attention_mask=False,
                              return_token_type_ids=False)["input_ids"]

    def collate(self, rows: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        return _pad(rows, self.pad_id, token_types=self.use_token_types)

    def encode_ids(self, rows: Sequence[Sequence[int]], side: str = "doc", batch_size: int = 32,
                   show_progress: bool = False, desc: str = "encoding"):
        """Sparse vectors (``scipy.sparse.csr_matrix``, ``[len(rows), vocab]``, float32) of
        pre-tokenised texts, encoded longest first in batches with dynamic padding."""
        if not rows:
            return sp.csr_matrix((0, self.vocab_size), dtype=np.float32)
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
        parts = []
        self.encoders.eval()
        bar = tqdm(total=len(rows), desc=desc, unit="text", disable=not show_progress)
        with torch.inference_mode(), autocast_context(self.device, self.precision):
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
                batch = {k: v.to(self.device) for k, v in
                         self.collate([rows[i] for i in chunk]).items()}
                reps = self.encoders.encode(batch, side).float().cpu().numpy()
                parts.append(sp.csr_matrix(reps, dtype=np.float32))
                bar.update(len(chunk))
        bar.close()
        matrix = sp.vstack(parts, format="csr", dtype=np.float32)
        return matrix[np.argsort(order)]  # back to the order of ``rows``

    def encode_queries(self, texts: Sequence[str], batch_size: int = 64,
                       show_progress: bool = False):
        return self.encode_ids(self.tokenize(texts, "query"), "query", batch_size, show_progress,
                               desc="encoding queries")

    def encode_docs(self, texts: Sequence[str], batch_size: int = 32, show_progress: bool = False):
        return self.encode_ids(self.tokenize(texts, "doc"), "doc", batch_size, show_progress,
                               desc="encoding documents")

    def top_terms(self, vector, k: int = 20) -> list[tuple[str, float]]:
        """The ``k`` heaviest terms of one sparse vector (a row of an ``encode_*`` result)."""
        row = vector.tocoo()
        order = np.argsort(-row.data)[:k]
        tokens = self.tokenizer.convert_ids_to_tokens([int(row.col[i]) for i in order])
        return [(t, float(row.data[i])) for t, i in zip(tokens, order)]


def _write_json(path: Path, obj) -> None:
    write_json(path, obj)
