"""Where a data mode's training groups come from: one :class:`GroupSource` per kind of source.

Each data mode is registered with the source it samples from (:func:`irdistill.data.sampling.
register_mode`); the source knows what that means for a training run, so the trainers hold no
branches on the mode:

* :class:`CandidateRunSource` (``run``; ``labels``): the candidate run (``data.run``, or BM25 over
  the collection's judged queries); with false-negative filtering also ``data.teacher_run``.
* :class:`TeacherRunSource` (``teacher_run``; ``teacher_scores``, ``teacher_ranks``): the
  teacher's run, ``data.teacher_run``.
* :class:`TripleSource` (``triples``): ``data.triples``, streamed as training goes.

A source checks its inputs before anything is loaded (:meth:`~GroupSource.check_inputs`), reads
its candidates (:meth:`~GroupSource.candidates`) as a :class:`~irdistill.data.trec.CompactRun`
(numpy arrays, about 20 bytes a line where a dict run takes 200: training holds it, since the
groups of every epoch are built from it), gives the groups of every epoch
(:meth:`~GroupSource.groups`: :class:`~irdistill.train.data.EpochGroups`, built an epoch at a
time), and names the files it read for provenance (:meth:`~GroupSource.files`). A builder
registered for a source is called with that source's keyword arguments
(:data:`BUILDER_ARGUMENTS`).
"""
from __future__ import annotations

from collections.abc import Iterable
from functools import partial

from irdistill.config import Config, DataConfig
from irdistill.data.collection import Collection
from irdistill.data.groups import Group
from irdistill.data.sampling import build_groups, mining_options, mode_source
from irdistill.data.trec import CompactRun, Run, read_run, select_queries
from irdistill.errors import IrdistillError
from irdistill.io import check_input_file
from irdistill.provenance import file_fingerprint
from irdistill.retrieval.bm25 import bm25_run
from irdistill.train.data import EpochGroups

#: the keyword arguments a group builder of each source is called with (besides ``epoch``)
BUILDER_ARGUMENTS = {
    "run": ("run", "qrels", "negatives", "depth", "sampling", "seed", "mining"),
    "teacher_run": ("run", "qrels", "negatives", "depth", "sampling", "seed", "force_positive"),
    "triples": ("triples", "max_queries"),
}


def _select(run: Run, query_ids: list[str] | None) -> Run:
    """``run``'s queries of ``query_ids`` (all with None)."""
    return run if query_ids is None else select_queries(run, query_ids)


class GroupSource:
    """The groups of one training run's data config (``data.mode`` and its keys)."""

    #: the source's name in :data:`irdistill.data.sampling.SOURCES`
    name = ""
    #: the DataConfig key of the file it reads (None: read nothing, e.g. BM25)
    key: str | None = None
    #: groups read as training goes (no list, no step count from epochs)
    streamed = False

    def __init__(self, data: DataConfig):
        self.data = data

    @property
    def path(self) -> str | None:
        return getattr(self.data, self.key) if self.key else None

    def check_inputs(self, have_run: bool = False) -> None:
        """The file the mode needs is given and is a file (``have_run``: the caller brings
        the run, so none is read)."""
        if self.path and not have_run:
            check_input_file(self.path, f"data.{self.key} file")

    def describe(self) -> str:
        """What the groups were built from, for provenance."""
        return self.path or ""

    def files(self) -> dict[str, dict]:
        """Fingerprints of the files the groups were built from, by DataConfig key."""
        return {self.key: file_fingerprint(self.path)} if self.path else {}

    def candidates(self, collection: Collection, depth: int | None = None,
                   query_ids: list[str] | None = None) -> Run:
        """The run groups are sampled from, to ``depth`` (default ``data.depth``), for
        ``query_ids`` (default all)."""
        raise NotImplementedError

    def builder_arguments(self, run: Run, collection, config: Config) -> dict:
        d = config.data
        given = {"run": run, "qrels": collection.qrels, "negatives": d.negatives,
                 "depth": d.depth, "sampling": d.sampling, "seed": config.train.seed,
                 "force_positive": d.force_positive, "triples": d.triples,
                 "max_queries": d.max_queries}
        return {k: given[k] for k in BUILDER_ARGUMENTS[self.name] if k in given}

    def groups(self, config: Config, collection, run: Run) -> EpochGroups | Iterable[Group]:
        """The groups of every epoch in training order, so that one pass of the Trainer covers
        all epochs (a fractional last epoch is cut); built an epoch at a time from ``run``,
        which they hold."""
        if config.data.max_queries:
            run = select_queries(run, sorted(run)[: config.data.max_queries])
        arguments = self.builder_arguments(run, collection, config)
        return EpochGroups(partial(build, config.data.mode, arguments=arguments),
                           config.train.epochs, config.train.seed)

    def head(self, groups) -> list[Group]:
        """The groups whose ids are checked against the collection before training."""
        return list(groups)


class CandidateRunSource(GroupSource):
    name = "run"
    key = "run"

    @property
    def mines(self) -> bool:
        """False-negative filtering reads the teacher's run too."""
        d = self.data
        return d.false_negative_margin is not None or d.false_negative_relative_margin is not None

    def check_inputs(self, have_run: bool = False) -> None:
        super().check_inputs(have_run)
        if self.mines and self.data.teacher_run:
            check_input_file(self.data.teacher_run, "data.teacher_run file")  # mining's teacher

    def describe(self) -> str:
        return self.data.run or "bm25"

    def files(self) -> dict[str, dict]:
        out = super().files()
        if self.mines and self.data.teacher_run:
            out["teacher_run"] = file_fingerprint(self.data.teacher_run)
        return out

    def candidates(self, collection, depth=None, query_ids=None) -> Run:
        depth = depth or self.data.depth
        if self.data.run:
            run = read_run(self.data.run, depth=depth, compact=True)
            return _select(run, query_ids)
        if query_ids is None:
            query_ids = [q for q in sorted(collection.require_qrels()) if q in collection.queries]
        return CompactRun.from_dict(bm25_run(collection, k=depth, query_ids=query_ids))

    def builder_arguments(self, run, collection, config) -> dict:
        return {**super().builder_arguments(run, collection, config),
                **mining_options(config.data)}  # {} unless mining is asked for


class TeacherRunSource(GroupSource):
    name = "teacher_run"
    key = "teacher_run"

    def check_inputs(self, have_run: bool = False) -> None:
        if not self.data.teacher_run:
            raise IrdistillError(f"data.mode={self.data.mode} needs data.teacher_run, a TREC run "
                                 "scored or ranked by the teacher",
                                 hint="e.g. --set data.teacher_run=runs/teacher.trec")
        super().check_inputs(False)  # the teacher's file, even when the caller brings its run

    def candidates(self, collection, depth=None, query_ids=None) -> Run:
        self.check_inputs()
        run = read_run(self.data.teacher_run, depth=depth or self.data.depth, compact=True)
        return _select(run, query_ids)


class TripleSource(GroupSource):
    name = "triples"
    key = "triples"
    streamed = True

    def check_inputs(self, have_run: bool = False) -> None:
        if not self.data.triples:
            raise IrdistillError(f"data.mode={self.data.mode} needs data.triples, a triple file",
                                 hint="e.g. --set data.triples=triples.tsv")
        super().check_inputs(False)

    def candidates(self, collection, depth=None, query_ids=None) -> Run:
        return {}  # the triples name their documents

    def groups(self, config, collection, run):
        """The stream itself: the Trainer passes over it again and again (see
        :class:`irdistill.train.data.GroupStream`)."""
        return build(config.data.mode, 0, self.builder_arguments(run, collection, config))

    def head(self, groups) -> list[Group]:
        return list(groups.head)  # the lines parsed before training


SOURCES: dict[str, type[GroupSource]] = {
    cls.name: cls for cls in (CandidateRunSource, TeacherRunSource, TripleSource)}


def group_source(data: DataConfig) -> GroupSource:
    """The source of ``data.mode``'s groups."""
    return SOURCES[mode_source(data.mode)](data)


def build(mode: str, epoch: int, arguments: dict) -> list[Group] | Iterable[Group]:
    """One epoch of ``mode``'s registered builder (an empty list is an error)."""
    return build_groups(mode, epoch=epoch, **arguments)


__all__ = ["BUILDER_ARGUMENTS", "GroupSource", "CandidateRunSource", "TeacherRunSource",
           "TripleSource", "SOURCES", "group_source"]
