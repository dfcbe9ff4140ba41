"""Training data as the Trainer reads it: datasets of groups, the token store, the collator.

Groups (:mod:`irdistill.train.sources`) are held as a list (:class:`GroupDataset`, tokenised
once before training by :func:`tokenise_groups`) or read as training goes
(:class:`GroupStream`, with :class:`LazyTokens` fetching and tokenising texts per batch);
:class:`GroupCollator` turns a batch of groups into model inputs plus the ``targets`` and
``mask`` of the ``[queries, list_size]`` score tensor every loss takes.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, IterableDataset

from irdistill.data.collection import Collection, missing_docs_error
from irdistill.data.groups import Group
from irdistill.errors import IrdistillError
from irdistill.models.tokenization import PairEncoder

log = logging.getLogger(__name__)


class GroupDataset(Dataset):
    """Groups by index; ``ordered``: their order is the training order (length-grouped), so
    the Trainer reads them in sequence instead of shuffling."""

    def __init__(self, groups: list[Group], ordered: bool = False):
        self.groups = groups
        self.ordered = ordered

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> Group:
        return self.groups[index]


class GroupStream(IterableDataset):
    """Groups read as training goes (a streamed data mode), pass after pass without end.

    The stream is endless (training stops at ``train.max_steps``) so that the Trainer sees one
    epoch: resuming then skips exactly the batches already trained, also past the end of the
    first pass. (With one Trainer epoch per pass, a resume after the first pass skipped a whole
    pass and started the next one from its beginning: not the data an uninterrupted run saw.)
    """

    def __init__(self, groups: Iterable[Group]):
        self.groups = groups

    def __iter__(self):
        passes = 0
        while True:
            count = 0
            for group in self.groups:
                count += 1
                yield group
            if count == 0:
                if passes == 0:
                    raise IrdistillError(f"the training stream {self.groups} holds no groups")
                return
            passes += 1
            log.debug("pass %d over %s done", passes, self.groups)


class LazyTokens:
    """Token ids of texts fetched and tokenised on first use, for streamed groups.

    ``fetch(ids) -> {id: text}`` and ``encode(texts) -> token ids``; the newest ``capacity``
    entries are kept.
    """

    def __init__(self, fetch: Callable[[list[str]], dict[str, str]],
                 encode: Callable[[Sequence[str]], list[list[int]]], capacity: int = 200_000):
        self.fetch = fetch
        self.encode = encode
        self.capacity = capacity
        self.cache: OrderedDict[str, list[int]] = OrderedDict()

    def load(self, ids: Iterable[str]) -> None:
        missing = [i for i in dict.fromkeys(ids) if i not in self.cache]
        if missing:
            texts = self.fetch(missing)
            self.cache.update(zip(missing, self.encode([texts[i] for i in missing])))
            while len(self.cache) > self.capacity:
                self.cache.popitem(last=False)

    def __getitem__(self, key: str) -> list[int]:
        if key not in self.cache:
            self.load([key])
        self.cache.move_to_end(key)
        return self.cache[key]


@dataclass
class GroupCollator:
    """Turns groups into model inputs plus ``targets``/``mask`` ``[queries, list_size]``.

    Texts were tokenised once before training (dicts), or are tokenised per batch
    (:class:`LazyTokens`); the collator assembles and pads.
    """

    encoder: PairEncoder
    query_tokens: Any  # {id: token ids} or LazyTokens
    doc_tokens: Any

    def __call__(self, groups: list[Group]) -> dict[str, torch.Tensor]:
        for tokens, ids in ((self.query_tokens, [g.query_id for g in groups]),
                            (self.doc_tokens, [d for g in groups for d in g.doc_ids])):
            if isinstance(tokens, LazyTokens):
                tokens.load(ids)
        width = max(len(g.doc_ids) for g in groups)
        mask = torch.zeros((len(groups), width), dtype=torch.bool)
        targets = torch.zeros((len(groups), width), dtype=torch.float)
        pairs = []
        for row, group in enumerate(groups):
            q = self.query_tokens[group.query_id]
            for col, (doc_id, target) in enumerate(zip(group.doc_ids, group.targets)):
                pairs.append((q, self.doc_tokens[doc_id]))
                mask[row, col] = True
                targets[row, col] = target
        batch = self.encoder.collate(pairs)
        batch["targets"] = targets
        batch["mask"] = mask
        return batch


def check_group_ids(collection: Collection, groups: Iterable[Group]) -> None:
    """The queries and documents of ``groups`` belong to the collection (documents where that is
    cheap to know: local files), before a model is loaded or anything written. For a stream,
    its first groups (``head``)."""
    groups = list(groups)
    collection.query_texts(sorted({g.query_id for g in groups}))
    missing = collection.docs.missing(sorted({d for g in groups for d in g.doc_ids}))
    if missing:
        raise missing_docs_error(missing, collection.name)


def tokenise_groups(encoder: PairEncoder, collection: Collection, groups: list[Group]
                    ) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Tokenise every query and document of the groups once (compact arrays of token ids)."""
    qids = sorted({g.query_id for g in groups})
    dids = sorted({d for g in groups for d in g.doc_ids})
    queries = collection.query_texts(qids)
    query_tokens = dict(zip(qids, encoder.encode_queries([queries[q] for q in qids],
                                                         compact=True)))
    doc_tokens: dict[str, list[int]] = {}
    for start in range(0, len(dids), 4096):
        chunk = dids[start:start + 4096]
        texts = collection.docs.get_many(chunk)
        doc_tokens.update(zip(chunk, encoder.encode_docs([texts[d] for d in chunk],
                                                         compact=True)))
    return query_tokens, doc_tokens
