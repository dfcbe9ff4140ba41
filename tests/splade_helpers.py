"""Shared helpers of the SPLADE, sparse-index and adaptation tests."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_mlm(tmp_path_factory, minilm_path):
    """A 2-layer, 32-wide BertForMaskedLM with random weights and the MiniLM WordPiece tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=256)
    model = BertForMaskedLM(config)
    with torch.no_grad():  # a negative vocabulary bias: sparse vectors, as after training
        model.cls.predictions.bias.fill_(-0.35)
    folder = tmp_path_factory.mktemp("tiny-mlm")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def parameters(model) -> dict:
    """Every parameter and tied weight of a module, by name, as detached copies."""
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
