"""The last encoder layer computed for the [CLS] row only: exact, and less work per pair.

A cross-encoder's score reads one vector: the last layer's output at position 0 (BERT's pooler,
RoBERTa's and ELECTRA's classification heads all take ``hidden_states[:, 0]``). Every other row
of the last layer is computed and thrown away. In that layer only the keys and values need every
position; the query projection, the attention output, and the feed-forward block (two thirds of a
layer's matrix products) are needed for the [CLS] row alone. For a 6-layer model that is about
an eighth of a forward (and backward) pass saved, with the same result up to rounding.

In training the layer computes the same function, but dropout draws masks for the one row
only, so a seed's run follows another random stream than with the full layer (as with
``train.fast_dropout``; the key ``model.cls_only_last_layer`` is hash-neutral like that one).
Under gradient checkpointing the last layer is not recomputed: it keeps its activations (mostly
the keys and values of every position). ``output_hidden_states`` then ends with a
``[batch, 1, hidden]`` last state: a model used for token embeddings should be loaded with
``cls_only_last_layer=False``. Where the probe cannot run (an attention kernel for another
device, such as FlashAttention-2 on a model still on the CPU), the full layer is kept.

:func:`enable` replaces the last layer's ``forward`` of a BERT-like encoder (a layer with
``attention.self.query/key/value``, ``attention.output`` and ``feed_forward_chunk``, as BERT,
RoBERTa, XLM-R and ELECTRA have) and then *checks* it: a probe batch is scored both ways, and the
model is left as it was unless the scores agree. A family whose head reads more than position 0,
or whose layer is built otherwise (DeBERTa-v3, ModernBERT), keeps its full last layer. The
weights are untouched, so a saved model is an ordinary checkpoint that other libraries score the
same.
"""
from __future__ import annotations

import logging
import sys
import types

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

log = logging.getLogger(__name__)

#: the largest difference between the probe's scores with and without, relative to their scale
TOLERANCE = 1e-4


def last_layer(model: nn.Module) -> nn.Module | None:
    """The encoder's last layer if it is built as BERT's (else None)."""
    encoder = getattr(getattr(model, "base_model", None), "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        return None
    layer = layers[-1]
    attention = getattr(layer, "attention", None)
    self_attention = getattr(attention, "self", None)
    needed = ("query", "key", "value", "attention_head_size", "scaling", "config")
    if (self_attention is None or not all(hasattr(self_attention, a) for a in needed)
            or not hasattr(attention, "output") or not hasattr(layer, "feed_forward_chunk")
            or getattr(layer, "is_decoder", False)):
        return None
    return layer


def _cls_only_forward(self, hidden_states: torch.Tensor, attention_mask=None, *args, **kwargs):
    """The layer's output at position 0 only, ``[batch, 1, hidden]``: keys and values of every
    position, the query, attention output and feed-forward block of the first."""
    kwargs.pop("encoder_attention_mask", None)
    kwargs.pop("cache", None)
    attention = self.attention.self
    batch, length = hidden_states.shape[:2]
    first = hidden_states[:, :1]
    head = attention.attention_head_size
    query = attention.query(first).view(batch, 1, -1, head).transpose(1, 2)
    key = attention.key(hidden_states).view(batch, length, -1, head).transpose(1, 2)
    value = attention.value(hidden_states).view(batch, length, -1, head).transpose(1, 2)
    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[-2] > 1:
        attention_mask = attention_mask[:, :, :1]  # the first query's row of the mask
    eager = getattr(sys.modules[type(attention).__module__], "eager_attention_forward")
    interface = ALL_ATTENTION_FUNCTIONS.get_interface(attention.config._attn_implementation,
                                                      eager)
    output, _ = interface(attention, query, key, value, attention_mask,
                          dropout=0.0 if not attention.training else attention.dropout.p,
                          scaling=attention.scaling, **kwargs)
    attended = self.attention.output(output.reshape(batch, 1, -1).contiguous(), first)
    return self.feed_forward_chunk(attended)


def _probe_scores(model: nn.Module) -> torch.Tensor:
    config = model.config
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, max(6, config.vocab_size), (2, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # a padded row
    ids[1, 7:] = getattr(config, "pad_token_id", None) or 0
    with torch.no_grad():
        return model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()


def enable(model: nn.Module) -> bool:
    """Compute ``model``'s last layer for the [CLS] row only, if its layer is BERT-like and a
    probe batch scores the same both ways; return whether it was enabled."""
    layer = last_layer(model)
    if layer is None:
        return False
    if getattr(layer, "cls_only", False):
        return True
    training = model.training
    model.eval()
    try:
        try:  # the probe runs where the model is now (an attention kernel for another device,
            full = _probe_scores(model)  # e.g. FlashAttention-2 loaded on a CPU, cannot run it)
        except Exception as exc:
            log.debug("[CLS]-only last layer not checked, so not used: %s", exc)
            return False
        layer.forward = types.MethodType(_cls_only_forward, layer)
        try:
            cut = _probe_scores(model)
        except Exception as exc:  # a layer that looks like BERT's but is not: keep it whole
            log.debug("[CLS]-only last layer not possible: %s", exc)
            cut = None
        scale = max(1.0, float(full.abs().max()))
        if cut is None or cut.shape != full.shape or float((cut - full).abs().max()) > \
                TOLERANCE * scale:
            del layer.forward  # back to the class's forward
            return False
        layer.cls_only = True
        return True
    finally:
        model.train(training)


def enabled(model: nn.Module | None) -> bool:
    """Whether ``model``'s last layer is computed for the [CLS] row only."""
    layer = last_layer(model) if model is not None else None
    return bool(getattr(layer, "cls_only", False))


def disable(model: nn.Module) -> None:
    """Give the last layer its full ``forward`` back."""
    layer = last_layer(model)
    if layer is not None and getattr(layer, "cls_only", False):
        del layer.forward
        layer.cls_only = False
