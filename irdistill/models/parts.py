"""The split of a masked LM into a domain part and a task part, and their recombination.

Domain part (``k`` layers): the embeddings module of the backbone (word, position and token-type
embeddings and their LayerNorm) and its first ``k`` transformer layers. The output projection
of the MLM head is tied to the word embeddings, so it belongs to the domain part too, as the
output embeddings do in Artetxe et al. (2020), where the input and output embeddings of a
language are learned together. Task part: every other parameter: the upper layers and the rest
of the MLM head (its transform and vocabulary bias), which SPLADE training adapts to the task.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig

from irdistill.errors import IrdistillError
from irdistill.models.paths import resolve_model_path


def _layers(base: nn.Module) -> tuple[str, nn.ModuleList]:
    """The transformer layer list of a backbone: ``encoder.layer`` (BERT family), ``layers``
    (ModernBERT), ``transformer.layer`` (DistilBERT)."""
    for path in ("encoder.layer", "encoder.layers", "layers", "transformer.layer", "layer"):
        module = base
        try:
            for attr in path.split("."):
                module = getattr(module, attr)
        except AttributeError:
            continue
        if isinstance(module, nn.ModuleList):
            return path, module
    raise IrdistillError(f"cannot find the transformer layers of {type(base).__name__}",
                         hint="domain adaptation supports BERT-like encoders")


def _embeddings_path(base: nn.Module) -> str:
    for name in ("embeddings", "embed_tokens"):
        if isinstance(getattr(base, name, None), nn.Module):
            return name
    raise IrdistillError(f"cannot find the embeddings of {type(base).__name__}",
                         hint="domain adaptation supports BERT-like encoders")


def check_layer_count(name_or_path: str, k: int, keep_layers: int | None = None) -> None:
    """Fail before a model is loaded if its domain part of ``k`` layers is out of range
    (``keep_layers``: the model is cut to its first layers, ``model.num_hidden_layers``)."""

    layers = getattr(AutoConfig.from_pretrained(resolve_model_path(name_or_path)),
                     "num_hidden_layers", None)
    if layers is not None and keep_layers:
        layers = min(layers, keep_layers)
    if k < 0 or (layers is not None and k > layers):
        raise IrdistillError(f"domain layers k={k} is out of range",
                             hint=f"the model has {layers} layers: choose 0 to {layers}")


def domain_prefixes(model: nn.Module, layers: int) -> list[str]:
    """Parameter-name prefixes of the domain part of a masked LM (see the module docstring)."""
    base = model.base_model
    prefix = model.base_model_prefix
    layer_path, layer_list = _layers(base)
    if not 0 <= layers <= len(layer_list):
        raise IrdistillError(f"domain layers k={layers} is out of range",
                             hint=f"the model has {len(layer_list)} layers: choose 0 to "
                                  f"{len(layer_list)}")
    out = [f"{prefix}.{_embeddings_path(base)}."]
    out += [f"{prefix}.{layer_path}.{i}." for i in range(layers)]
    return out


def domain_parameter_names(model: nn.Module, layers: int) -> list[str]:
    """Names (as in ``named_parameters``) of the domain part's parameters."""
    prefixes = tuple(domain_prefixes(model, layers))
    return [n for n, _ in model.named_parameters() if n.startswith(prefixes)]


def task_parameter_names(model: nn.Module, layers: int) -> list[str]:
    domain = set(domain_parameter_names(model, layers))
    return [n for n, _ in model.named_parameters() if n not in domain]


def freeze_domain(model: nn.Module, layers: int) -> list[str]:
    """Stop gradients of the domain part (embeddings + first ``layers`` layers); return its names."""
    names = set(domain_parameter_names(model, layers))
    for name, param in model.named_parameters():
        if name in names:
            param.requires_grad_(False)
    return sorted(names)


def set_trainable(model: nn.Module, names) -> None:
    """Let exactly the parameters ``names`` receive gradients."""
    names = set(names)
    for name, param in model.named_parameters():
        param.requires_grad_(name in names)


def recombine(task_model: nn.Module, domain_model: nn.Module, layers: int) -> list[str]:
    """Copy the domain part of ``domain_model`` into ``task_model`` in place; return the names.

    Both must be the same architecture. Tied weights (the MLM output projection) follow the
    word embeddings they are tied to.
    """
    names = domain_parameter_names(task_model, layers)
    source = dict(domain_model.named_parameters())
    target = dict(task_model.named_parameters())
    with torch.no_grad():
        for name in names:
            if name not in source or source[name].shape != target[name].shape:
                raise IrdistillError(f"the domain model has no parameter '{name}' of shape "
                                     f"{tuple(target[name].shape)}",
                                     hint="adapt models of the same architecture")
            target[name].copy_(source[name])
    return names
