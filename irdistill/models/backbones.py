"""What differs between backbone families, in one place.

irdistill trains every backbone (BERT, RoBERTa, ELECTRA, DeBERTa-v3, ModernBERT/Ettin, ...) through
the same code path: ``AutoModelForSequenceClassification`` with one output and the family's own
tokenizer. The few things that do differ are *read off the model and the tokenizer* here rather
than looked up by family name, so a new family works without an entry in a table:

* the pair layout (special tokens, their type ids):
  :func:`irdistill.models.tokenization.read_template`;
* whether token type ids are fed (:func:`uses_token_types`): only when the tokenizer produces them,
  the model's ``forward`` takes them and the model has more than one type embedding (RoBERTa has
  one, DeBERTa-v3 none, ModernBERT takes no ``token_type_ids`` at all);
* the padding id (:func:`padding_id`): the model's ``config.pad_token_id``, which RoBERTa also uses
  to number positions;
* the longest input (:func:`max_input_length`): the size of an absolute position table minus
  the offset of models that number positions after the padding id (RoBERTa: 514 - 2 = 512), and
  no more than the tokenizer's ``model_max_length``; relative (DeBERTa-v3) and rotary
  (ModernBERT) positions set no hard limit, so DeBERTa-v3 takes the 1024-token inputs the study
  gave it;
* the classification head (:func:`head_parameter_names`): every parameter outside
  ``model.base_model`` (BERT's ``classifier``, RoBERTa/ELECTRA's ``classifier.dense/out_proj``,
  DeBERTa's ``pooler`` + ``classifier``, ModernBERT's ``head`` + ``classifier``);
* the attention kernel (:func:`resolve_attn_implementation`): SDPA where the model class supports
  it, else eager; FlashAttention-2 only when asked for (or ``auto``) and a CUDA device and the
  ``flash-attn`` package are there. With FlashAttention-2, transformers removes the padding of a
  batch before the attention kernel (variable-length sequences), which is ModernBERT's fast path.

Known numerical caveats live in :data:`PRECISION_NOTES` (DeBERTa-v3 overflows in fp16; use bf16).
:data:`CATALOGUE` lists the backbones of the reproduction study with their sizes; the settings the
papers used are in ``docs/backbones.md``.
"""
from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass

import torch
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING
from transformers.utils import is_flash_attn_2_available

from irdistill.errors import IrdistillError, unknown_name

log = logging.getLogger(__name__)

ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "auto")

#: model_type -> (precision to avoid, why, what to use instead)
PRECISION_NOTES = {
    "deberta-v2": ("fp16", "DeBERTa-v3's disentangled attention overflows in fp16 (NaN losses)",
                   "bf16"),
}


@dataclass(frozen=True)
class Backbone:
    """A backbone of the study: hub name, transformers ``model_type`` and size."""

    name: str
    model_type: str
    parameters: str  # as the model authors report it
    layers: int
    context: str  # longest input of the pre-trained model, in tokens


CATALOGUE: dict[str, Backbone] = {b.name: b for b in (
    Backbone("bert-base-uncased", "bert", "110M", 12, "512"),
    Backbone("roberta-base", "roberta", "125M", 12, "512"),
    Backbone("google/electra-base-discriminator", "electra", "110M", 12, "512"),
    Backbone("microsoft/deberta-v3-base", "deberta-v2", "184M", 12, "512"),
    Backbone("answerdotai/ModernBERT-base", "modernbert", "149M", 22, "8192"),
    Backbone("jhu-clsp/ettin-encoder-17m", "modernbert", "17M", 7, "8K"),
    Backbone("jhu-clsp/ettin-encoder-32m", "modernbert", "32M", 12, "8K"),
    Backbone("jhu-clsp/ettin-encoder-68m", "modernbert", "68M", 19, "8K"),
    Backbone("jhu-clsp/ettin-encoder-150m", "modernbert", "150M", 22, "8K"),
)}


# -- inputs ------------------------------------------------------------------------------------
def uses_token_types(model, tokenizer) -> bool:
    """Feed ``token_type_ids`` only if the tokenizer makes them and the model can use them."""
    if "token_type_ids" not in getattr(tokenizer, "model_input_names", ()):
        return False
    if "token_type_ids" not in inspect.signature(model.forward).parameters:
        return False
    n_types = getattr(model.config, "type_vocab_size", None)
    return n_types is None or n_types >= 2


def padding_id(model, tokenizer) -> int:
    """The id to pad with: the model's own ``pad_token_id`` (RoBERTa numbers positions by it).

    A tokenizer that disagrees is reported once: other tools pad with the tokenizer's id.
    """
    model_pad = getattr(model.config, "pad_token_id", None)
    tok_pad = tokenizer.pad_token_id
    if model_pad is None and tok_pad is None:
        raise IrdistillError("neither the model config nor the tokenizer defines a padding token",
                             hint="set pad_token_id in the model's config.json")
    if model_pad is None:
        model.config.pad_token_id = tok_pad
        return tok_pad
    if tok_pad is not None and tok_pad != model_pad:
        log.warning("the tokenizer pads with id %d but the model config says %d; padding with %d",
                    tok_pad, model_pad, model_pad)
    return model_pad


def _position_table(model):
    """The absolute position embedding table, None if positions are relative or rotary
    (DeBERTa-v3, ModernBERT), or ``...`` if the model has no ``embeddings`` to look in."""
    embeddings = getattr(getattr(model, "base_model", model), "embeddings", None)
    if embeddings is None:
        return ...
    table = getattr(embeddings, "position_embeddings", None)
    return table if isinstance(table, torch.nn.Embedding) else None


def position_offset(model) -> int:
    """How many position embeddings come before the first token's (RoBERTa: padding id + 1)."""
    table = _position_table(model)
    padding_idx = getattr(table, "padding_idx", None)
    return 0 if padding_idx is None else padding_idx + 1


def max_input_length(model, tokenizer) -> int | None:
    """The longest pair (special tokens included) the model takes, or None if unbounded.

    A table of absolute positions is a hard limit (less RoBERTa's offset). Relative (DeBERTa-v3)
    and rotary (ModernBERT) positions are not: such models take longer inputs than they were
    pre-trained on, and only the tokenizer's ``model_max_length``, if it sets one, applies.
    """
    limits = []
    table = _position_table(model)
    if table is ...:  # cannot tell: trust the config
        n = getattr(model.config, "max_position_embeddings", None)
        if n:
            limits.append(n)
    elif table is not None:
        limits.append(table.num_embeddings - position_offset(model))
    m = getattr(tokenizer, "model_max_length", None)
    if m and m < 1_000_000:  # transformers uses a huge number for "no limit"
        limits.append(m)
    return min(limits) if limits else None


# -- the classification head --------------------------------------------------------------------
def head_parameter_names(model) -> list[str]:
    """Names of the trainable parameters outside the pre-trained encoder (the task head)."""
    if hasattr(model, "get_base_model"):  # a peft model: its head is the wrapped model's
        inner = model.get_base_model()
        encoder = {id(p) for p in inner.base_model.parameters()}
        return [n for n, p in model.named_parameters() if id(p) not in encoder]
    base = getattr(model, "base_model", model)
    if base is model:
        return []
    encoder = {id(p) for p in base.parameters()}
    return [n for n, p in model.named_parameters() if id(p) not in encoder]


def split_parameters(model) -> tuple[list[tuple[str, object]], list[tuple[str, object]]]:
    """(encoder, head) lists of ``(name, parameter)``, trainable parameters only."""
    head_names = set(head_parameter_names(model))
    encoder, head = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (head if name in head_names else encoder).append((name, param))
    if not head:
        raise IrdistillError(f"cannot find the classification head of {type(model).__name__}",
                             hint="train.head_lr needs a model with a head outside "
                                  f"'{getattr(model, 'base_model_prefix', '')}'; unset it")
    return encoder, head


# -- attention kernel and precision ---------------------------------------------------------------
def _model_class(config):
    try:
        return MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(config)]
    except KeyError:
        return None


def flash_attention_available(device: str | None = None) -> bool:
    """FlashAttention-2 needs a CUDA device and the ``flash-attn`` package."""
    if device is not None and not str(device).startswith("cuda"):
        return False
    return torch.cuda.is_available() and is_flash_attn_2_available()


def resolve_attn_implementation(requested: str | None, config, device: str | None = None) -> str:
    """The attention kernel to load the model with.

    ``sdpa`` (default): PyTorch's scaled-dot-product attention where the model class supports it
    (DeBERTa's disentangled attention does not: eager). ``flash_attention_2``: FlashAttention-2
    when there is a CUDA device and the ``flash-attn`` package, else SDPA with a warning, so a
    config written for a GPU still runs on a CPU. ``auto``: FlashAttention-2 when available, else
    SDPA. ``eager``: the reference implementation.
    """
    requested = requested or "sdpa"
    if requested not in ATTN_IMPLEMENTATIONS:
        raise unknown_name("attention implementation", requested, ATTN_IMPLEMENTATIONS)
    cls = _model_class(config)
    supports_sdpa = bool(getattr(cls, "_supports_sdpa", False))
    supports_flash = bool(getattr(cls, "_supports_flash_attn", False)
                          or getattr(cls, "_supports_flash_attn_2", False))
    if requested in ("flash_attention_2", "auto"):
        if supports_flash and flash_attention_available(device):
            return "flash_attention_2"
        if requested == "flash_attention_2":
            why = ("the model class does not support it" if not supports_flash
                   else "no CUDA device or no flash-attn package")
            log.warning("FlashAttention-2 is not available (%s); using %s", why,
                        "sdpa" if supports_sdpa else "eager")
        requested = "sdpa"
    if requested == "sdpa" and not supports_sdpa:
        return "eager"
    return requested


def check_training_options(model, precision: str | None = None,
                           gradient_checkpointing: bool = False) -> None:
    """Refuse options the model cannot train with: a precision its family is known to diverge
    in, gradient checkpointing it does not implement."""
    note = PRECISION_NOTES.get(getattr(model.config, "model_type", None))
    if note and precision == note[0]:
        raise IrdistillError(note[1], hint=f"set train.precision={note[2]}")
    if gradient_checkpointing and not getattr(model, "supports_gradient_checkpointing", False):
        raise IrdistillError(f"{type(model).__name__} does not support gradient checkpointing",
                             hint="set train.gradient_checkpointing=false")


def describe(model) -> dict[str, object]:
    """A short description of the model's family-specific choices (for logs and model cards)."""
    config = model.config
    return {"model_type": config.model_type,
            "architecture": type(model).__name__,
            "head": sorted({n.split(".")[0] for n in head_parameter_names(model)}),
            "attn_implementation": getattr(config, "_attn_implementation", None),
            "max_position_embeddings": getattr(config, "max_position_embeddings", None)}
