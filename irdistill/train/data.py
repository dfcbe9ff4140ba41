"""Training data as the Trainer reads it: datasets of groups, the token store, the collator.

Groups (:mod:`irdistill.train.sources`) are built one epoch at a time (:class:`EpochGroups`:
the texts of every epoch tokenised once before training by :func:`tokenise_ids`) or read as
training goes (:class:`GroupStream`, with :class:`LazyTokens` fetching and tokenising texts per
batch);
:class:`GroupCollator` turns a batch of groups into model inputs plus the ``targets`` and
``mask`` of the ``[queries, list_size]`` score tensor every loss takes.
"""
from __future__ import annotations

import bisect
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from irdistill.data.collection import Collection, missing_docs_error
from irdistill.data.groups import Group
from irdistill.errors import IrdistillError
from irdistill.models.tokenization import PairEncoder
from irdistill.train.ordering import length_grouped_order

log = logging.getLogger(__name__)


#: the stream of the random generator that orders an epoch's groups (seeded [seed, epoch, this])
ORDER_STREAM = 0x0DE2


class EpochGroups(Dataset):
    """The groups of ``epochs`` epochs in training order, one epoch held in memory at a time.

    ``build(epoch)`` gives an epoch's groups (a group builder is a pure function of its
    arguments and the epoch, seeded per epoch). The order is a pure function of the seed: each
    epoch's groups are permuted with ``numpy.random.default_rng([seed, epoch, ORDER_STREAM])``,
    or, with :meth:`group_by_length`, in :func:`~irdistill.train.ordering.length_grouped_order`
    seeded ``[seed, epoch]``; epoch ``e + 1`` follows epoch ``e``, so every query is seen once
    an epoch. The Trainer reads the items in sequence (``ordered``), so a resumed run, which
    skips the batches already trained, sees the same batches, and only the epoch it is in is
    built. A fractional last epoch (``epochs=2.5``) is the first half of that epoch's order.

    Building the dataset passes over every epoch once to count its groups and gather the ids
    they use (:attr:`query_ids`, :attr:`doc_ids`: what is tokenised and checked before
    training); at MS MARCO's size that holds one epoch of groups (hundreds of MB) instead of all
    of them (gigabytes at tens of epochs).
    """

    ordered = True

    def __init__(self, build: Callable[[int], list[Group]], epochs: float, seed: int):
        self.build = build
        self.seed = seed
        n_epochs = max(1, math.ceil(epochs))
        counts: list[int] = []
        query_ids: set[str] = set()
        doc_ids: set[str] = set()
        first: list[Group] = []
        for epoch in range(n_epochs):
            groups = build(epoch)
            counts.append(len(groups))
            query_ids.update(g.query_id for g in groups)
            doc_ids.update(d for g in groups for d in g.doc_ids)
            if epoch == 0:
                first = groups
        self.counts = counts
        #: items of each epoch in training (the last one cut to its fraction)
        self.used = counts[:-1] + [max(1, round(counts[-1] * (epochs - (n_epochs - 1))))]
        self.starts = np.cumsum([0, *self.used]).tolist()
        self.query_ids = sorted(query_ids)
        self.doc_ids = sorted(doc_ids)
        self.lengths: Callable[[Group], int] | None = None
        self.batch_size = self.world_size = 1
        self._epoch, self._groups = 0, first
        self._order: list[int] | None = None

    def group_by_length(self, length: Callable[[Group], int], batch_size: int,
                        world_size: int = 1) -> None:
        """Order each epoch so that batches hold groups of similar ``length`` (see
        :mod:`irdistill.train.ordering`)."""
        self.lengths, self.batch_size, self.world_size = length, batch_size, world_size
        self._order = None

    @property
    def epochs(self) -> int:
        return len(self.counts)

    def __len__(self) -> int:
        return self.starts[-1]

    def epoch_groups(self, epoch: int) -> list[Group]:
        """Epoch ``epoch``'s groups in training order (built again unless it is the one held)."""
        if epoch != self._epoch:
            groups = self.build(epoch)
            if len(groups) != self.counts[epoch]:
                raise IrdistillError(
                    f"the group builder gave {len(groups)} groups for epoch {epoch}, and "
                    f"{self.counts[epoch]} when the epochs were counted",
                    hint="a data mode's builder must give the same groups for the same "
                         "arguments and epoch")
            self._epoch, self._groups, self._order = epoch, groups, None
        if self._order is None:
            self._order = self.epoch_order(epoch, self._groups)
        return [self._groups[i] for i in self._order[: self.used[epoch]]]

    def epoch_order(self, epoch: int, groups: list[Group]) -> list[int]:
        """The permutation of ``groups`` (epoch ``epoch``'s) that training reads."""
        if self.lengths is not None:
            return length_grouped_order([self.lengths(g) for g in groups], self.batch_size,
                                        [self.seed, epoch], world_size=self.world_size)
        rng = np.random.default_rng([self.seed, epoch, ORDER_STREAM])
        return rng.permutation(len(groups)).tolist()

    def __getitem__(self, index: int) -> Group:
        if not 0 <= index < len(self):
            raise IndexError(index)
        epoch = bisect.bisect_right(self.starts, index) - 1
        if epoch != self._epoch or self._order is None:
            self.epoch_groups(epoch)
        return self._groups[self._order[index - self.starts[epoch]]]

    def __iter__(self) -> Iterator[Group]:
        for epoch in range(self.epochs):
            yield from self.epoch_groups(epoch)

    def __repr__(self) -> str:
        return f"{len(self)} groups over {self.epochs} epochs"


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


def group_ids(groups: Iterable[Group]) -> tuple[list[str], list[str]]:
    """The query and document ids of ``groups`` (of :class:`EpochGroups`: gathered when the
    epochs were counted), sorted."""
    if isinstance(groups, EpochGroups):
        return groups.query_ids, groups.doc_ids
    groups = list(groups)
    return sorted({g.query_id for g in groups}), sorted({d for g in groups for d in g.doc_ids})


def check_group_ids(collection: Collection, groups: Iterable[Group]) -> None:
    """The queries and documents of ``groups`` belong to the collection (documents where that is
    cheap to know: local files), before a model is loaded or anything written. For a stream,
    its first groups (``head``)."""
    query_ids, doc_ids = group_ids(groups)
    collection.query_texts(query_ids)
    missing = collection.docs.missing(doc_ids)
    if missing:
        raise missing_docs_error(missing, collection.name)


def tokenise_groups(encoder: PairEncoder, collection: Collection, groups: Iterable[Group]
                    ) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Tokenise every query and document of the groups once (compact arrays of token ids)."""
    return tokenise_ids(encoder, collection, *group_ids(groups))


def tokenise_ids(encoder: PairEncoder, collection: Collection, qids: list[str],
                 dids: list[str]) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Token ids of the queries ``qids`` and documents ``dids`` (compact arrays)."""
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
