"""Query-document pair encoding, the same for every backbone family.

Queries and documents are tokenised once, without special tokens, each truncated to its own
maximum length. A pair is then assembled from the family's own special-token template
(``[CLS] q [SEP] d [SEP]`` for BERT, ``<s> q </s></s> d </s>`` for RoBERTa, ...), which is
read off the tokenizer itself, so no family is special-cased anywhere else.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from irdistill.errors import IrdistillError


@dataclass(frozen=True)
class PairTemplate:
    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    type_prefix: tuple[int, ...]
    type_middle: tuple[int, ...]
    type_suffix: tuple[int, ...]
    type_a: int
    type_b: int

    @property
    def n_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)


def read_template(tokenizer) -> PairTemplate:
    """Derive where the special tokens go in a pair by encoding a probe pair."""
    a = tokenizer("hello", add_special_tokens=False)["input_ids"]
    b = tokenizer("world", add_special_tokens=False)["input_ids"]
    pair = tokenizer("hello", "world", return_token_type_ids=True)
    ids, types = pair["input_ids"], pair.get("token_type_ids") or [0] * len(pair["input_ids"])

    def find(sub, start):
        for i in range(start, len(ids) - len(sub) + 1):
            if ids[i:i + len(sub)] == sub:
                return i
        raise IrdistillError("cannot read the tokenizer's pair template",
                             hint="use a tokenizer that encodes text pairs")

    ia = find(a, 0)
    ib = find(b, ia + len(a))
    ea, eb = ia + len(a), ib + len(b)
    return PairTemplate(tuple(ids[:ia]), tuple(ids[ea:ib]), tuple(ids[eb:]),
                        tuple(types[:ia]), tuple(types[ea:ib]), tuple(types[eb:]),
                        types[ia], types[ib])


class PairEncoder:
    """Tokenise texts once and assemble padded batches of (query, document) pairs."""

    def __init__(self, tokenizer, max_query_length: int = 64, max_doc_length: int = 256,
                 max_positions: int | None = None, pad_to_multiple_of: int = 8,
                 use_token_types: bool | None = None, pad_id: int | None = None):
        """``max_positions``: the longest pair the model takes, special tokens included; the
        document (then, if need be, the query) length shrinks so that every pair fits.
        ``use_token_types``/``pad_id`` default to what the tokenizer says; the cross-encoder
        passes what the model takes (see :mod:`irdistill.models.backbones`)."""
        self.tokenizer = tokenizer
        self.template = read_template(tokenizer)
        if max_positions is not None:
            budget = max_positions - self.template.n_special
            if budget < 2:
                raise IrdistillError(f"the model takes at most {max_positions} tokens, too few "
                                     f"for a query and a document besides "
                                     f"{self.template.n_special} special tokens")
            max_query_length = min(max_query_length, budget - 1)
            if max_query_length + max_doc_length > budget:
                max_doc_length = budget - max_query_length
        self.max_query_length = max_query_length
        self.max_doc_length = max_doc_length
        self.max_positions = max_positions
        if pad_id is None:
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.pad_id = pad_id
        if use_token_types is None:
            use_token_types = "token_type_ids" in tokenizer.model_input_names
        self.use_token_types = use_token_types
        self.pad_to_multiple_of = pad_to_multiple_of

    def _encode(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        if not texts:
            return []
        return self.tokenizer(list(texts), add_special_tokens=False, truncation=True,
                              max_length=max_length, return_attention_mask=False,
                              return_token_type_ids=False)["input_ids"]

    def encode_queries(self, texts: Sequence[str]) -> list[list[int]]:
        return self._encode(texts, self.max_query_length)

    def encode_docs(self, texts: Sequence[str]) -> list[list[int]]:
        return self._encode(texts, self.max_doc_length)

    def pair_length(self, q: Sequence[int], d: Sequence[int]) -> int:
        return len(q) + len(d) + self.template.n_special

    def collate(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> dict[str, torch.Tensor]:
        """Assemble a batch with dynamic padding (to a multiple of ``pad_to_multiple_of``)."""
        t = self.template
        rows, type_rows = [], []
        for q, d in pairs:
            rows.append([*t.prefix, *q, *t.middle, *d, *t.suffix])
            if self.use_token_types:
                type_rows.append([*t.type_prefix, *([t.type_a] * len(q)), *t.type_middle,
                                  *([t.type_b] * len(d)), *t.type_suffix])
        width = max(len(r) for r in rows)
        m = self.pad_to_multiple_of
        if m > 1:
            rounded = (width + m - 1) // m * m
            width = rounded if self.max_positions is None else max(width, min(
                rounded, self.max_positions))
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
            attention[i, :len(r)] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention}
        if self.use_token_types:
            types = torch.zeros((len(rows), width), dtype=torch.long)
            for i, r in enumerate(type_rows):
                types[i, :len(r)] = torch.tensor(r, dtype=torch.long)
            batch["token_type_ids"] = types
        return batch
