"""Masked-language-model training of the domain part only, on the Hugging Face Trainer.

The documents are a seeded random sample (reservoir sampling over one streaming pass) of a
collection's corpus; 15% of the tokens are masked as in BERT (``DataCollatorForLanguageModeling``).
Only the parameters of the domain part receive gradients (:mod:`irdistill.models.parts`). The MLM
head is applied to the masked positions only, which halves the cost of a step for a
30k-term vocabulary.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset
from transformers import DataCollatorForLanguageModeling

from irdistill.config import TrainConfig
from irdistill.data.collection import Collection
from irdistill.errors import IrdistillError
from irdistill.models.parts import domain_parameter_names, set_trainable
from irdistill.models.splade import load_masked_lm
from irdistill.train.base import BaseTrainer, run_trainer, training_arguments
from irdistill.train.folder import RunFolder
from irdistill.utils import seed_everything

log = logging.getLogger(__name__)


@dataclass
class MLMConfig:
    steps: int = 200
    batch_size: int = 16
    lr: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 128  # tokens per document
    mlm_probability: float = 0.15
    max_docs: int = 20000  # documents sampled from the corpus
    precision: str = "fp32"  # fp32 | bf16
    seed: int = 42
    logging_steps: int = 10
    save_steps: int = 50  # checkpoint every N steps: a killed run resumes from the last one


def sample_texts(collection: Collection, n: int, seed: int = 0) -> list[str]:
    """A uniform random sample of ``n`` document texts (reservoir sampling, one streaming pass)."""
    rng = random.Random(seed)
    sample: list[str] = []
    for i, (_, text) in enumerate(collection.docs):
        if not text.strip():
            continue
        if len(sample) < n:
            sample.append(text)
        else:
            j = rng.randint(0, i)
            if j < n:
                sample[j] = text
    if not sample:
        raise IrdistillError(f"collection '{collection.name}' has no document text for MLM")
    return sample


class _Tokens(Dataset):
    def __init__(self, rows: list[list[int]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return {"input_ids": self.rows[i]}


class MaskedPositionsTrainer(BaseTrainer):
    """MLM loss with the head applied to the masked positions only (when the head is one
    module that maps hidden states to vocabulary logits, as in BERT and RoBERTa); a
    non-finite loss or gradient stops training (the fault guard of
    :class:`irdistill.train.base.BaseTrainer`)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        heads = [m for n, m in model.named_children() if n != model.base_model_prefix]
        if len(heads) != 1:
            out = model(**inputs, labels=labels)
            loss = self.finite_loss(out.loss, out.logits)
            return (loss, out) if return_outputs else loss
        hidden = model.base_model(**inputs).last_hidden_state
        picked = labels != -100
        logits = heads[0](hidden[picked])
        loss = torch.nn.functional.cross_entropy(logits.float(), labels[picked])
        loss = self.finite_loss(loss, logits)
        return (loss, logits) if return_outputs else loss



def train_mlm(model_path: str, collection: Collection, output_dir: str | Path, layers: int,
              config: MLMConfig = MLMConfig(), show_progress: bool = True) -> Path:
    """MLM on ``collection``'s documents updating only the domain part (embeddings + first
    ``layers`` layers) of the masked LM at ``model_path``; return the saved model's folder.

    A finished run (``output_dir/model`` exists) is not redone; an interrupted one resumes from
    its newest complete checkpoint (``output_dir/checkpoints``, every ``config.save_steps``).
    """
    folder = RunFolder(output_dir)
    if folder.finished():
        log.info("%s is finished; nothing to do", folder.model)
        return folder.model
    seed_everything(config.seed)
    model, tokenizer = load_masked_lm(model_path)
    if tokenizer.mask_token_id is None:
        raise IrdistillError("the tokenizer has no mask token; MLM training needs one",
                             path=model_path)
    domain = domain_parameter_names(model, layers)
    set_trainable(model, domain)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    n_docs = min(config.max_docs, config.steps * config.batch_size)
    texts = sample_texts(collection, n_docs, seed=config.seed)
    rows = tokenizer(texts, truncation=True, max_length=config.max_length,
                     return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    log.info("MLM on %d documents of %s: %d steps, training the embeddings and the first %d "
             "layers (%.1fM of %.1fM parameters)", len(rows), collection.name, config.steps,
             layers, n_train / 1e6, n_all / 1e6)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=config.mlm_probability,
                                               pad_to_multiple_of=8)
    # the cross-encoder trainer's arguments (checkpoints, seeds, precision, process timeout)
    train_config = TrainConfig(
        max_steps=config.steps, batch_size=config.batch_size, lr=config.lr,
        warmup_ratio=config.warmup_ratio, weight_decay=config.weight_decay,
        precision=config.precision, seed=config.seed, logging_steps=config.logging_steps,
        save_steps=config.save_steps)
    trainer = MaskedPositionsTrainer(
        model=model, args=training_arguments(train_config, folder.root, show_progress),
        train_dataset=_Tokens(rows), data_collator=collator)
    run_trainer(trainer, folder.resume_point(), train_config, what="MLM")
    for param in model.parameters():
        param.requires_grad_(True)

    def save(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return folder.save_model(save)
