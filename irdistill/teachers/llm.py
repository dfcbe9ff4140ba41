"""Listwise LLM teachers: RankZephyr's prompt, sliding windows, robust parsing, two backends.

Rank-DistiLLM (arXiv 2405.07920) distils the ranking that RankZephyr
(``castorini/rank_zephyr_7b_v1_full``) gives the top-100 candidates of each training query. The
LLM reads a window of passages and answers with a permutation (``[2] > [1] > ...``); windows slide
over the candidates from the bottom up (RankGPT), so strong documents rise to the top:

* **Prompt** (:data:`SYSTEM_MESSAGE`, :data:`PREFIX`, :data:`BODY`, :data:`SUFFIX`): RankZephyr's
  prompt as rank_llm builds it (its ``rank_zephyr_template.yaml``): a system message, then one
  user message ``PREFIX + BODY * n + SUFFIX``, rendered with the tokenizer's chat template
  (Zephyr's own template for RankZephyr; :data:`ZEPHYR_CHAT_TEMPLATE` when a tokenizer has none).
  As in rank_llm, ``[n]`` inside query and passages becomes ``(n)``, each passage keeps its first
  ``max_passage_words * 20 / window`` words, and passages are cut further (to the most words
  that fit) until the prompt and the answer fit ``context_size`` tokens.
* **Windows** (:func:`window_spans`): window 20, stride 10 by default: candidates 80-100, then
  70-90, ..., 0-20 of a top-100, each window applied to the order the previous one left.
* **Batching**: the windows of one query depend on each other, so the windows at position ``p``
  of all queries of a block are generated together as one batch (position 0 = the bottom window).
* **Parsing** (:func:`parse_permutation`): ids in brackets (bare numbers if the answer has no
  bracket), duplicates removed, out-of-range ids ignored, missing ids appended in their prior
  order, any other text ignored; every case is counted (:class:`ParseStats`) and reported.
* **Output**: a run in the LLM's order with scores ``depth - rank + 1``, the targets of the
  ``teacher_ranks`` data mode (RankNet, ADR-MSE).

Backends: Hugging Face transformers (``generate``, greedy, left padding, prompts of a batch sorted
by length), and vLLM (``LLM.generate`` with ``temperature=0``) when it is installed. Both get the
same token ids, and both generate exactly as many tokens as the full answer
``[1] > [2] > ... > [n]`` takes, as rank_llm does.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from irdistill.data.collection import Collection
from irdistill.data.trec import Run, ranked, write_run
from irdistill.errors import IrdistillError, unknown_name
from irdistill.io import append_jsonl, read_checkpoint, start_checkpoint
from irdistill.models.runtime import resolve_precision
from irdistill.provenance import candidates_digest, model_fingerprint, write_run_provenance
from irdistill.utils import default_device

log = logging.getLogger(__name__)

SYSTEM_MESSAGE = ("You are RankLLM, an intelligent assistant that can rank passages based on "
                  "their relevancy to the query")
PREFIX = ("I will provide you with {num} passages, each indicated by a numerical identifier []. "
          "Rank the passages based on their relevance to the search query: {query}.\n")
BODY = "[{rank}] {passage}\n"
SUFFIX = ("Search Query: {query}.\nRank the {num} passages above based on their relevance to the "
          "search query. All the passages should be included and listed using identifiers, in "
          "descending order of relevance. The output format should be [] > [], e.g., [2] > [1], "
          "Answer concisely and directly and only respond with the ranking results, do not say "
          "any word or explain.")
# Zephyr's chat template (HuggingFaceH4/zephyr-7b-beta, which RankZephyr keeps), used only for a
# tokenizer that has no chat template of its own.
ZEPHYR_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}")
BACKENDS = ("auto", "transformers", "vllm")
REFERENCE_WINDOW = 20  # rank_llm gives each passage 300 words at window 20, scaled for others


def replace_number(text: str) -> str:
    """``[12]`` -> ``(12)``: a passage must not contain what looks like a passage id."""
    return re.sub(r"\[(\d+)\]", r"(\1)", text)


# -- windows -------------------------------------------------------------------------------------
def window_spans(n: int, window: int = 20, stride: int = 10) -> list[tuple[int, int]]:
    """The ``[start, end)`` spans of the sliding windows over ``n`` candidates, in the order they
    are applied: from the bottom up, each ``stride`` above the last, the last one at the top.

    ``window_spans(100)`` = (80, 100), (70, 90), ..., (0, 20); ``window_spans(25)`` = (5, 25),
    (0, 15). Fewer than two candidates need no window.
    """
    if window < 2:
        raise IrdistillError(f"window must be at least 2, got {window}")
    if not 0 < stride <= window:
        raise IrdistillError(f"stride must be between 1 and the window ({window}), got {stride}")
    if n < 2:
        return []
    spans = []
    end = n
    while True:
        start = max(end - window, 0)
        spans.append((start, end))
        if start == 0:
            return spans
        end -= stride


# -- parsing -------------------------------------------------------------------------------------
BRACKETED = re.compile(r"\[\s*(\d+)\s*\]")
BARE = re.compile(r"(\d+)")
SEPARATORS = re.compile(r"[\s>,;]+")


@dataclass
class Parsed:
    """One window's answer read as a permutation of ``range(size)`` (0-based)."""

    order: list[int]
    given: int  # distinct valid ids in the answer
    duplicates: int  # repeated valid ids (ignored)
    out_of_range: int  # ids outside 1..size (ignored)
    missing: int  # ids never given (appended in their prior order)
    junk: int  # other pieces of text (ignored)
    unbracketed: bool = False  # no id in brackets: bare numbers were read instead

    @property
    def clean(self) -> bool:
        return not (self.duplicates or self.out_of_range or self.missing or self.junk
                    or self.unbracketed)


def parse_permutation(text: str, size: int) -> Parsed:
    """Read an answer such as ``[2] > [3] > [1]`` as a permutation of the window's ``size`` slots.

    Text is NFKC-normalised first (full-width or circled digits become digits), and anything
    before a closing ``</think>`` is dropped. Ids are the numbers in brackets; an answer without
    any bracketed number is read by its bare numbers. Duplicates keep their first place,
    out-of-range ids are ignored, ids never given follow in their prior order, and every other
    piece of text (split at spaces, ``>``, ``,`` and ``;``) is junk. An answer with no usable id
    leaves the window as it was.
    """
    text = unicodedata.normalize("NFKC", text)
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    pattern, unbracketed = BRACKETED, False
    numbers = [int(m) for m in BRACKETED.findall(text)]
    if not numbers:
        numbers = [int(m) for m in BARE.findall(text)]
        pattern, unbracketed = BARE, bool(numbers)
    junk = sum(1 for piece in SEPARATORS.split(pattern.sub(" ", text)) if piece)
    seen: set[int] = set()
    order: list[int] = []
    duplicates = out_of_range = 0
    for number in numbers:
        if not 1 <= number <= size:
            out_of_range += 1
        elif number - 1 in seen:
            duplicates += 1
        else:
            seen.add(number - 1)
            order.append(number - 1)
    missing = [i for i in range(size) if i not in seen]
    return Parsed(order + missing, len(order), duplicates, out_of_range, len(missing), junk,
                  unbracketed)


@dataclass
class ParseStats:
    """Counts over many windows' answers."""

    windows: int = 0
    clean: int = 0  # answers that were exactly a permutation and nothing else
    unusable: int = 0  # answers with no valid id: the window kept its prior order
    unbracketed: int = 0
    duplicates: int = 0
    out_of_range: int = 0
    missing: int = 0
    junk: int = 0

    def add(self, parsed: Parsed) -> None:
        self.windows += 1
        self.clean += parsed.clean
        self.unusable += parsed.given == 0
        self.unbracketed += parsed.unbracketed
        self.duplicates += parsed.duplicates
        self.out_of_range += parsed.out_of_range
        self.missing += parsed.missing
        self.junk += parsed.junk

    def merge(self, other: ParseStats | Mapping[str, int]) -> None:
        values = asdict(other) if isinstance(other, ParseStats) else other
        for key, value in values.items():
            setattr(self, key, getattr(self, key) + int(value))

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def summary(self) -> str:
        return (f"{self.windows} windows: {self.clean} clean, {self.unusable} unusable (order "
                f"kept), {self.unbracketed} without brackets; ignored {self.duplicates} duplicate "
                f"ids, {self.out_of_range} out-of-range ids, {self.junk} junk pieces; appended "
                f"{self.missing} missing ids")


# -- prompts -------------------------------------------------------------------------------------
@dataclass
class LlmSettings:
    window: int = 20
    stride: int = 10
    max_passage_words: int = 300  # at window 20; scaled by 20 / window size as rank_llm does
    context_size: int = 4096  # prompt + answer tokens
    system_message: str = SYSTEM_MESSAGE


def build_messages(query: str, passages: Sequence[str],
                   system_message: str | None = SYSTEM_MESSAGE) -> list[dict[str, str]]:
    """The chat messages of one window (passages already cut to length)."""
    query = replace_number(query)
    num = len(passages)
    body = "".join(BODY.format(rank=i, passage=replace_number(p))
                   for i, p in enumerate(passages, start=1))
    user = PREFIX.format(num=num, query=query) + body + SUFFIX.format(num=num, query=query)
    messages = [{"role": "system", "content": system_message}] if system_message else []
    return messages + [{"role": "user", "content": user}]


def truncate_words(text: str, words: int) -> str:
    return " ".join(text.split()[:max(1, int(words))])


class Prompter:
    """Renders windows to token ids with a tokenizer's chat template, fitting the context."""

    def __init__(self, tokenizer, settings: LlmSettings = LlmSettings()):
        self.tokenizer = tokenizer
        self.settings = settings
        self.chat_template = None
        if not getattr(tokenizer, "chat_template", None):
            log.warning("the tokenizer has no chat template; using Zephyr's")
            self.chat_template = ZEPHYR_CHAT_TEMPLATE
        self._answer_tokens: dict[int, int] = {}

    def answer_tokens(self, num: int) -> int:
        """Tokens of the full answer ``[1] > [2] > ... > [num]``: generated for every window."""
        if num not in self._answer_tokens:
            answer = " > ".join(f"[{i}]" for i in range(1, num + 1))
            self._answer_tokens[num] = len(self.tokenizer(answer, add_special_tokens=False)
                                           ["input_ids"])
        return self._answer_tokens[num]

    def text(self, query: str, passages: Sequence[str], words: float) -> str:
        cut = [truncate_words(p, words) for p in passages]
        messages = build_messages(query, cut, self.settings.system_message)
        return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=True,
                                                  chat_template=self.chat_template)

    def encode(self, text: str) -> list[int]:
        bos = getattr(self.tokenizer, "bos_token", None)
        has_bos = bool(bos) and text.startswith(bos)
        return self.tokenizer(text, add_special_tokens=not has_bos)["input_ids"]

    def render(self, query: str, passages: Sequence[str]) -> list[int]:
        """Token ids of the window's prompt. Passages keep ``max_passage_words * 20 / n`` words
        (as in rank_llm); if prompt + answer exceed the context, they keep the largest number of
        words that fits (found by bisection)."""
        num = len(passages)
        budget = self.settings.context_size - self.answer_tokens(num)
        words = max(1, int(self.settings.max_passage_words * REFERENCE_WINDOW / num))
        ids = self.encode(self.text(query, passages, words))
        if len(ids) <= budget:
            return ids
        low, high, best = 1, words - 1, None
        while low <= high:
            middle = (low + high) // 2
            candidate = self.encode(self.text(query, passages, middle))
            if len(candidate) <= budget:
                best, low = candidate, middle + 1
            else:
                high = middle - 1
        if best is None:
            raise IrdistillError(
                f"a window of {num} passages does not fit {self.settings.context_size} tokens "
                f"even at one word per passage", hint="raise --context-size or lower --window")
        return best


# -- backends ------------------------------------------------------------------------------------
class Backend(Protocol):
    name: str
    model_name: str
    tokenizer: Any

    def generate(self, prompts: list[list[int]], max_new_tokens: list[int], exact: bool = True
                 ) -> list[str]:
        """Greedy answers (text of the new tokens only), one per prompt: exactly
        ``max_new_tokens`` tokens each, or (``exact=False``) up to the end-of-sequence token."""


class TransformersBackend:
    """Greedy generation with a Hugging Face causal or sequence-to-sequence LM (a prompt is
    then the encoder's input), batches of prompts of similar length."""

    name = "transformers"

    def __init__(self, model, tokenizer, batch_size: int = 4, model_name: str = "model"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.model_name = model_name
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.pad_id = tokenizer.pad_token_id
        self.seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, batch_size: int = 4, device: str | None = None,
                        precision: str | None = None) -> TransformersBackend:

        if precision == "auto":  # the best the device does natively, as elsewhere
            precision = resolve_precision(device or default_device(), "auto") or "fp32"
        dtype = {None: None, "fp32": torch.float32, "bf16": torch.bfloat16,
                 "fp16": torch.float16}.get(precision, "bad")
        if dtype == "bad":
            raise IrdistillError(f"unknown precision '{precision}'",
                                 hint="choose fp32, bf16, fp16 or auto")
        try:
            tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            seq2seq = getattr(AutoConfig.from_pretrained(name_or_path), "is_encoder_decoder",
                              False)
            auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
            model = auto.from_pretrained(name_or_path, dtype=dtype)
        except OSError as exc:
            raise IrdistillError(f"cannot load LLM '{name_or_path}': {exc}".splitlines()[0],
                                 hint="give a local folder when offline") from None
        model.to(device or default_device())
        return cls(model, tokenizer, batch_size, model_name=name_or_path)

    def generate(self, prompts: list[list[int]], max_new_tokens: list[int], exact: bool = True
                 ) -> list[str]:
        answers = [""] * len(prompts)
        groups: dict[int, list[int]] = {}
        for i, n in enumerate(max_new_tokens):
            groups.setdefault(n, []).append(i)
        device = next(self.model.parameters()).device
        for n, members in groups.items():
            members.sort(key=lambda i: -len(prompts[i]))
            for start in range(0, len(members), self.batch_size):
                chunk = members[start:start + self.batch_size]
                width = max(len(prompts[i]) for i in chunk)
                ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, i in enumerate(chunk):  # left padding
                    ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
                    mask[row, width - len(prompts[i]):] = 1
                with torch.inference_mode():
                    out = self.model.generate(input_ids=ids.to(device),
                                              attention_mask=mask.to(device),
                                              max_new_tokens=n,
                                              min_new_tokens=n if exact else None,
                                              do_sample=False, pad_token_id=self.pad_id)
                new_tokens = out if self.seq2seq else out[:, width:]
                texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                for i, text in zip(chunk, texts):
                    answers[i] = text
        return answers


class VllmBackend:
    """Greedy generation with vLLM's offline ``LLM`` (GPU); all prompts of a call in one go."""

    name = "vllm"
    seq2seq = False  # causal LMs only (load_backend sends seq2seq models to transformers)

    def __init__(self, name_or_path: str, *, precision: str | None = None,
                 tensor_parallel_size: int = 1, context_size: int = 4096,
                 gpu_memory_utilization: float = 0.9):
        try:
            from vllm import LLM, SamplingParams  # optional dependency: irdistill[vllm]
        except ImportError:
            raise VLLM_MISSING from None
        if precision == "auto":  # the best the GPU does natively, as elsewhere
            precision = resolve_precision("cuda", "auto")
        dtype = {None: "auto", "fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(
            precision)
        if dtype is None:
            raise IrdistillError(f"unknown precision '{precision}'",
                                 hint="choose fp32, bf16, fp16 or auto")
        self.sampling_params = SamplingParams
        self.llm = LLM(model=name_or_path, dtype=dtype, tensor_parallel_size=tensor_parallel_size,
                       max_model_len=context_size, gpu_memory_utilization=gpu_memory_utilization)
        self.tokenizer = self.llm.get_tokenizer()
        self.model_name = name_or_path

    def generate(self, prompts: list[list[int]], max_new_tokens: list[int], exact: bool = True
                 ) -> list[str]:
        params = [self.sampling_params(temperature=0.0, max_tokens=n,
                                       min_tokens=n if exact else 0) for n in max_new_tokens]
        outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params,
                                    use_tqdm=False)
        return [o.outputs[0].text for o in outputs]


def _is_seq2seq(name_or_path: str) -> bool:
    try:
        return bool(getattr(AutoConfig.from_pretrained(name_or_path), "is_encoder_decoder", False))
    except (OSError, ValueError):  # not loadable here: the backend says so when it loads it
        return False


VLLM_MISSING = IrdistillError("the vLLM backend needs the vllm package",
                              hint="pip install vllm on a GPU machine, or use --backend "
                                   "transformers")


def vllm_available() -> bool:
    try:
        return importlib.util.find_spec("vllm") is not None
    except ValueError:  # in sys.modules without a spec (e.g. blocked)
        return False


def check_backend(backend: str) -> None:
    """Fail early on an unknown backend or a vLLM backend without vllm."""
    if backend not in BACKENDS:
        raise unknown_name("backend", backend, BACKENDS)
    if backend == "vllm" and not vllm_available():
        raise VLLM_MISSING


def load_backend(name_or_path: str, backend: str = "auto", *, batch_size: int = 4,
                 device: str | None = None, precision: str | None = None,
                 context_size: int = 4096, tensor_parallel_size: int = 1) -> Backend:
    """``auto``: vLLM when it is installed and a GPU is there, else transformers (always for a
    sequence-to-sequence model, which the vLLM backend does not serve)."""
    check_backend(backend)
    if backend == "auto":
        backend = "vllm" if (vllm_available() and torch.cuda.is_available()
                             and not _is_seq2seq(name_or_path)) else "transformers"
    elif backend == "vllm" and _is_seq2seq(name_or_path):
        raise IrdistillError(f"'{name_or_path}' is a sequence-to-sequence model, which the vLLM "
                             "backend does not serve", hint="use --backend transformers")
    log.info("LLM backend: %s", backend)
    if backend == "vllm":
        return VllmBackend(name_or_path, precision=precision, context_size=context_size,
                           tensor_parallel_size=tensor_parallel_size)
    return TransformersBackend.from_pretrained(name_or_path, batch_size=batch_size, device=device,
                                               precision=precision)


# -- the re-ranking loop -------------------------------------------------------------------------
@dataclass
class LlmRanking:
    run: Run  # the LLM's order, scores depth - rank + 1
    orders: dict[str, list[str]]
    stats: ParseStats
    per_query: dict[str, dict[str, int]] = field(default_factory=dict)


def ranking_identity(backend: Backend, collection: Collection,
                     candidates: Mapping[str, Sequence[str]], settings: LlmSettings) -> dict:
    """What an LLM ranking depends on, to tell whether a partial file belongs to a call."""
    model = backend.model_name
    if Path(model).is_dir():  # a local model: by its files' content
        model = model_fingerprint(model)
    prompt = json.dumps([settings.system_message, PREFIX, BODY, SUFFIX])
    return {"model": model, "collection": collection.name,
            "candidates": candidates_digest(candidates), "window": settings.window,
            "stride": settings.stride, "max_passage_words": settings.max_passage_words,
            "context_size": settings.context_size,
            "prompt": hashlib.sha256(prompt.encode()).hexdigest()[:16]}


def llm_rerank(backend: Backend, collection: Collection, run: Run, *, depth: int = 100,
               settings: LlmSettings = LlmSettings(), checkpoint: str | Path | None = None,
               generations: str | Path | None = None, block_queries: int = 256,
               show_progress: bool = True) -> LlmRanking:
    """Re-rank each query's top-``depth`` of ``run`` with sliding windows of the LLM.

    Queries go in blocks of ``block_queries``; inside a block, window position ``p`` of every
    query is one call of ``backend.generate``. With ``checkpoint``, each finished block is
    appended to that file and a restarted call skips the queries there. With ``generations``,
    every raw answer is appended there as JSON (query, window span, text) for inspection.
    """
    window_spans(2, settings.window, settings.stride)  # check the settings before any work
    candidates = {q: [d for d, _ in ranked(docs, depth)] for q, docs in run.items()}
    qids = sorted(candidates)
    if not qids:
        raise IrdistillError("the run to re-rank is empty")
    queries = collection.query_texts(qids)
    prompter = Prompter(backend.tokenizer, settings)
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    done: dict[str, dict] = {}
    if checkpoint is not None:
        identity = ranking_identity(backend, collection, candidates, settings)
        done = read_checkpoint(checkpoint, identity, "LLM ranking")
        start_checkpoint(checkpoint, identity)
    done = {q: r for q, r in done.items() if q in candidates}
    if done:
        log.info("resuming: %d of %d queries already ranked in %s", len(done), len(qids),
                 checkpoint)
    spans_of = {q: window_spans(len(candidates[q]), settings.window, settings.stride)
                for q in qids}
    bar = tqdm(total=sum(len(s) for s in spans_of.values()),
               initial=sum(len(spans_of[q]) for q in done), desc="LLM windows", unit="window",
               disable=not show_progress)
    for first in range(0, len(qids), block_queries):
        todo = [q for q in qids[first:first + block_queries] if q not in done]
        if not todo:
            continue
        texts = collection.docs.get_many(d for q in todo for d in candidates[q])
        orders = {q: list(candidates[q]) for q in todo}
        stats = {q: ParseStats() for q in todo}
        for position in range(max(len(spans_of[q]) for q in todo)):
            items = [(q, *spans_of[q][position]) for q in todo if position < len(spans_of[q])]
            if not items:
                continue
            prompts = [prompter.render(queries[q], [texts[d] for d in orders[q][s:e]])
                       for q, s, e in items]
            answers = backend.generate(prompts, [prompter.answer_tokens(e - s)
                                                 for _, s, e in items])
            for (q, s, e), answer in zip(items, answers):
                parsed = parse_permutation(answer, e - s)
                stats[q].add(parsed)
                window = orders[q][s:e]
                orders[q][s:e] = [window[i] for i in parsed.order]
            if generations is not None:
                for (q, s, e), answer in zip(items, answers):
                    append_jsonl(Path(generations), {"query": q, "start": s, "end": e, "text": answer})
            bar.update(len(items))
        finished = {q: {"order": orders[q], "stats": stats[q].to_dict()} for q in todo}
        if checkpoint is not None:
            append_jsonl(checkpoint, finished)
        done.update(finished)
    bar.close()
    total = ParseStats()
    for q in qids:
        total.merge(done[q]["stats"])
    orders = {q: done[q]["order"] for q in qids}
    out = {q: {d: float(depth - r) for r, d in enumerate(order)} for q, order in orders.items()}
    return LlmRanking(out, orders, total, {q: done[q]["stats"] for q in qids})


def llm_teacher(backend: Backend, collection: Collection, run: Run, output: str | Path, *,
                depth: int = 100, settings: LlmSettings = LlmSettings(), source: str = "run",
                save_generations: bool = False, block_queries: int = 256,
                show_progress: bool = True, shard: tuple[int, int] | None = None
                ) -> LlmRanking:
    """Rank with :func:`llm_rerank` and write ``output`` (a TREC run in the LLM's order, scores
    ``depth - rank + 1``) and its provenance (model, backend, prompt, windows, parse counts).
    ``output.partial.jsonl`` holds finished queries while it works, so a rerun resumes."""
    output = Path(output)
    partial = output.with_name(output.name + ".partial.jsonl")
    generations = output.with_name(output.stem + ".generations.jsonl") if save_generations else None
    ranking = llm_rerank(backend, collection, run, depth=depth, settings=settings,
                         checkpoint=partial, generations=generations, block_queries=block_queries,
                         show_progress=show_progress)
    write_run(output, ranking.run, tag="llm")
    write_run_provenance(
        output, kind="llm", model=backend.model_name, backend=backend.name,
        collection=collection.name, source_run=source, depth=depth, scores="depth - rank + 1",
        window=settings.window, stride=settings.stride, order="bottom-up sliding windows",
        max_passage_words=settings.max_passage_words, context_size=settings.context_size,
        prompt={"system": settings.system_message, "prefix": PREFIX, "body": BODY,
                "suffix": SUFFIX},
        queries=len(ranking.run), parsing=ranking.stats.to_dict(),
        shard=list(shard) if shard is not None else None,
        generations=str(generations) if generations else None)
    partial.unlink(missing_ok=True)
    log.info("LLM answers: %s", ranking.stats.summary())
    return ranking
