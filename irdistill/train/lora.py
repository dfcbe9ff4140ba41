"""Parameter-efficient training of cross-encoders with LoRA (Hu et al., "LoRA: Low-Rank
Adaptation of Large Language Models", ICLR 2022) through the peft library.

``train.lora: {r, alpha, dropout, target_modules}`` wraps the model before training: the chosen
linear layers of the encoder get trainable low-rank updates (``target_modules``; peft's default
of the architecture when not given), every module outside the encoder (the task head, whatever
the family calls it) is trained in full, and everything else stays as pre-trained. Checkpoints
hold the adapter (resumed like any checkpoint); the saved model has the updates merged into
its weights, a plain checkpoint that transformers and sentence-transformers load without peft.
"""
from __future__ import annotations

import logging

from irdistill.config import LoraSettings
from irdistill.errors import IrdistillError

log = logging.getLogger(__name__)


def head_modules(model) -> list[str]:
    """Names of the top-level modules with parameters outside the pre-trained encoder (the task
    head; a parameterless dropout is left out, as peft would match every dropout by name)."""
    prefix = getattr(model, "base_model_prefix", None)
    return [name for name, module in model.named_children()
            if name != prefix and any(True for _ in module.parameters())]


def with_lora(model, settings: LoraSettings):
    """``model`` (a Hugging Face sequence-classification model) wrapped for LoRA training."""
    try:
        from peft import LoraConfig, TaskType, get_peft_model  # optional: irdistill[lora]
    except ImportError:
        raise IrdistillError("train.lora needs the peft package",
                             hint='pip install -e ".[lora]" (or pip install peft)') from None
    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=settings.r, lora_alpha=settings.alpha,
                        lora_dropout=settings.dropout, target_modules=settings.target_modules,
                        modules_to_save=head_modules(model))
    try:
        wrapped = get_peft_model(model, config)
    except ValueError as exc:  # no default target modules for the architecture, or none match
        raise IrdistillError(f"LoRA: {str(exc).splitlines()[0]}",
                             hint="name the linear layers: --set 'train.lora.target_modules="
                                  "[query,value]'") from None
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    total = sum(p.numel() for p in wrapped.parameters())
    log.info("LoRA r=%d on %s: %.2fM of %.1fM parameters trained", settings.r,
             ", ".join(sorted(wrapped.peft_config["default"].target_modules)), trainable / 1e6,
             total / 1e6)
    return wrapped


def merged(model):
    """The plain model of a LoRA-wrapped one, the updates merged into its weights."""
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model
