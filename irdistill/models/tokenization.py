"""Query-document pair encoding, the same for every backbone family.

Queries and documents are tokenised once, without special tokens. A pair is then assembled from
the family's own special-token template (``[CLS] q [SEP] d [SEP]`` for BERT,
``<s> q </s></s> d </s>`` for RoBERTa, ...), which is read off the tokenizer itself, so no
family is special-cased anywhere else.

Two truncation schemes (``model.truncation``):

- ``segments`` (the default, as lightning-ir does it): the query is cut to ``max_query_length``
  tokens and the document to ``max_doc_length``, each on its own.
- ``pair`` (as sentence-transformers and the Hugging Face tokenizers do it): the pair is cut to
  ``max_query_length + max_doc_length`` tokens besides the special ones, longest first: a
  short query leaves its unused budget to the document. This is the tokenizers'
  ``longest_first`` rule (:func:`longest_first`), so a saved model scores the same in
  sentence-transformers on documents of any length.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from irdistill.config import TRUNCATIONS
from irdistill.errors import IrdistillError


def longest_first(n_query, n_doc, budget: int):
    """How many tokens of a query and a document of these lengths (ints, or arrays of them) a
    pair of ``budget`` tokens (special tokens excluded) keeps, by the Hugging Face tokenizers'
    ``longest_first`` rule (``tokenizers`` ``truncate_pair``, as sentence-transformers'
    cross-encoders call it): the shorter side is kept whole if it fits in half the budget and
    the longer one gets the rest; else each gets half, the odd token going to the longer side
    (to the document when both are as long)."""
    q, d = np.asarray(n_query, dtype=np.int64), np.asarray(n_doc, dtype=np.int64)
    short, long_ = np.minimum(q, d), np.maximum(q, d)
    long_ = np.where(short > budget, short, np.maximum(short, budget - short))
    halve = short + long_ > budget
    short = np.where(halve, budget // 2, short)
    long_ = np.where(halve, budget // 2 + budget % 2, long_)
    swap = q > d
    fits = q + d <= budget
    keep_q = np.where(fits, q, np.minimum(q, np.where(swap, long_, short)))
    keep_d = np.where(fits, d, np.minimum(d, np.where(swap, short, long_)))
    if keep_q.ndim == 0:
        return int(keep_q), int(keep_d)
    return keep_q, keep_d


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
                 use_token_types: bool | None = None, pad_id: int | None = None,
                 truncation: str = "segments"):
        """``max_positions``: the longest pair the model takes, special tokens included; the
        document (then, if need be, the query) length shrinks so that every pair fits.
        ``use_token_types``/``pad_id`` default to what the tokenizer says; the cross-encoder
        passes what the model takes (see :mod:`irdistill.models.backbones`).
        ``truncation``: ``segments`` or ``pair`` (see the module's docstring)."""
        if truncation not in TRUNCATIONS:
            raise IrdistillError(f"unknown truncation {truncation!r}",
                                 hint=f"choose one of {', '.join(TRUNCATIONS)}")
        self.truncation = truncation
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
        #: the tokens of a pair besides the special ones, at most
        self.pair_budget = max_query_length + max_doc_length
        self.max_positions = max_positions
        if pad_id is None:
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.pad_id = pad_id
        if use_token_types is None:
            use_token_types = "token_type_ids" in tokenizer.model_input_names
        self.use_token_types = use_token_types
        self.pad_to_multiple_of = pad_to_multiple_of

    @property
    def token_dtype(self) -> np.dtype:
        """The smallest integer type that holds every token id of the vocabulary (compact
        storage: 2 bytes a token for BERT, RoBERTa, ModernBERT; 4 for DeBERTa-v3)."""
        return np.dtype(np.uint16 if len(self.tokenizer) <= 2**16 else np.int32)

    def _encode(self, texts: Sequence[str], max_length: int, compact: bool = False) -> list:
        if not texts:
            return []
        ids = self.tokenizer(list(texts), add_special_tokens=False, truncation=True,
                             max_length=max_length, return_attention_mask=False,
                             return_token_type_ids=False)["input_ids"]
        if compact:
            dtype = self.token_dtype
            return [np.asarray(row, dtype=dtype) for row in ids]
        return ids

    @property
    def max_model_length(self) -> int:
        """The longest pair, special tokens included: the ``max_length`` with which the
        tokenizer itself (and sentence-transformers) truncates pairs as :attr:`truncation`
        ``pair`` does."""
        return self.pair_budget + self.template.n_special

    def encode_queries(self, texts: Sequence[str], compact: bool = False) -> list:
        """Token ids of each query (no special tokens, cut to ``max_query_length``; in
        ``pair`` truncation to one token more than the pair's budget, enough to cut the pair as
        the tokenizers do when it is assembled, see :meth:`fit`):
        lists of ints, or with ``compact`` numpy arrays of :attr:`token_dtype`, a fraction of
        the memory of Python ints when millions of texts are held."""
        return self._encode(texts, self.max_query_length if self.truncation == "segments"
                            else self.pair_budget + 1, compact)

    def encode_docs(self, texts: Sequence[str], compact: bool = False) -> list:
        """Token ids of each document, cut to ``max_doc_length`` (or the pair's budget; see
        :meth:`encode_queries`)."""
        return self._encode(texts, self.max_doc_length if self.truncation == "segments"
                            else self.pair_budget + 1, compact)

    def fit(self, q: Sequence[int], d: Sequence[int]) -> tuple[Sequence[int], Sequence[int]]:
        """The query and document tokens a pair keeps (``pair`` truncation cuts them here).

        Exactly the tokenizers' cut, but for one case: when the query and the document are both
        longer than the whole budget and the budget is odd, the tokenizers give the odd token
        to the longer of the two and this gives it to the document (both were cut to the
        budget plus one token when tokenised, so which was longer is no longer known)."""
        if self.truncation == "segments":
            return q, d
        a, b = longest_first(len(q), len(d), self.pair_budget)
        return q[:a], d[:b]

    def pair_lengths(self, q_len: np.ndarray, d_len: np.ndarray) -> np.ndarray:
        """Tokens of each pair, special tokens included, from its query and document lengths
        as :meth:`encode_queries` and :meth:`encode_docs` gave them."""
        if self.truncation == "pair":
            q_len, d_len = longest_first(q_len, d_len, self.pair_budget)
        return np.asarray(q_len, dtype=np.int64) + d_len + self.template.n_special

    def pair_length(self, q: Sequence[int], d: Sequence[int]) -> int:
        q, d = self.fit(q, d)
        return len(q) + len(d) + self.template.n_special

    def padded_width(self, longest: int) -> int:
        """The width of a batch whose longest pair has ``longest`` tokens: rounded up to a
        multiple of ``pad_to_multiple_of``, but never past the model's position limit."""
        m = self.pad_to_multiple_of
        if m <= 1:
            return longest
        rounded = (longest + m - 1) // m * m
        return rounded if self.max_positions is None else max(longest, min(
            rounded, self.max_positions))

    def collate(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> dict[str, torch.Tensor]:
        """Assemble a batch with dynamic padding (to a multiple of ``pad_to_multiple_of``).

        Token ids may be lists or numpy arrays. The batch is filled in numpy, one slice per
        segment, and handed to torch without a copy.
        """
        t = self.template
        n = len(pairs)
        q_len = np.fromiter((len(q) for q, _ in pairs), dtype=np.int64, count=n)
        d_len = np.fromiter((len(d) for _, d in pairs), dtype=np.int64, count=n)
        if self.truncation == "pair":  # the whole batch cut at once
            q_len, d_len = longest_first(q_len, d_len, self.pair_budget)
        lengths = q_len + d_len + t.n_special
        width = self.padded_width(int(lengths.max()))
        input_ids = np.full((n, width), self.pad_id, dtype=np.int64)
        p, m, x = len(t.prefix), len(t.middle), len(t.suffix)
        prefix, middle, suffix = (np.asarray(v, dtype=np.int64) for v in (t.prefix, t.middle,
                                                                           t.suffix))
        for i, (q, d) in enumerate(pairs):
            nq, nd = int(q_len[i]), int(d_len[i])
            a, b = p + nq, p + nq + m
            c = b + nd
            row = input_ids[i]
            row[:p] = prefix
            row[p:a] = q[:nq]
            row[a:b] = middle
            row[b:c] = d[:nd]
            row[c:c + x] = suffix
        columns = np.arange(width)
        attention = (columns[None, :] < lengths[:, None]).astype(np.int64)
        batch = {"input_ids": torch.from_numpy(input_ids),
                 "attention_mask": torch.from_numpy(attention)}
        if self.use_token_types:
            types = np.zeros((n, width), dtype=np.int64)
            rows = np.arange(n)
            middle_at = p + q_len  # where each row's middle and suffix segments start
            suffix_at = middle_at + m + d_len
            col = columns[None, :]
            types[(col >= p) & (col < middle_at[:, None])] = t.type_a
            types[(col >= (middle_at + m)[:, None]) & (col < suffix_at[:, None])] = t.type_b
            for offset, value in enumerate(t.type_prefix):
                types[:, offset] = value
            for offset, value in enumerate(t.type_middle):
                types[rows, middle_at + offset] = value
            for offset, value in enumerate(t.type_suffix):
                types[rows, suffix_at + offset] = value
            batch["token_type_ids"] = torch.from_numpy(types)
        return batch
