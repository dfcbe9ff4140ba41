"""Training on the Hugging Face Trainer: groups in, a saved cross-encoder out.

The Trainer brings gradient accumulation, mixed precision, gradient checkpointing,
checkpoints and exact resume (model, optimizer, scheduler, RNG and sampler position), and
DDP under ``torchrun``/``accelerate launch``. irdistill adds the group data, the collator that
assembles pre-tokenised pairs, and the loss on the ``[queries, list_size]`` score tensor.

The output folder is a :class:`irdistill.train.folder.RunFolder` (config, provenance, log,
checkpoints, model; with keep_best the best evaluated checkpoint is kept beside the newest). A
config with ``stages`` trains each stage in ``stage-1/``, ``stage-2/``, ... (each starting from
the previous stage's model); ``model`` is then a link to the last stage's model.

:class:`GroupTrainer` is the cross-encoder's trainer on :class:`irdistill.train.base.BaseTrainer`.
Groups come from the data mode's source (:mod:`irdistill.train.sources`), built an epoch at a
time (:class:`~irdistill.train.data.EpochGroups`: each epoch in its own seeded order), their
texts tokenised once before training (token ids kept as compact arrays; every epoch reuses
them); a streamed mode (``triples``) is read as training goes, its texts fetched and tokenised per batch.
With ``train.group_by_length``, batches hold groups of similar length
(:mod:`irdistill.train.ordering`), in an order fixed by the seed, so resuming is exact.

With dev queries (``data.dev_*``), the model is evaluated during training
(:mod:`irdistill.train.dev`, through ``Trainer.evaluate``: see ``GroupTrainer``), the best
checkpoint can be kept and training stopped early; ``train.max_minutes`` bounds training in time
(:mod:`irdistill.train.progress`). The state of both is in every checkpoint. Details:
``docs/training.md``.

Under ``torchrun`` (DDP; gloo on CPUs), the first process prepares the data first (caches are
built once), only it writes the config, provenance, log and model, and every process returns
once the model is saved.
"""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerState

from irdistill.config import Config, TrainConfig, check_config, config_hash, resolve_stage
from irdistill.data.collection import Collection, check_collection_spec, load_collection
from irdistill.data.trec import CompactRun, Run
from irdistill.distributed import (is_distributed, is_main, main_process_first, wait_for_everyone,
                                   world_size)
from irdistill.errors import IrdistillError
from irdistill.io import check_input_file, check_output_folder, write_json
from irdistill.losses import get_loss
from irdistill.models.backbones import check_training_options, split_parameters
from irdistill.models.cross_encoder import CrossEncoder
from irdistill.models.parts import check_layer_count, freeze_domain
from irdistill.models.paths import resolve_model_path
from irdistill.models.runtime import CPU_MAX_TOKENS, with_training_precision
from irdistill.provenance import model_fingerprint
from irdistill.train.base import BaseTrainer, JsonlLog, run_trainer, training_arguments
from irdistill.train.data import (EpochGroups, GroupCollator, GroupStream, LazyTokens,
                                  check_group_ids, group_ids)
from irdistill.train.dev import DevEvaluator, build_dev_set, hold_out
from irdistill.train.folder import RunFolder
from irdistill.train.memory import MemoryBudget
from irdistill.train.ordering import group_length
from irdistill.train.progress import TrainingProgress, progress_of, stopped_at, time_schedule
from irdistill.train.resume import incomplete_reason
from irdistill.train.sources import group_source
from irdistill.train.tokens import TokenStore, shared_token_stores
from irdistill.train.trackers import tracker_callbacks
from irdistill.utils import seed_everything

log = logging.getLogger(__name__)


def forward_budget(forward_tokens: int | None, device) -> int | None:
    """Padded tokens per forward pass of a training step (None: the whole batch at once), from
    ``train.forward_tokens`` (None = auto, see :class:`irdistill.config.TrainConfig`)."""
    if forward_tokens is not None:
        return forward_tokens or None
    if torch.device(device).type != "cpu" or is_distributed():
        return None
    return CPU_MAX_TOKENS


def forward_in_pieces(model, inputs: dict[str, torch.Tensor], max_tokens: int | None
                      ) -> torch.Tensor:
    """The model's first logit for each row of a right-padded batch, computed in pieces of at
    most ``max_tokens`` padded tokens (rows sorted by length, each piece cut to its longest
    row, a multiple of 8), in the batch's order. One graph: a single backward goes through all
    pieces. Each row's score does not depend on the pieces (attention is within a row)."""
    rows, width = inputs["input_ids"].shape
    if max_tokens is None or rows * width <= max_tokens or rows == 1:
        return model(**inputs).logits[:, 0]
    lengths = inputs["attention_mask"].sum(1)
    order = torch.argsort(lengths, descending=True, stable=True)
    pieces, start = [], 0
    while start < rows:
        cut = min(width, -(-int(lengths[order[start]]) // 8) * 8)
        take = order[start:start + max(1, max_tokens // cut)]
        piece = {k: v[take, :cut] if v.dim() == 2 and v.shape == (rows, width) else v[take]
                 for k, v in inputs.items()}
        pieces.append(model(**piece).logits[:, 0])
        start += len(take)
    return torch.cat(pieces)[torch.argsort(order)]


class GroupTrainer(BaseTrainer):
    """Trainer whose loss is a pure function of the [queries, list_size] scores.

    Evaluation during training (``evaluator``, a :class:`irdistill.train.dev.DevEvaluator`)
    is the Trainer's own: ``evaluate`` is overridden to re-rank the dev queries and measure
    the run, and everything around it is the Trainer's machinery: ``eval_strategy="steps"``
    schedules it (and the evaluation at the last step), the metrics go through
    ``Trainer.log`` (train_log.jsonl, the Trainer's log history, its reporters) and
    ``on_evaluate``; with ``keep_best``, ``metric_for_best_model`` makes the Trainer track the
    best checkpoint in its state and keep it from rotation. The dev set is the
    ``eval_dataset`` only nominally: a group loss over a re-ranked list is no per-batch
    ``prediction_step``, so the default evaluation loop and ``compute_metrics`` do not fit.
    ``load_best_model_at_end`` is not used: it needs ``save_steps`` to be a multiple of
    ``eval_steps`` and a checkpoint at the best step, and cannot finish a run from its last
    checkpoint; instead :class:`irdistill.train.progress.TrainingProgress` writes a
    checkpoint at each new best evaluation (a resume point too) and the engine loads the best
    one at the end. Its state (clock, evaluation history, best, stop reason) is in every
    checkpoint.

    ``time_budget``: ``(scheduler, warmup_ratio)`` when ``train.max_minutes`` is set: the
    learning rate follows the fraction of the budget used (see
    :func:`irdistill.train.progress.time_schedule`).
    """

    def __init__(self, *args, loss_fn, loss_params, head_lr=None, forward_tokens=None,
                 evaluator=None, time_budget=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_fn = loss_fn
        self.loss_params = loss_params
        self.head_lr = head_lr
        self.forward_tokens = forward_budget(forward_tokens, self.args.device)
        self.evaluator = evaluator
        self.time_budget = time_budget

    @property
    def progress(self):
        """The run's :class:`TrainingProgress` (looked up: the Trainer replaces it when it
        restores callback states from a checkpoint)."""
        return progress_of(self.callback_handler.callbacks)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        """Re-rank the dev queries with the model as it is and measure the run (the time
        counts as evaluation, not training); log and return the metrics."""
        if self.evaluator is None:
            raise IrdistillError("no dev queries to evaluate",
                                 hint="set data.dev_fraction, data.dev_queries or "
                                      "data.dev_collection")
        progress = self.progress
        timer = progress.evaluating() if progress is not None else contextlib.nullcontext()
        with timer:
            value = self.evaluator.evaluate(self.model, self.args.device)
        metrics = {f"{metric_key_prefix}_{self.evaluator.measure}": value,
                   f"{metric_key_prefix}_queries": len(self.evaluator.dev)}
        if progress is not None:
            metrics["train_seconds"] = round(progress.train_seconds, 3)
            metrics["eval_seconds"] = round(progress.eval_seconds, 3)
        if self.is_world_process_zero():
            log.info("step %d: %s %.4f on %d dev queries", self.state.global_step,
                     self.evaluator.measure, value, len(self.evaluator.dev))
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state,
                                                         self.control, metrics)
        return metrics

    def create_scheduler(self, num_training_steps, optimizer=None):
        """The Trainer's schedule, or with a time budget one that spans the budget."""
        if self.time_budget is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        kind, warmup = self.time_budget
        self.lr_scheduler = time_schedule(optimizer or self.optimizer, kind, warmup,
                                          num_training_steps, lambda: self.progress)
        self._created_lr_scheduler = True
        return self.lr_scheduler

    def log(self, logs, *args, **kwargs):
        progress = self.progress
        if progress is not None and (self.time_budget is not None or "train_runtime" in logs):
            logs = {**logs, "train_seconds": round(progress.train_seconds, 3)}
            if "train_runtime" in logs:  # the summary at the end
                logs.update(eval_seconds=round(progress.eval_seconds, 3),
                            stopped=progress.stopped)
        return super().log(logs, *args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        targets = inputs.pop("targets")
        mask = inputs.pop("mask")
        logits = forward_in_pieces(model, inputs, self.forward_tokens)
        scores = logits.new_zeros(mask.shape)
        scores = scores.masked_scatter(mask, logits.to(scores.dtype))
        loss = self.loss_fn(scores.float(), targets.float(), mask, **self.loss_params)
        loss = self.finite_loss(loss, scores)
        return (loss, scores) if return_outputs else loss

    def create_optimizer(self, model=None):
        """The Trainer's optimizer, with the head (every parameter outside the
        pre-trained encoder, whatever the family calls it) at ``head_lr``."""
        if self.head_lr is None or self.optimizer is not None:
            return super().create_optimizer(model)
        model = model or self.model
        decay = set(self.get_decay_parameter_names(model))
        groups = []
        for params, lr in zip(split_parameters(model), (self.args.learning_rate,
                                                         self.head_lr)):
            for with_decay in (True, False):
                chosen = [p for n, p in params if (n in decay) == with_decay]
                if chosen:
                    groups.append({"params": chosen, "lr": lr, "weight_decay":
                                   self.args.weight_decay if with_decay else 0.0})
        optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        kwargs = {k: v for k, v in kwargs.items() if k not in ("lr", "params", "model")}
        self.optimizer = optimizer_cls(groups, **kwargs)
        self.guard_optimizer()
        return self.optimizer



def shared_candidates(source, collection: Collection, folder: RunFolder):
    """The source's candidates; under DDP the main process reads (or retrieves) them and saves
    them compact in ``folder.candidates``, and the other processes, run after it
    (``main_process_first``), memory-map that copy: one copy in memory a machine, and BM25 run
    once."""
    if not is_distributed():
        return source.candidates(collection)
    if is_main():
        run = source.candidates(collection)
        compact = run if isinstance(run, CompactRun) else CompactRun.from_dict(run)
        compact.save(folder.candidates)
        return compact
    log.info("reading the candidates the first process saved in %s", folder.candidates)
    return CompactRun.load(folder.candidates, mmap=True)


def token_stores(folder: RunFolder, encoder, collection, groups: EpochGroups,
                 show_progress: bool = False) -> tuple[TokenStore, TokenStore]:
    """The token stores of the groups' queries and documents in ``folder.tokens`` (see
    :func:`irdistill.train.tokens.shared_token_stores`). A failure (e.g. a document the store of
    the collection lacks) leaves no run folder that was not there before."""
    created = not folder.root.exists()
    try:
        return shared_token_stores(encoder, collection, *group_ids(groups), folder.tokens,
                                   show_progress=show_progress)
    except BaseException:
        if created and is_main():
            shutil.rmtree(folder.root, ignore_errors=True)
        raise


def _card(config: Config, digest: str, collection: str, groups, steps: int,
          model_dir: Path, outcome: dict | None = None) -> dict:
    """What the model card says about the training run (see irdistill.models.model_card);
    ``outcome``: evaluation during training, the step kept, the clock (see
    :func:`select_final_weights`)."""
    d, t = config.data, config.train
    teacher = d.teacher_run and {"run": d.teacher_run, "mode": d.mode}
    extra = {"outcome": outcome} if outcome is not None else {}
    return {"name": str(model_dir), "objective": config.loss, **extra,
            "loss_params": dict(config.loss_params), "teacher": teacher or None,
            "data": {"collection": collection, "candidates": d.run or f"bm25 top-{d.depth}",
                     "mode": d.mode,
                     "groups": len(groups) if isinstance(groups, EpochGroups) else str(groups),
                     "documents_per_group": d.negatives + 1, "sampling": d.sampling},
            "steps": steps,
            "training": {"lr": t.lr, "head_lr": t.head_lr, "batch_size": t.batch_size,
                         "grad_accum": t.grad_accum, "precision": t.precision,
                         "scheduler": t.scheduler, "warmup_ratio": t.warmup_ratio,
                         "seed": t.seed},
            "config_hash": digest}


def check_inputs(config: Config, have_collection: bool = False, have_run: bool = False,
                 check_model: bool = True) -> None:
    """Cheap checks of what a training config reads, before anything is loaded or written: the
    files its data mode needs exist and are files (:meth:`GroupSource.check_inputs
    <irdistill.train.sources.GroupSource.check_inputs>`), the collection is a folder or a known
    dataset id, the model folder is complete. (Their content is checked line by line when
    read.)"""
    d = config.data
    group_source(d).check_inputs(have_run)
    if not have_collection:
        check_collection_spec(d.collection, d.split)
    for key in ("dev_run", "dev_queries"):
        value = getattr(d, key)
        if isinstance(value, str):
            check_input_file(value, f"data.{key} file")
    if d.dev_collection is not None:
        check_collection_spec(d.dev_collection, d.dev_split)
    if check_model:
        resolve_model_path(config.model.name)


def evaluation_arguments(t: TrainConfig, evaluator) -> dict:
    """``TrainingArguments`` of evaluation during training and of the run's progress state:
    callback states restored on resume (clock, evaluations, best); the Trainer's step-wise
    evaluation; with ``keep_best`` its tracking of the best checkpoint, which rotation keeps
    beside the newest (two checkpoints, so none is deleted before the model is saved)."""
    out: dict[str, Any] = {"restore_callback_states_from_checkpoint": True}
    if evaluator is None:
        return out
    out["eval_strategy"] = "steps" if t.eval_steps else "no"
    if t.eval_steps:
        out["eval_steps"] = t.eval_steps
    if t.keep_best:
        out.update(metric_for_best_model=evaluator.key, greater_is_better=True,
                   save_total_limit=2)
    return out


def train(config: Config, output_dir: str | Path, *, collection: Collection | None = None,
          run: Run | None = None, show_progress: bool = True) -> Path:
    """Train a cross-encoder as ``config`` says; return the folder of the saved model.

    If ``output_dir/model`` exists the run is finished and nothing is done; if checkpoints
    exist, training resumes from the newest.
    """
    folder = RunFolder(output_dir)
    if folder.finished():
        folder.check_config(config_hash(config))
        log.info("%s is finished; nothing to do", folder.model)
        return folder.model
    if config.stages:
        return train_stages(config, output_dir, collection=collection, run=run,
                            show_progress=show_progress)
    loss_fn = get_loss(config.loss)
    check_config(config)
    check_inputs(config, collection is not None, run is not None)
    check_output_folder(folder.root)
    if config.train.freeze_domain_layers is not None:
        check_layer_count(config.model.name, config.train.freeze_domain_layers,
                          config.model.num_hidden_layers)
    digest = config_hash(config)  # of the config as given: "auto" precision stays "auto"
    folder.check_config(digest)
    config = with_training_precision(config)
    source = group_source(config.data)

    # every input is read and checked before anything is written: bad input leaves no folder
    given_run = run is not None
    budget = MemoryBudget(config.data.max_memory_gb)
    with main_process_first():  # under torchrun: caches (BM25, ir_datasets) are built once
        collection = collection or load_collection(config.data.collection, config.data.split)
        run = run if given_run else shared_candidates(source, collection, folder)
        budget.check("reading the candidates")
        train_run, held = hold_out(config, collection, run)  # dev queries leave the groups
        dev = build_dev_set(config, collection, run, held, given_run)
    groups = source.groups(config, collection, train_run)  # holds the run: built per epoch
    del run, train_run, held
    budget.check("counting the groups")
    if source.streamed and config.train.max_steps <= 0:
        raise IrdistillError(f"data.mode={config.data.mode} streams its groups, so the number of "
                             "steps cannot be derived from epochs",
                             hint="set train.max_steps, e.g. --set train.max_steps=10000")
    check_group_ids(collection, source.head(groups))

    seed_everything(config.train.seed)  # the new head's initialisation depends on it
    m = config.model
    cuda = torch.cuda.is_available()
    model = CrossEncoder.from_pretrained(m.name, max_query_length=m.max_query_length,
                                         max_doc_length=m.max_doc_length,
                                         truncation=m.truncation,
                                         num_hidden_layers=m.num_hidden_layers, device="cpu",
                                         attn_implementation=m.attn_implementation,
                                         attn_device="cuda" if cuda else "cpu",
                                         cls_only_last_layer=m.cls_only_last_layer)
    check_training_options(model.model, config.train.precision,
                           config.train.gradient_checkpointing)
    trackers = tracker_callbacks(config.train.report_to, folder.root)
    if config.train.lora is not None:
        from irdistill.train.lora import with_lora  # optional dependency: peft

        model.model = with_lora(model.model, config.train.lora)
    if config.train.freeze_domain_layers is not None:
        frozen = freeze_domain(model.model, config.train.freeze_domain_layers)
        log.info("domain part frozen: the embeddings and the first %d layers (%d tensors)",
                 config.train.freeze_domain_layers, len(frozen))
    if source.streamed:
        encoder = model.encoder
        query_tokens = LazyTokens(collection.query_texts, encoder.encode_queries)
        doc_tokens = LazyTokens(collection.docs.get_many, encoder.encode_docs)
        dataset = GroupStream(groups)
        log.info("training on groups streamed from %s (%s loss)", groups, config.loss)
    else:
        # token ids in memory-mapped files of the run folder, built by the main process and
        # shared by the others (and by a resumed run)
        query_tokens, doc_tokens = token_stores(folder, model.encoder, collection, groups,
                                                show_progress)
        budget.check("tokenising the texts")
        if config.train.group_by_length:
            groups.group_by_length(
                partial(group_length, model.encoder, query_tokens, doc_tokens),
                config.train.batch_size, world_size=world_size())
        dataset = groups
        log.info("training on %s of up to %d documents (%s loss)", groups,
                 max(len(g.doc_ids) for g in groups.epoch_groups(0)), config.loss)

    if is_main():
        folder.write_config(
            config, digest,
            data={"collection": collection.name, "mode": config.data.mode,
                  "source": source.describe(),
                  "groups": "streamed" if source.streamed else len(groups),
                  "files": source.files()},  # the files the groups were built from
            model={"name": m.name, "fingerprint": model_fingerprint(m.name)},
            # under DDP a step's batch is train.batch_size groups in each of the processes
            seed=config.train.seed, processes=world_size())

    t = config.train
    if t.precision == "fp16" and not cuda:
        log.warning("fp16 mixed precision needs a GPU; training in fp32 (bf16 works on a CPU)")
    evaluator = None if dev is None else DevEvaluator(
        dev, t.eval_measure, t.eval_depth, t.precision, model.tokenizer, model.max_query_length,
        model.max_doc_length, truncation=model.truncation)
    progress = TrainingProgress(max_minutes=t.max_minutes,
                                metric=evaluator.key if evaluator else None,
                                eval_steps=t.eval_steps, keep_best=t.keep_best,
                                patience=t.early_stopping_patience)
    args = training_arguments(t, folder.root, show_progress,
                              **evaluation_arguments(t, evaluator))
    trainer = GroupTrainer(
        model=model.model, args=args, train_dataset=dataset, eval_dataset=dev,
        data_collator=GroupCollator(model.encoder, query_tokens, doc_tokens),
        loss_fn=loss_fn, loss_params=dict(config.loss_params), head_lr=t.head_lr,
        on_nan=t.on_nan, forward_tokens=t.forward_tokens, evaluator=evaluator,
        time_budget=(t.scheduler, t.warmup_ratio) if t.max_minutes else None,
        callbacks=[progress, JsonlLog(folder.log), *trackers])
    checkpoint = folder.resume_point()
    stopped = stopped_at(checkpoint) if checkpoint is not None else None
    if stopped is not None:  # killed after its last checkpoint, before its model was saved
        log.info("training stopped at %s (%s); saving its model", checkpoint, stopped.stopped)
        finish_from_checkpoint(trainer, checkpoint, stopped)
    else:
        run_trainer(trainer, checkpoint, t)

    if trainer.is_world_process_zero():
        outcome = select_final_weights(trainer, folder, t, dev)
        model.model = trainer.model
        if t.lora is not None:
            from irdistill.train.lora import merged  # optional dependency: peft

            model.model = merged(model.model)  # a plain checkpoint, loadable without peft
        model.base_model = m.name
        card = _card(config, digest, collection.name, groups, trainer.state.global_step,
                     folder.model, outcome)
        folder.save_model(lambda tmp: model.save_pretrained(tmp, card=card))
        if outcome is not None:
            _record_outcome(folder, outcome)
        for shared in (folder.tokens, folder.candidates):  # for the run's processes only
            shutil.rmtree(shared, ignore_errors=True)
    wait_for_everyone()  # every process returns once the model is there
    return folder.model


def finish_from_checkpoint(trainer, checkpoint: Path, progress) -> None:
    """Put ``trainer`` in the state of ``checkpoint``, where training stopped (weights, Trainer
    state, progress), without training: the model is then saved as if the run had just ended."""
    trainer._load_from_checkpoint(str(checkpoint))  # the Trainer's own loading of its checkpoints
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
    trainer.callback_handler.remove_callback(TrainingProgress)
    trainer.callback_handler.add_callback(progress)


def select_final_weights(trainer, folder: RunFolder, t: TrainConfig, dev) -> dict | None:
    """With ``keep_best``, load the weights of the best evaluated checkpoint into the trainer's
    model; return what the run did (steps, selected step, clock, evaluations) for the model card
    and provenance, or None for a run without evaluation or time budget."""
    progress = trainer.progress
    steps = trainer.state.global_step
    selected = steps
    if t.keep_best and progress.best_step is not None:
        selected = progress.best_step
        if selected != steps:
            best = folder.checkpoints / f"checkpoint-{selected}"
            reason = incomplete_reason(best)
            if reason is not None:
                raise IrdistillError(f"the best checkpoint (step {selected}) cannot be loaded: "
                                     f"{reason}", path=best,
                                     hint="train again in a new --output folder, or set "
                                          "train.keep_best=false to keep the last weights")
            log.info("keeping the best checkpoint: step %d (%s %.4f); training ran %d steps",
                     selected, progress.metric, progress.best_value, steps)
            trainer._load_from_checkpoint(str(best))
    if dev is None and not t.max_minutes:
        return None
    outcome = {"steps": steps, "selected_step": selected,
               "selected": "best evaluation" if selected != steps or t.keep_best else "last step",
               **progress.summary()}
    if dev is not None:
        outcome["dev"] = dev.describe()
    return outcome


def _record_outcome(folder: RunFolder, outcome: dict) -> None:
    """Add what the run did to ``provenance.json`` (written before training)."""
    try:
        record = json.loads(folder.provenance.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    record["outcome"] = outcome
    write_json(folder.provenance, record)


def train_stages(config: Config, output_dir: str | Path, *, collection: Collection | None = None,
                 run: Run | None = None, show_progress: bool = True) -> Path:
    """Train the stages of ``config`` in sequence under ``output_dir/stage-N``, each starting
    from the previous stage's model; ``output_dir/model`` then links to the last stage's model.

    A finished stage is not trained again and an interrupted one resumes, so the recipe resumes
    where it stopped. ``collection``/``run`` are reused by stages that keep the base's data.
    """
    folder = RunFolder(output_dir)
    check_config(config)
    check_output_folder(folder.root)
    for index in range(len(config.stages)):  # every stage's inputs, before the first trains
        stage = resolve_stage(config, index, previous_model=None if index == 0 else "previous")
        try:
            check_inputs(stage, collection is not None and index == 0, False,
                         check_model=index == 0)
        except IrdistillError as exc:
            exc.message = f"stage {index + 1}: {exc.message}"
            raise
    created = not folder.root.exists()
    folder.write_config(config, config_hash(config), stages=len(config.stages),
                        seed=config.train.seed)
    try:
        return _train_stages(config, folder, collection, run, show_progress)
    except IrdistillError:
        if created and not folder.stages():  # bad input: leave nothing behind
            shutil.rmtree(folder.root, ignore_errors=True)
        raise


def _train_stages(config: Config, folder: RunFolder, collection: Collection | None,
                  run: Run | None, show_progress: bool) -> Path:
    previous: str | None = None
    model_dir = folder.model
    for index in range(len(config.stages)):
        stage = resolve_stage(config, index, previous_model=previous)
        same = (stage.data.collection, stage.data.split) == (config.data.collection,
                                                             config.data.split)
        same_run = same and (stage.data.mode, stage.data.run, stage.data.depth) == (
            config.data.mode, config.data.run, config.data.depth)
        log.info("stage %d of %d: %s loss, data mode %s", index + 1, len(config.stages),
                 stage.loss, stage.data.mode)
        model_dir = train(stage, folder.stage(index).root,
                          collection=collection if same else None,
                          run=run if same_run else None, show_progress=show_progress)
        previous = str(model_dir.resolve())
    return folder.link_model(model_dir)
