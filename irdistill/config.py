"""Typed configs: YAML files plus ``--set key.sub=value`` overrides, and a content hash.

A config is a tree of dataclasses. Unknown keys are errors with a 'did you mean' hint; values
are checked against the field's type. :func:`config_hash` hashes the resolved config, so an
output folder can be named by what produced it.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from irdistill.errors import IrdistillError, suggest
from irdistill.io import check_input_file
from irdistill.utils import stable_hash

T = TypeVar("T")


@dataclass
class DataConfig:
    """Where training groups come from."""

    collection: str = "beir/scifact/train"  # ir_datasets id or local folder
    split: str | None = None  # for BEIR folders
    run: str | None = None  # TREC run of candidates; None = BM25 over the collection
    depth: int = 100  # candidates per query taken from the run
    mode: str = "labels"  # how targets are made (see irdistill.data.sampling.MODES)
    negatives: int = 7  # documents per group besides the positive
    sampling: str = "random"  # top | random | top+random | all
    teacher_run: str | None = None  # run with teacher scores or ranks (teacher modes)
    force_positive: bool = True  # teacher modes: put a judged positive in slot 0
    triples: str | None = None  # mode triples: pos_score, neg_score, qid, pos_pid, neg_pid file
    max_queries: int | None = None  # use only the first N training queries (quick runs)
    # stop before the model is loaded when the data path (run, groups, tokens) holds more than
    # this many GiB of resident memory (irdistill.train.memory); None = no limit
    max_memory_gb: float | None = None
    # held-out queries evaluated during training (irdistill.train.dev), at most one of:
    dev_fraction: float | None = None  # this fraction of the training queries, drawn by seed
    dev_queries: list[str] | str | None = None  # these query ids (or a file of ids, one a line)
    dev_collection: str | None = None  # the judged queries of another collection (or split)
    dev_split: str | None = None  # split of dev_collection (BEIR folders)
    dev_run: str | None = None  # candidates of the dev queries; None = as training's (see dev.py)
    # labels mode, negatives mined as sentence-transformers' mine_hard_negatives does (names in
    # brackets; irdistill.data.sampling.Mining, docs/fusion.md); None = as before. Negatives
    # from a dense or fused run: set data.run to it.
    # [min, max]: negatives from ranks min+1..max of data.run [range_min, range_max]
    negatives_range: list[int] | None = None
    # drop a candidate that data.teacher_run scores above teacher(positive) - margin, the
    # lowest-scored judged positive [absolute_margin] ...
    false_negative_margin: float | None = None
    # ... or above teacher(positive) - |teacher(positive)| * margin [relative_margin]
    false_negative_relative_margin: float | None = None


#: how a (query, document) pair is cut to its lengths (see irdistill.models.tokenization)
TRUNCATIONS = ("segments", "pair")

@dataclass
class ModelConfig:
    name: str = "minilm"  # hub name, local folder, or the bundled 'minilm'
    num_hidden_layers: int | None = None  # keep only the first N layers (smaller student)
    max_query_length: int = 32
    max_doc_length: int = 192
    # segments: query and document cut to their own lengths (as lightning-ir does); pair: the
    # pair cut to their sum, longest first, as sentence-transformers does (a saved model then
    # scores the same there on documents of any length)
    truncation: str = "segments"
    attn_implementation: str = "sdpa"  # sdpa | eager | flash_attention_2 | auto (FA2 if on GPU)
    # the last layer computed for the [CLS] row only where that is exact (BERT, RoBERTa,
    # ELECTRA; irdistill.models.cls_only): the same model, less work per pair
    cls_only_last_layer: bool = True


@dataclass
class LoraSettings:
    """LoRA (Hu et al., ICLR 2022) through the peft library: low-rank updates of the chosen
    linear layers, the task head trained in full; the saved model is merged (a plain checkpoint)."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    # the linear layers that get low-rank updates (None: peft's default of the architecture,
    # e.g. query and value for BERT)
    target_modules: list[str] | None = None


@dataclass
class TrainConfig:
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = 8  # queries (groups) per device per step
    grad_accum: int = 1
    lr: float = 3e-5
    head_lr: float | None = None  # separate learning rate for the classification head
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    scheduler: str = "linear"
    precision: str = "fp32"  # fp32 | bf16 | fp16 | auto (bf16 where the CPU/GPU has it natively)
    gradient_checkpointing: bool = False
    torch_compile: bool = False  # torch.compile the model (GPU; slow to start on a CPU)
    torch_compile_backend: str | None = None  # None = torch's default (inductor)
    seed: int = 42
    save_steps: int = 200
    logging_steps: int = 10
    max_grad_norm: float = 1.0
    num_workers: int = 0
    on_nan: str = "stop"  # stop | skip
    group_by_length: bool = False  # batches of groups of similar length (less padding)
    # padded tokens per forward pass inside a step (the step's pairs, sorted by length, go
    # through the model in pieces; one backward): None = auto (2048 on a CPU, where small pieces
    # stay in cache: forward + backward 1.4-1.8x faster alone, training ~1.2x end to end; the
    # whole batch on a GPU or under DDP),
    # 0 = the whole batch at once
    forward_tokens: int | None = None
    # on a CPU, dropout masks from 16-bit random numbers (four per 64-bit draw) and attention
    # dropout without leaving the softmax path (irdistill.models.dropout): the same dropout,
    # training steps ~1.25x faster; no effect on a GPU or with torch_compile
    fast_dropout: bool = True
    # evaluation during training on the data.dev_* queries (irdistill.train.dev): re-rank their
    # top-eval_depth candidates every eval_steps steps (None: at the end only) and measure
    eval_steps: int | None = None
    eval_depth: int = 100
    eval_measure: str = "nDCG@10"  # ir_measures notation
    keep_best: bool = False  # the final model is the best-scoring evaluated checkpoint
    early_stopping_patience: int | None = None  # stop after N evaluations without improvement
    # a training budget in wall-clock minutes (evaluation not counted); the learning-rate
    # schedule then spans the budget (irdistill.train.progress); training also ends at
    # train.max_steps, or else after the groups of train.epochs: give enough of them
    max_minutes: float | None = None
    # experiment trackers that receive every logged figure (the Hugging Face Trainer's
    # integrations: tensorboard, wandb, mlflow, ...; each needs its package); TensorBoard
    # writes to OUTPUT/tensorboard, the others where their own settings say
    report_to: list[str] = field(default_factory=list)
    lora: LoraSettings | None = None  # parameter-efficient training (irdistill.train.lora)
    # keep the embeddings and the first k transformer layers fixed (the domain part of
    # irdistill.models.parts): the task step of the MLM adaptation recipe (irdistill.adapt.reranker)
    freeze_domain_layers: int | None = None


@dataclass
class Config:
    """A training run: data, model, objective and optimisation.

    ``stages`` makes it a recipe of several trainings in sequence (e.g. InfoNCE pre-fine-tuning
    then RankNet distillation of an LLM ranking): each stage is a mapping of keys that override
    this config (``{"loss": "ranknet", "data": {"mode": "teacher_ranks"}}``), and every stage
    after the first starts from the previous stage's model. See :func:`resolve_stage`.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: str = "infonce"
    loss_params: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    stages: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for index in range(len(self.stages)):  # a wrong key in a stage fails at load time
            resolve_stage(self, index, previous_model="previous-stage" if index else None)


def resolve_stage(config: Config, index: int, previous_model: str | None = None) -> Config:
    """The config of stage ``index`` (0-based): the base config with the stage's keys on top.

    A stage that sets ``loss`` without ``loss_params`` gets no loss parameters (they belong to
    the base loss). Every stage after the first trains ``previous_model``, so it may not set
    ``model.name`` itself. The result has no stages.
    """
    stage = config.stages[index]
    where = f"config.stages[{index}]"
    if "stages" in stage:
        raise IrdistillError(f"{where}: a stage cannot have stages of its own")
    if index > 0 and "name" in (stage.get("model") or {}):
        raise IrdistillError(f"{where}: model.name is set by the previous stage",
                             hint="each stage after the first starts from the previous stage's "
                                  "model; remove model.name from this stage")
    base = to_dict(config)
    base.pop("stages")
    if "loss" in stage and "loss_params" not in stage:
        base["loss_params"] = {}
    data = merge(base, stage)
    if previous_model is not None:
        data["model"]["name"] = previous_model
    return from_dict(Config, data, where)


TRAINING_PRECISIONS = ("fp32", "bf16", "fp16", "auto")
ON_NAN = ("stop", "skip")
#: schedulers that can follow a time budget (train.max_minutes)
TIME_SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")


def _choice(where: str, value: Any, choices) -> None:
    if value not in choices:
        raise IrdistillError(f"unknown {where} '{value}'", hint=suggest(str(value), choices))


def _at_least(where: str, value: Any, low: float, strict: bool = False) -> None:
    if value is None:
        return
    if value < low or (strict and value == low):
        raise IrdistillError(f"{where}={value} must be {'above' if strict else 'at least'} {low}")


def check_config(config: Config) -> Config:
    """Check the values of a config (names against the registries, numbers against their ranges)
    so that a mistake fails before any data is loaded, with a 'did you mean' for a typo.

    Types and unknown keys are already checked by :func:`from_dict`; this checks what a type
    cannot say. Every stage of a recipe is checked as it will be trained.
    """
    # the config is the bottom layer: it imports the registries it checks against (losses,
    # modes, backbones: torch, transformers) only when it checks
    from transformers.trainer_utils import SchedulerType

    from irdistill.data.sampling import MODES, SAMPLINGS, check_mining
    from irdistill.losses import check_loss_params, get_loss
    from irdistill.models.backbones import ATTN_IMPLEMENTATIONS

    for index in range(len(config.stages)):
        try:
            check_config(resolve_stage(config, index, previous_model="previous-stage"
                                       if index else None))
        except IrdistillError as exc:
            if not exc.message.startswith("config.stages"):
                exc.message = f"config.stages[{index}]: {exc.message}"
            raise
    d, m, t = config.data, config.model, config.train
    get_loss(config.loss)
    check_loss_params(config.loss, config.loss_params)
    _choice("data mode", d.mode, MODES)  # the wording of irdistill.data.sampling
    _choice("data.sampling", d.sampling, SAMPLINGS)
    check_mining(d)
    _at_least("data.max_memory_gb", d.max_memory_gb, 0, strict=True)
    _choice("attention implementation", m.attn_implementation, ATTN_IMPLEMENTATIONS)
    _choice("model.truncation", m.truncation, TRUNCATIONS)
    _choice("train.precision", t.precision, TRAINING_PRECISIONS)
    _choice("train.on_nan", t.on_nan, ON_NAN)
    _choice("train.scheduler", t.scheduler, [s.value for s in SchedulerType])
    for where, value in (("data.depth", d.depth), ("data.negatives", d.negatives),
                         ("data.max_queries", d.max_queries),
                         ("model.num_hidden_layers", m.num_hidden_layers),
                         ("model.max_query_length", m.max_query_length),
                         ("model.max_doc_length", m.max_doc_length),
                         ("train.batch_size", t.batch_size), ("train.grad_accum", t.grad_accum),
                         ("train.save_steps", t.save_steps),
                         ("train.logging_steps", t.logging_steps)):
        _at_least(where, value, 1)
    _at_least("train.epochs", t.epochs, 0, strict=True)
    _at_least("train.lr", t.lr, 0)  # 0 is a frozen model (or part: head_lr=0)
    _at_least("train.head_lr", t.head_lr, 0)
    _at_least("train.weight_decay", t.weight_decay, 0)
    _at_least("train.max_grad_norm", t.max_grad_norm, 0)
    _at_least("train.num_workers", t.num_workers, 0)
    _at_least("train.forward_tokens", t.forward_tokens, 0)
    _at_least("train.freeze_domain_layers", t.freeze_domain_layers, 0)
    check_trackers(t.report_to)
    if t.lora is not None:
        _at_least("train.lora.r", t.lora.r, 1)
        _at_least("train.lora.alpha", t.lora.alpha, 0, strict=True)
        if not 0 <= t.lora.dropout < 1:
            raise IrdistillError(f"train.lora.dropout={t.lora.dropout} must be in [0, 1)")
        if t.freeze_domain_layers is not None:
            raise IrdistillError("train.lora and train.freeze_domain_layers do not go together",
                                 hint="LoRA already leaves the pre-trained weights fixed")
    if not 0 <= t.warmup_ratio < 1:
        raise IrdistillError(f"train.warmup_ratio={t.warmup_ratio} must be in [0, 1)")
    if t.max_steps == 0 or t.max_steps < -1:
        raise IrdistillError(f"train.max_steps={t.max_steps} must be positive (or -1: use "
                             "train.epochs)")
    check_evaluation(config)
    if t.max_minutes is not None:
        _at_least("train.max_minutes", t.max_minutes, 0, strict=True)
        if t.scheduler not in TIME_SCHEDULERS:
            raise IrdistillError(
                f"train.scheduler={t.scheduler} cannot follow a time budget (train.max_minutes)",
                hint=f"use one of {', '.join(TIME_SCHEDULERS)}, or train.max_steps instead of "
                     "train.max_minutes")
    return config


def check_trackers(names: list[str]) -> None:
    """``train.report_to`` names integrations of the Hugging Face Trainer."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK  # as above

    for name in names:
        _choice("tracker (train.report_to)", name, INTEGRATION_TO_CALLBACK)


def dev_source(d: DataConfig) -> str | None:
    """Which ``data.dev_*`` key names the held-out queries (None: no evaluation)."""
    given = [k for k in ("dev_fraction", "dev_queries", "dev_collection")
             if getattr(d, k) is not None]
    if len(given) > 1:
        raise IrdistillError(f"data.{given[0]} and data.{given[1]} both name dev queries",
                             hint="keep one of data.dev_fraction, data.dev_queries and "
                                  "data.dev_collection")
    return given[0] if given else None


def check_not_evaluated(config: Any, what: str) -> None:
    """Raise if ``config`` (any config with ``data``/``train`` sections) asks for evaluation
    during training or a time budget, which ``what`` (e.g. SPLADE training) does not do yet."""
    d, t = config.data, config.train
    for key, value in (("data.dev_fraction", d.dev_fraction), ("data.dev_queries", d.dev_queries),
                       ("data.dev_collection", d.dev_collection), ("train.eval_steps",
                       t.eval_steps), ("train.keep_best", t.keep_best),
                       ("train.early_stopping_patience", t.early_stopping_patience),
                       ("train.max_minutes", t.max_minutes)):
        if value:
            raise IrdistillError(f"{key} is not supported by {what} yet",
                                 hint=f"remove {key}; cross-encoder training (irdistill train) "
                                      "has it")


def check_evaluation(config: Config) -> None:
    """The keys of evaluation during training (see :mod:`irdistill.train.dev`) fit together."""
    from irdistill.data.sampling import mode_source  # as in check_config
    from irdistill.evaluation.metrics import parse_measures  # as above

    d, t = config.data, config.train
    source = dev_source(d)
    no_dev = ("name the queries to evaluate: e.g. --set data.dev_fraction=0.1 (held out of the "
              "training queries) or --set data.dev_collection=beir/scifact/test")
    if d.dev_fraction is not None and not 0 < d.dev_fraction < 1:
        raise IrdistillError(f"data.dev_fraction={d.dev_fraction} must be between 0 and 1",
                             hint="e.g. 0.1 holds out a tenth of the training queries")
    if d.dev_queries is not None and not d.dev_queries:
        raise IrdistillError("data.dev_queries is empty", hint="list query ids, or give a file")
    if d.dev_split is not None and d.dev_collection is None:
        raise IrdistillError("data.dev_split needs data.dev_collection",
                             hint="e.g. --set data.dev_collection=FOLDER --set data.dev_split=dev")
    if d.dev_run is not None and source is None:
        raise IrdistillError("data.dev_run is set but no dev queries are", hint=no_dev)
    if source in ("dev_fraction", "dev_queries") and mode_source(d.mode) == "triples":
        raise IrdistillError(f"data.{source} holds queries out of the training groups, which "
                             f"data.mode={d.mode} streams", hint="evaluate on another "
                             "collection: --set data.dev_collection=... (and data.dev_run)")
    for where, value in (("train.eval_steps", t.eval_steps), ("train.eval_depth", t.eval_depth),
                         ("train.early_stopping_patience", t.early_stopping_patience)):
        _at_least(where, value, 1)
    parse_measures([t.eval_measure])
    if source is None:
        for key, value in (("train.eval_steps", t.eval_steps), ("train.keep_best", t.keep_best),
                           ("train.early_stopping_patience", t.early_stopping_patience)):
            if value:
                raise IrdistillError(f"{key} needs evaluation during training, and no dev "
                                     "queries are set", hint=no_dev)
    if t.eval_steps is None:
        for key, value in (("train.keep_best", t.keep_best),
                           ("train.early_stopping_patience", t.early_stopping_patience)):
            if value:
                raise IrdistillError(f"{key} needs evaluations during training; without "
                                     "train.eval_steps the model is evaluated at the end only",
                                     hint="e.g. --set train.eval_steps=100")


def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arm in typing.get_args(tp):
            if arm is type(None):
                if value is None:
                    return None
                continue
            try:
                return _check_type(value, arm, where)
            except IrdistillError as exc:
                errors.append(exc)
        raise errors[0] if errors else IrdistillError(f"{where}: unexpected value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise IrdistillError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise IrdistillError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is list or tp is list:
        if not isinstance(value, list):
            raise IrdistillError(f"{where}: expected a list, got {value!r}")
        (inner,) = typing.get_args(tp) or (Any,)
        return [_check_type(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads '1e-5' as a string
            return float(value)
        except ValueError:
            pass
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise IrdistillError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys with a suggestion."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            prefix = where.removeprefix("config").lstrip(".")
            raise IrdistillError(f"unknown config key '{prefix + '.' if prefix else ''}{key}'",
                                 hint=suggest(key, names))
        kwargs[key] = _check_type(value, hints[key], f"{where}.{key}")
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise IrdistillError(f"cannot set '{dotted}': '{key}' is not a section")
    node[keys[-1]] = value


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """``["train.lr=1e-5", "loss=bce"]`` -> nested dict (values parsed as YAML scalars)."""
    tree: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise IrdistillError(f"override '{item}' is not of the form key=value",
                                 hint="e.g. --set train.lr=1e-5")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _set_path(tree, key.strip(), value)
    return tree


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "loss_params":
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = check_input_file(path, "config file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise IrdistillError("config is not valid UTF-8", path=path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise IrdistillError(f"invalid YAML: {getattr(exc, 'problem', exc)}", path=path,
                             line=mark.line + 1 if mark else None) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise IrdistillError("config must be a YAML mapping of keys to values", path=path)
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                cls: type[T] = Config, base: dict[str, Any] | None = None) -> T:
    """Defaults, then ``base``, then the YAML file, then ``--set`` overrides."""
    data = dict(base or {})
    if path is not None:
        try:
            data = merge(data, read_yaml(path))
            return from_dict(cls, merge(data, parse_overrides(overrides)))
        except IrdistillError as exc:
            if exc.path is None:
                exc.path = str(path)
            raise
    return from_dict(cls, merge(data, parse_overrides(overrides)))


#: keys added after configs were first hashed, left out of the hash while they keep the value
#: that means "as before", so folders named by older hashes stay valid
HASH_NEUTRAL = {("train", "group_by_length"): False, ("model", "truncation"): "segments", ("train", "forward_tokens"): None,
                # how dropout masks are drawn, not the recipe: configs hash as before it existed
                ("train", "fast_dropout"): True,
                # how the last layer is computed, not the model: as above
                ("model", "cls_only_last_layer"): True,
                # evaluation during training and the time budget (off by default)
                ("data", "dev_fraction"): None, ("data", "dev_queries"): None,
                ("data", "dev_collection"): None, ("data", "dev_split"): None,
                ("data", "dev_run"): None, ("train", "eval_steps"): None,
                ("train", "eval_depth"): 100, ("train", "eval_measure"): "nDCG@10",
                ("train", "keep_best"): False, ("train", "early_stopping_patience"): None,
                ("train", "max_minutes"): None, ("train", "freeze_domain_layers"): None,
                ("train", "lora"): None,
                # hard-negative mining in labels mode, off: the groups of before it existed
                ("data", "negatives_range"): None, ("data", "false_negative_margin"): None,
                ("data", "false_negative_relative_margin"): None,
                # a memory guard, not the recipe
                ("data", "max_memory_gb"): None}


#: keys never hashed, whatever their value: where the figures are also sent, not what is
#: trained (a run resumed with a tracker added is the same run)
HASH_IGNORED = {("train", "report_to")}


def hashed_tree(tree: Any, neutral: dict | None = None, ignored: set | None = None) -> Any:
    """``tree`` as hashed: the keys of ``ignored`` (:data:`HASH_IGNORED`) and the neutral values
    of ``neutral`` (:data:`HASH_NEUTRAL`) left out, in every section that has them, at any depth
    (a SPLADE adaptation config holds its training config under ``source``)."""
    neutral = HASH_NEUTRAL if neutral is None else neutral
    ignored = HASH_IGNORED if ignored is None else ignored
    if not isinstance(tree, dict):
        return tree
    out = {}
    for name, value in tree.items():
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if (name, k) not in ignored
                     and not ((name, k) in neutral and v == neutral[(name, k)])}
            value = hashed_tree(value, neutral, ignored)
        out[name] = value
    return out


def tree_hash(tree: Any, neutral: dict | None = None, ignored: set | None = None) -> str:
    """The 12-hex-digit hash of a (JSON-able) settings tree, as :func:`config_hash` makes it."""
    return stable_hash(hashed_tree(tree, neutral, ignored), length=12)


def config_hash(config: Any) -> str:
    """Hash of the resolved config: same settings, same hash (key order does not matter)."""
    return tree_hash(to_dict(config) if dataclasses.is_dataclass(config) else config)


def dump_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)
