"""Tiny randomly initialised cross-encoders of each backbone family, built offline.

Every family gets a tokenizer of its own kind, trained here with the ``tokenizers`` library on
a small English corpus and wrapped into the class the family's checkpoints use on the hub, so
that pairs come out with that family's special tokens, type ids and padding id:

=============  ==========================================  ===============================
family         tokenizer                                   pair layout
=============  ==========================================  ===============================
bert           WordPiece, lower-cased (``BertTokenizer``)   ``[CLS] q [SEP] d [SEP]``, types
electra        WordPiece, lower-cased (``BertTokenizer``)   as BERT
roberta        byte-level BPE (``RobertaTokenizer``)        ``<s> q </s></s> d </s>``, no types
deberta-v3     Unigram + Metaspace, SentencePiece-like      ``[CLS] q [SEP] d [SEP]``, types
               (``DebertaV2Tokenizer``)
modernbert     byte-level BPE with a template processor     ``[CLS] q [SEP] d [SEP]``, no types
               (``PreTrainedTokenizerFast``)
=============  ==========================================  ===============================

The model configs copy the structural choices of the real base checkpoints (DeBERTa-v3's
relative attention without absolute positions and without token types, RoBERTa's position
offset after the padding id, ModernBERT's alternating global/local attention), at a size that
trains in a fraction of a second on a CPU.
"""
from __future__ import annotations

import json
from pathlib import Path

FAMILIES = ("bert", "roberta", "electra", "deberta-v3", "modernbert")

#: the hub checkpoint each tiny model stands for
HUB_NAMES = {"bert": "bert-base-uncased", "roberta": "roberta-base",
             "electra": "google/electra-base-discriminator",
             "deberta-v3": "microsoft/deberta-v3-base",
             "modernbert": "answerdotai/ModernBERT-base"}

TOPICS = {
    "cells": ["The cell is the basic unit of life and every organism is made of cells.",
              "Cells divide by mitosis, copying their chromosomes before they split.",
              "The nucleus of a cell holds its genetic material."],
    "stars": ["Stars are huge balls of hot plasma that shine by nuclear fusion.",
              "A star burns hydrogen into helium in its core for billions of years.",
              "The night sky shows thousands of stars and a few planets."],
    "dogs": ["Dogs are loyal animals that bark at strangers and guard the house.",
             "A puppy needs food, walks and training to become a calm dog.",
             "Many people keep dogs as pets and walk them every day."],
    "vaccines": ["Vaccines train the immune system to recognise a virus before infection.",
                 "A vaccine dose can prevent severe disease in older patients.",
                 "Antibodies made after vaccination protect against the virus."],
    "rivers": ["Rivers carry water from the mountains down to the sea.",
               "A river floods its valley after heavy rain in spring.",
               "Fish swim upstream in cold rivers to lay their eggs."],
    "coffee": ["Coffee contains caffeine, which keeps people awake and alert.",
               "Roasted coffee beans are ground and brewed with hot water.",
               "Drinking too much coffee can disturb sleep at night."],
    "volcanoes": ["Volcanoes erupt when molten rock rises through the crust.",
                  "Lava from a volcano cools into black basalt rock.",
                  "Ash clouds from an eruption can stop flights for days."],
    "bees": ["Bees collect nectar from flowers and turn it into honey.",
             "A honey bee colony has one queen and thousands of workers.",
             "Bees pollinate crops such as apples, almonds and clover."],
}
QUESTIONS = {
    "cells": "what is the basic unit of life",
    "stars": "how do stars shine",
    "dogs": "why do dogs bark at strangers",
    "vaccines": "how do vaccines prevent disease",
    "rivers": "where do rivers carry water",
    "coffee": "does coffee keep you awake",
    "volcanoes": "why do volcanoes erupt",
    "bees": "how do bees make honey",
}
CORPUS = [s for texts in TOPICS.values() for s in texts] + list(QUESTIONS.values()) + [
    "The quick brown fox jumps over the lazy dog.",
    "Information retrieval ranks documents by their relevance to a query.",
    "A cross-encoder reads the query and the document together and outputs a score.",
]


# -- tokenizers ------------------------------------------------------------------------------
def wordpiece_vocab(corpus=CORPUS, vocab_size: int = 600) -> dict[str, int]:
    """A lower-cased WordPiece vocabulary with BERT's special tokens first ([PAD] = 0)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, trainers
    from tokenizers.models import WordPiece

    tok = Tokenizer(WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, show_progress=False,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        initial_alphabet=list("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"()-"))
    tok.train_from_iterator(corpus, trainer)
    return tok.get_vocab()


def bytelevel_bpe(corpus=CORPUS, specials=(), vocab_size: int = 700
                  ) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary and merges (GPT-2/RoBERTa style), ``specials`` first."""
    from tokenizers import Tokenizer, pre_tokenizers, trainers
    from tokenizers.models import BPE

    tok = Tokenizer(BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  special_tokens=list(specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def unigram_vocab(corpus=CORPUS, vocab_size: int = 500) -> list[tuple[str, float]]:
    """A SentencePiece-like Unigram vocabulary (Metaspace ``▁`` word starts) with DeBERTa-v3's
    special tokens: [PAD] 0, [CLS] 1, [SEP] 2, [UNK] 3; [MASK] last, as in deberta-v3-base."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, trainers
    from tokenizers.models import Unigram

    tok = Tokenizer(Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFC()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, show_progress=False,
                                      special_tokens=["[PAD]", "[CLS]", "[SEP]", "[UNK]"],
                                      unk_token="[UNK]")
    tok.train_from_iterator(corpus, trainer)
    vocab = [tuple(v) for v in json.loads(tok.to_str())["model"]["vocab"]]
    return [(piece, float(score)) for piece, score in vocab] + [("[MASK]", 0.0)]


def build_tokenizer(family: str, model_max_length: int = 512):
    """The family's own transformers tokenizer class around a vocabulary trained here."""
    from transformers import BertTokenizer, DebertaV2Tokenizer, RobertaTokenizer

    if family in ("bert", "electra"):
        return BertTokenizer(vocab=wordpiece_vocab(), do_lower_case=True,
                             model_max_length=model_max_length)
    if family == "roberta":
        # roberta-base: <s> 0, <pad> 1, </s> 2, <unk> 3, <mask> last
        vocab, merges = bytelevel_bpe(specials=["<s>", "<pad>", "</s>", "<unk>"])
        vocab["<mask>"] = len(vocab)
        return RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
    if family == "deberta-v3":
        return DebertaV2Tokenizer(vocab=unigram_vocab(), do_lower_case=False,
                                  model_max_length=model_max_length)
    if family == "modernbert":
        return modernbert_tokenizer(model_max_length)
    raise ValueError(f"unknown family {family!r}")


def modernbert_tokenizer(model_max_length: int = 512):
    """Byte-level BPE with ModernBERT's [CLS]/[SEP] template and no token type ids; the
    special tokens come after the text vocabulary, as in answerdotai/ModernBERT-base."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    vocab, merges = bytelevel_bpe(specials=["<|endoftext|>"])
    for token in ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"):
        vocab[token] = len(vocab)
    tok = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        pad_token="[PAD]", mask_token="[MASK]", model_input_names=["input_ids", "attention_mask"],
        model_max_length=model_max_length)


# -- models ----------------------------------------------------------------------------------
def tiny_config(family: str, tokenizer, max_positions: int = 128, **overrides):
    """A 2-layer, 32-wide config of the family, with the tokenizer's vocabulary and ids."""
    from transformers import AutoConfig

    common = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                  num_attention_heads=2, intermediate_size=64, num_labels=1,
                  pad_token_id=tokenizer.pad_token_id)
    if family == "bert":
        kwargs = dict(model_type="bert", max_position_embeddings=max_positions)
    elif family == "electra":
        kwargs = dict(model_type="electra", embedding_size=16,
                      max_position_embeddings=max_positions)
    elif family == "roberta":
        # positions start after the padding id: 2 more embeddings than usable positions
        kwargs = dict(model_type="roberta", type_vocab_size=1, bos_token_id=tokenizer.cls_token_id,
                      eos_token_id=tokenizer.sep_token_id,
                      max_position_embeddings=max_positions + tokenizer.pad_token_id + 1)
    elif family == "deberta-v3":
        kwargs = dict(model_type="deberta-v2", max_position_embeddings=max_positions,
                      type_vocab_size=0, relative_attention=True, position_buckets=16,
                      max_relative_positions=-1, norm_rel_ebd="layer_norm", share_att_key=True,
                      pos_att_type=["p2c", "c2p"], position_biased_input=False,
                      layer_norm_eps=1e-7, pooler_hidden_size=32, pooler_dropout=0.0,
                      pooler_hidden_act="gelu")
    elif family == "modernbert":
        kwargs = dict(model_type="modernbert", num_hidden_layers=3,
                      max_position_embeddings=max_positions,
                      local_attention=16, cls_token_id=tokenizer.cls_token_id,
                      sep_token_id=tokenizer.sep_token_id, bos_token_id=tokenizer.cls_token_id,
                      eos_token_id=tokenizer.sep_token_id, classifier_pooling="cls")
    else:
        raise ValueError(f"unknown family {family!r}")
    model_type = kwargs.pop("model_type")
    return AutoConfig.for_model(model_type, **{**common, **kwargs, **overrides})


def build_tiny_model(family: str, folder: str | Path, *, seed: int = 0, head: bool = True,
                     max_positions: int = 128, model_max_length: int | None = None,
                     **overrides) -> str:
    """Save a randomly initialised tiny model of ``family`` with its tokenizer in ``folder``.

    ``head=False`` saves the bare encoder (as a pre-trained checkpoint without a
    classification head is published); loading it for classification adds a new head.
    ``model_max_length``: the tokenizer's limit (default: ``max_positions``).
    """
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification

    folder = Path(folder)
    tokenizer = build_tokenizer(family, model_max_length=model_max_length or max_positions)
    config = tiny_config(family, tokenizer, max_positions=max_positions, **overrides)
    torch.manual_seed(seed)
    factory = AutoModelForSequenceClassification if head else AutoModel
    model = factory.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
