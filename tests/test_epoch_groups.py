"""Training groups built an epoch at a time (irdistill.train.data.EpochGroups): each epoch's
groups, in an order fixed by the seed, the same read in sequence, by index, or after a resume,
with one epoch held at a time."""
from __future__ import annotations

from collections import Counter
from functools import partial

import numpy as np
import pytest

from irdistill.data.groups import Group
from irdistill.data.sampling import label_groups
from irdistill.errors import IrdistillError
from irdistill.train.data import EpochGroups


def toy_run(n_queries=30, depth=20, seed=0):
    rng = np.random.default_rng(seed)
    run = {f"q{i}": {f"d{j}": float(rng.normal()) for j in rng.choice(200, depth, replace=False)}
           for i in range(n_queries)}
    qrels = {q: {next(iter(docs)): 1} for q, docs in run.items()}
    return run, qrels


class Counting:
    """A group builder that counts its calls (which epochs were built)."""

    def __init__(self, run, qrels):
        self.run, self.qrels, self.calls = run, qrels, []

    def __call__(self, epoch):
        self.calls.append(epoch)
        return label_groups(self.run, self.qrels, negatives=3, depth=20, seed=7, epoch=epoch)


def key(group: Group):
    return group.query_id, tuple(group.doc_ids), tuple(group.targets)


def test_every_epoch_holds_its_own_groups_each_query_once_in_a_seeded_order():
    run, qrels = toy_run()
    build = Counting(run, qrels)
    groups = EpochGroups(build, epochs=3, seed=5)
    assert len(groups) == 90 and groups.epochs == 3
    items = list(groups)
    for epoch in range(3):
        chunk = items[30 * epoch:30 * (epoch + 1)]
        assert Counter(map(key, chunk)) == Counter(map(key, build(epoch)))  # that epoch's groups
        assert len({g.query_id for g in chunk}) == 30  # every query once an epoch
    assert [g.query_id for g in items[:30]] != sorted(run)  # shuffled, not in query order
    again = [key(g) for g in EpochGroups(Counting(run, qrels), epochs=3, seed=5)]
    other = [key(g) for g in EpochGroups(Counting(run, qrels), epochs=3, seed=6)]
    assert again == [key(g) for g in items] and other != again
    # the same groups, other order: the seed orders, the builder's own seed draws
    assert Counter(other) == Counter(again)


def test_reading_by_index_is_reading_in_sequence_and_builds_one_epoch_at_a_time():
    run, qrels = toy_run()
    build = Counting(run, qrels)
    groups = EpochGroups(build, epochs=3, seed=1)
    assert build.calls == [0, 1, 2]  # counted once, epoch 0 kept
    in_sequence = [key(groups[i]) for i in range(len(groups))]
    assert build.calls == [0, 1, 2, 1, 2]  # then each later epoch built as training reaches it
    assert in_sequence == [key(g) for g in EpochGroups(Counting(run, qrels), 3, seed=1)]
    # a resumed run skips the batches done: from item 47 on (epoch 1) it reads the same items
    resumed = EpochGroups(Counting(run, qrels), epochs=3, seed=1)
    assert [key(resumed[i]) for i in range(47, 90)] == in_sequence[47:]
    with pytest.raises(IndexError):
        groups[90]


def test_a_fractional_last_epoch_is_the_start_of_its_order():
    run, qrels = toy_run()
    whole = list(EpochGroups(Counting(run, qrels), epochs=2, seed=3))
    part = list(EpochGroups(Counting(run, qrels), epochs=1.5, seed=3))
    assert len(part) == 45 and [key(g) for g in part] == [key(g) for g in whole[:45]]
    assert len(EpochGroups(Counting(run, qrels), epochs=0.01, seed=3)) == 1


def test_length_grouping_orders_each_epoch_by_length_from_the_seed():
    from irdistill.train.ordering import length_grouped_order

    run, qrels = toy_run(n_queries=64)
    length = len  # a stand-in: the group's query id length
    groups = EpochGroups(Counting(run, qrels), epochs=2, seed=4)
    groups.group_by_length(lambda g: length(g.query_id), batch_size=4)
    items = list(groups)
    epoch1 = label_groups(run, qrels, negatives=3, depth=20, seed=7, epoch=1)
    order = length_grouped_order([length(g.query_id) for g in epoch1], 4, [4, 1])
    assert [key(g) for g in items[64:]] == [key(epoch1[i]) for i in order]
    widths = [len({length(g.query_id) for g in items[i:i + 4]}) for i in range(0, 128, 4)]
    assert sum(w == 1 for w in widths) > len(widths) / 2  # most batches of one length


def test_a_builder_that_changes_its_groups_is_refused():
    run, qrels = toy_run()
    calls = []

    def unstable(epoch):
        calls.append(epoch)
        groups = label_groups(run, qrels, negatives=3, depth=20, seed=0, epoch=epoch)
        return groups[:-1] if len(calls) > 2 else groups

    groups = EpochGroups(unstable, epochs=2, seed=0)
    with pytest.raises(IrdistillError, match="gave 29 groups for epoch 1"):
        list(groups)


def test_the_ids_gathered_are_those_of_every_epoch():
    run, qrels = toy_run()
    build = partial(label_groups, run, qrels, negatives=3, depth=20, sampling="random", seed=2)
    groups = EpochGroups(lambda e: build(epoch=e), epochs=4, seed=0)
    every = [g for e in range(4) for g in build(epoch=e)]
    assert groups.query_ids == sorted({g.query_id for g in every})
    assert groups.doc_ids == sorted({d for g in every for d in g.doc_ids})
    assert len(groups.doc_ids) > len({d for g in build(epoch=0) for d in g.doc_ids})


def test_a_data_path_over_its_memory_budget_stops_before_the_model_with_what_it_holds(
        tmp_path, monkeypatch, tiny_bert):
    """data.max_memory_gb: the resident memory gained is checked after each stage of the data
    path (here made to grow 0.4 GiB a stage); over the budget, training stops there, before
    a model is loaded or a folder written."""
    from toy_collection import write_toy_collection

    from irdistill.config import load_config
    from irdistill.train import engine, memory

    toy = write_toy_collection(tmp_path / "toy")
    readings = iter(range(0, 100 * 2**30, 2**30 * 4 // 10))
    monkeypatch.setattr(memory, "resident_bytes", lambda: next(readings))
    loaded = []
    monkeypatch.setattr(engine.CrossEncoder, "from_pretrained",
                        classmethod(lambda *a, **k: loaded.append(1)))
    config = load_config(overrides=[
        f"model.name={tiny_bert}", f"data.collection={toy['folder']}", f"data.run={toy['run']}",
        "data.negatives=3", "data.max_memory_gb=0.5"])
    with pytest.raises(IrdistillError, match=r"holds 0\.80 GiB after counting the groups, "
                                             r"over data\.max_memory_gb=0\.5"):
        engine.train(config, tmp_path / "run", show_progress=False)
    assert not loaded and not (tmp_path / "run").exists()
    budget = memory.MemoryBudget(None)  # no limit: figures only
    assert budget.check("x") == pytest.approx(0.4) and budget.stages == {"x": 0.4}


@pytest.mark.parametrize("mode", ["labels", "teacher_scores", "teacher_ranks"])
def test_groups_from_a_compact_run_are_those_from_the_dict_run(tmp_path, mode):
    """Training reads its candidates compact (irdistill.data.trec.CompactRun): every epoch's
    groups, in training order, are those a dict run of the same file gives (ties included)."""
    from irdistill.data.sampling import build_groups
    from irdistill.data.trec import read_run, write_run

    run, qrels = toy_run(n_queries=40, depth=30, seed=3)
    for q in list(run)[:10]:  # ties at the cut-off and inside
        run[q] = {d: round(s) for d, s in run[q].items()}
    write_run(tmp_path / "run.trec", run, digits=9)
    kinds = {}
    for compact in (False, True):
        given = read_run(tmp_path / "run.trec", depth=20, compact=compact)
        arguments = {"run": given, "qrels": qrels, "negatives": 3, "depth": 20, "seed": 1}
        build = partial(build_groups, mode, **arguments)
        kinds[compact] = [key(g) for g in EpochGroups(lambda e: build(epoch=e), 3, seed=2)]
    assert type(read_run(tmp_path / "run.trec", compact=True)).__name__ == "CompactRun"
    assert kinds[True] == kinds[False] and len(kinds[True]) >= 60
