"""The LLM teacher: windows, RankZephyr's prompt, parsing of crafted answers, batching of window
positions across queries, both backends (transformers with a tiny random Llama; vLLM through a
stand-in module, as vLLM needs a GPU), resume, and training on the LLM's ranking."""
import json
import sys
import types

import pytest
from typer.testing import CliRunner

from irdistill.cli import app
from irdistill.errors import IrdistillError
from irdistill.teachers.llm import (BODY, PREFIX, SUFFIX, SYSTEM_MESSAGE, LlmSettings, ParseStats,
                                    Prompter, TransformersBackend, build_messages, llm_rerank,
                                    load_backend, parse_permutation, window_spans)

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


# -- windows -------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,window,stride,spans", [
    (100, 20, 10, [(80, 100), (70, 90), (60, 80), (50, 70), (40, 60), (30, 50), (20, 40),
                   (10, 30), (0, 20)]),
    (25, 20, 10, [(5, 25), (0, 15)]),
    (20, 20, 10, [(0, 20)]),
    (5, 3, 2, [(2, 5), (0, 3)]),
    (7, 3, 3, [(4, 7), (1, 4), (0, 1)]),
    (1, 20, 10, []),
])
def test_window_spans_bottom_up(n, window, stride, spans):
    assert window_spans(n, window, stride) == spans
    covered = {i for s, e in spans for i in range(s, e)}
    assert covered == set(range(n)) if n > 1 else not spans


@pytest.mark.parametrize("window,stride,words", [(20, 0, "stride"), (20, 21, "stride"),
                                                 (1, 1, "window")])
def test_window_settings_are_checked(window, stride, words):
    with pytest.raises(IrdistillError, match=words):
        window_spans(10, window, stride)


# -- parsing crafted answers ---------------------------------------------------------------------
@pytest.mark.parametrize("text,size,order,counts", [
    ("[2] > [3] > [1]", 3, [1, 2, 0], dict(given=3)),
    ("[2] > [2] > [1] > [3]", 3, [1, 0, 2], dict(given=3, duplicates=1)),
    ("[3] > [1]", 4, [2, 0, 1, 3], dict(given=2, missing=2)),
    ("[5] > [0] > [2] > [1]", 3, [1, 0, 2], dict(given=2, out_of_range=2, missing=1)),
    ("Sure! Here is the ranking: [2] > [1]", 2, [1, 0], dict(given=2, junk=5)),
    ("2 > 1 > 3", 3, [1, 0, 2], dict(given=3, unbracketed=True)),
    ("I cannot rank these passages.", 3, [0, 1, 2], dict(given=0, missing=3, junk=5)),
    ("", 2, [0, 1], dict(given=0, missing=2)),
    ("［２］ > ［１］", 2, [1, 0], dict(given=2)),
    ("<think>[1] > [2] seems fine</think>[2] > [1]", 2, [1, 0], dict(given=2)),
    ("[3]>[1]>[2]", 3, [2, 0, 1], dict(given=3)),
    ("[ 2 ] > [1], [3];", 3, [1, 0, 2], dict(given=3)),
])
def test_parse_permutation_of_crafted_answers(text, size, order, counts):
    parsed = parse_permutation(text, size)
    assert parsed.order == order
    assert sorted(parsed.order) == list(range(size))
    expected = dict(given=0, duplicates=0, out_of_range=0, missing=0, junk=0, unbracketed=False)
    expected.update(counts)
    got = {k: getattr(parsed, k) for k in expected}
    assert got == expected
    assert parsed.clean == (expected == dict(expected, duplicates=0, out_of_range=0, missing=0,
                                             junk=0, unbracketed=False))


def test_parse_stats_add_up():
    stats = ParseStats()
    for text in ("[2] > [1]", "[1] > [1]", "nothing"):
        stats.add(parse_permutation(text, 2))
    assert stats.to_dict() == {"windows": 3, "clean": 1, "unusable": 1, "unbracketed": 0,
                               "duplicates": 1, "out_of_range": 0, "missing": 3, "junk": 1}
    other = ParseStats()
    other.merge(stats.to_dict())
    other.merge(stats)
    assert other.windows == 6 and other.missing == 6
    assert "3 windows: 1 clean, 1 unusable" in stats.summary()


# -- the prompt ----------------------------------------------------------------------------------
def test_prompt_is_rankzephyrs():
    messages = build_messages("what is [1] cell", ["Cells are small.", "See [2] for dogs."])
    assert messages[0] == {"role": "system", "content": "You are RankLLM, an intelligent assistant "
                           "that can rank passages based on their relevancy to the query"}
    assert messages[1]["role"] == "user"
    assert messages[1]["content"] == (
        "I will provide you with 2 passages, each indicated by a numerical identifier []. Rank "
        "the passages based on their relevance to the search query: what is (1) cell.\n"
        "[1] Cells are small.\n"
        "[2] See (2) for dogs.\n"
        "Search Query: what is (1) cell.\n"
        "Rank the 2 passages above based on their relevance to the search query. All the "
        "passages should be included and listed using identifiers, in descending order of "
        "relevance. The output format should be [] > [], e.g., [2] > [1], Answer concisely and "
        "directly and only respond with the ranking results, do not say any word or explain.")
    assert SYSTEM_MESSAGE in messages[0]["content"] and "{rank}" in BODY
    assert "{query}" in PREFIX and "{num}" in SUFFIX
    assert build_messages("q", ["p"], system_message=None)[0]["role"] == "user"


# -- a tiny causal LM, built offline -------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    """A 2-layer, 32-wide random Llama with a byte-level BPE tokenizer trained here, which puts
    BOS first (no chat template: the Zephyr template is used). Its answers are noise."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = [PREFIX, SUFFIX, SYSTEM_MESSAGE, " > ".join(f"[{i}]" for i in range(1, 21)),
              "The cell is the basic unit of life. Dogs are loyal animals that bark."] * 5
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.post_processor = processors.TemplateProcessing(  # BOS first, as Llama's tokenizer does
        single="<s> $A", special_tokens=[("<s>", bpe.token_to_id("<s>"))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=4096, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    folder = tmp_path_factory.mktemp("tiny-llm")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_prompter_renders_with_the_chat_template_and_fits_the_context(tiny_llm):
    from transformers import AutoTokenizer


    tokenizer = AutoTokenizer.from_pretrained(tiny_llm)
    long_passages = [" ".join(f"word{i}" for i in range(400)) for _ in range(3)]
    roomy = Prompter(tokenizer, LlmSettings(context_size=100_000))
    text = tokenizer.decode(roomy.render("a query", long_passages))
    assert text.startswith("<s><|system|>\nYou are RankLLM")  # BOS once, then Zephyr's template
    assert "</s>\n<|user|>\nI will provide you with 3 passages" in text
    assert text.endswith("do not say any word or explain.</s>\n<|assistant|>\n")
    assert text.count("<s>") == 1
    assert "word1999" not in text and "word1" in text  # 300 * 20 / 3 = 2000 words at most
    assert roomy.encode("<s>already has BOS").count(tokenizer.bos_token_id) == 1
    tight = Prompter(tokenizer, LlmSettings(context_size=1500))
    ids = tight.render("a query", long_passages)
    assert len(ids) + tight.answer_tokens(3) <= 1500
    assert len(ids) > 1000  # cut to fit, not to nothing
    with pytest.raises(IrdistillError, match="does not fit 50 tokens"):
        Prompter(tokenizer, LlmSettings(context_size=50)).render("a query", long_passages)
    assert roomy.answer_tokens(3) == len(tokenizer("[1] > [2] > [3]", add_special_tokens=False)
                                         ["input_ids"])


class ScriptedBackend:
    """Answers every window by reversing it, and records each generate call."""

    name = "scripted"
    model_name = "scripted"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.calls = []

    def generate(self, prompts, max_new_tokens):
        answers = []
        for ids in prompts:
            text = self.tokenizer.decode(ids)
            num = int(text.split("I will provide you with ")[1].split(" ")[0])
            answers.append(" > ".join(f"[{i}]" for i in range(num, 0, -1)))
        self.calls.append((len(prompts), list(max_new_tokens)))
        return answers


def test_window_positions_of_all_queries_are_one_batch(tiny_llm, beir_folder, tmp_path):
    from transformers import AutoTokenizer

    from irdistill.data.collection import load_collection

    collection = load_collection(beir_folder, "test")
    run = {"q1": {"d1": 4, "d2": 3, "d3": 2, "d4": 1}, "q2": {"d4": 4, "d3": 3, "d2": 2}}
    backend = ScriptedBackend(AutoTokenizer.from_pretrained(tiny_llm))
    result = llm_rerank(backend, collection, run, depth=4,
                        settings=LlmSettings(window=3, stride=2), show_progress=False)
    # q1: spans (1,4),(0,2); q2: (0,3). Position 0 has both queries' windows, position 1 one.
    assert [n for n, _ in backend.calls] == [2, 1]
    # q1: [d1 d2 d3 d4] -> reverse 1..4 -> [d1 d4 d3 d2] -> reverse 0..2 -> [d4 d1 d3 d2]
    assert result.orders == {"q1": ["d4", "d1", "d3", "d2"], "q2": ["d2", "d3", "d4"]}
    assert result.run["q1"] == {"d4": 4.0, "d1": 3.0, "d3": 2.0, "d2": 1.0}  # depth - rank + 1
    assert result.run["q2"] == {"d2": 4.0, "d3": 3.0, "d4": 2.0}
    assert result.stats.windows == 3 and result.stats.clean == 3
    answer_tokens = backend.calls[0][1]
    assert answer_tokens[0] == answer_tokens[1] > backend.calls[1][1][0]  # 3 ids, then 2


def test_llm_checkpoint_of_other_settings_is_refused_and_a_cut_record_dropped(
        tiny_llm, beir_folder, tmp_path):
    from transformers import AutoTokenizer

    from irdistill.data.collection import load_collection
    from irdistill.io import read_jsonl_checkpoint

    collection = load_collection(beir_folder, "test")
    run = {"q1": {"d1": 4, "d2": 3, "d3": 2, "d4": 1}, "q2": {"d4": 4, "d3": 3, "d2": 2}}
    backend = ScriptedBackend(AutoTokenizer.from_pretrained(tiny_llm))
    partial = tmp_path / "llm.partial.jsonl"
    first = llm_rerank(backend, collection, run, depth=4, settings=LlmSettings(window=3, stride=2),
                       checkpoint=partial, block_queries=1, show_progress=False)
    records = read_jsonl_checkpoint(partial)
    assert "__irdistill__" in records[0] and len(records) == 3  # identity, then one per query
    # a kill while the last record was written: the cut line is dropped, q2 is done again
    text = partial.read_text()
    partial.write_text(text[:len(text) - 10])
    backend.calls.clear()
    again = llm_rerank(backend, collection, run, depth=4, settings=LlmSettings(window=3, stride=2),
                       checkpoint=partial, block_queries=1, show_progress=False)
    assert again.orders == first.orders and [n for n, _ in backend.calls] == [1]  # q2 only
    # the same file with another window size: refused, not mixed in
    with pytest.raises(IrdistillError, match=r"other settings \(stride, window differ\)"):
        llm_rerank(backend, collection, run, depth=4, settings=LlmSettings(window=2, stride=1),
                   checkpoint=partial, show_progress=False)


def test_tiny_llm_end_to_end_with_resume_and_training(tiny_llm, tiny_bert, beir_folder, tmp_path):
    candidates = tmp_path / "cands.trec"
    candidates.write_text("".join(f"{q} Q0 {d} {r} {5 - r} bm25\n" for q in ("q1", "q2")
                                  for r, d in enumerate(["d1", "d2", "d3", "d4"], start=1)))
    out = tmp_path / "llm.trec"
    # q1 was finished before an interruption: its order is in the checkpoint and is kept
    partial = tmp_path / "llm.trec.partial.jsonl"
    partial.write_text(json.dumps({"q1": {"order": ["d4", "d3", "d2", "d1"], "stats": {
        "windows": 2, "clean": 2}}}) + "\n")
    result = invoke("teach", "llm", tiny_llm, beir_folder, "--split", "test", "--run", candidates,
                    "--depth", 4, "--window", 3, "--stride", 2, "--backend", "transformers",
                    "--batch-size", 2, "--max-passage-words", 20, "--save-generations",
                    "--output", out)
    assert result.exit_code == 0, result.output
    assert "LLM answers: 4 windows" in result.output and f"to {out}" in result.output
    from irdistill.data.trec import ranked, read_run

    run = read_run(out)
    assert [d for d, _ in ranked(run["q1"])] == ["d4", "d3", "d2", "d1"]  # from the checkpoint
    assert sorted(run["q2"]) == ["d1", "d2", "d3", "d4"]
    assert sorted(run["q2"].values()) == [1.0, 2.0, 3.0, 4.0]
    assert not partial.exists()
    generations = [json.loads(l) for l in (tmp_path / "llm.generations.jsonl").read_text()
                   .splitlines()]
    assert [(g["query"], g["start"], g["end"]) for g in generations] == [("q2", 1, 4), ("q2", 0, 2)]
    provenance = json.loads((tmp_path / "llm.provenance.json").read_text())
    assert provenance["kind"] == "llm" and provenance["backend"] == "transformers"
    assert (provenance["window"], provenance["stride"], provenance["depth"]) == (3, 2, 4)
    assert provenance["prompt"]["system"] == SYSTEM_MESSAGE
    parsing = provenance["parsing"]
    # the merged statistics: the checkpoint's (2 windows, 2 clean) plus those of q2's two
    # answers, parsed again here from the saved generations
    from irdistill.teachers.llm import ParseStats, parse_permutation

    expected = ParseStats()
    expected.merge({"windows": 2, "clean": 2})
    for g in generations:
        expected.add(parse_permutation(g["text"], g["end"] - g["start"]))
    assert parsing == expected.to_dict() and parsing["windows"] == 4

    # the LLM's ranking trains a student as it is (teacher_ranks, RankNet)
    train_out = tmp_path / "student"
    trained = invoke("train", "--output", train_out, "--set", f"model.name={tiny_bert}",
                     "--set", f"data.collection={beir_folder}", "--set", "data.split=test",
                     "--set", "data.mode=teacher_ranks", "--set", f"data.teacher_run={out}",
                     "--set", "data.force_positive=false", "--set", "data.negatives=3",
                     "--set", "data.depth=4", "--set", "loss=ranknet",
                     "--set", "train.max_steps=1", "--set", "train.batch_size=2",
                     "--set", "train.warmup_ratio=0", "--set", "train.logging_steps=1")
    assert trained.exit_code == 0, trained.output
    logged = [json.loads(l) for l in (train_out / "train_log.jsonl").read_text().splitlines()]
    assert [s["grad_norm"] > 0 for s in logged if "loss" in s] == [True]


def test_transformers_backend_batches_by_answer_length(tiny_llm):
    backend = TransformersBackend.from_pretrained(tiny_llm, batch_size=2, device="cpu")
    prompts = [backend.tokenizer("a b c")["input_ids"], backend.tokenizer("a")["input_ids"],
               backend.tokenizer("a b c d e f")["input_ids"]]
    answers = backend.generate(prompts, [3, 5, 3])
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    alone = backend.generate([prompts[0]], [3])
    assert alone[0] == answers[0]  # left padding leaves a prompt's greedy answer unchanged


def test_vllm_backend_gets_token_ids_and_greedy_params(monkeypatch, tiny_llm):
    from transformers import AutoTokenizer

    calls = {}

    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class LLM:
        def __init__(self, **kwargs):
            calls["init"] = kwargs

        def get_tokenizer(self):
            return AutoTokenizer.from_pretrained(tiny_llm)

        def generate(self, prompts, params, use_tqdm=True):
            calls["generate"] = (prompts, [p.kwargs for p in params], use_tqdm)
            out = types.SimpleNamespace
            return [out(outputs=[out(text=f"[{len(p['prompt_token_ids'])}]")]) for p in prompts]

    import importlib.machinery

    fake = types.ModuleType("vllm")
    fake.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    fake.LLM, fake.SamplingParams = LLM, SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", fake)
    backend = load_backend("castorini/rank_zephyr_7b_v1_full", "vllm", precision="bf16",
                           context_size=4096, tensor_parallel_size=2)
    assert calls["init"] == {"model": "castorini/rank_zephyr_7b_v1_full", "dtype": "bfloat16",
                             "tensor_parallel_size": 2, "max_model_len": 4096,
                             "gpu_memory_utilization": 0.9}
    assert backend.generate([[1, 2, 3], [4]], [7, 9]) == ["[3]", "[1]"]
    prompts, params, use_tqdm = calls["generate"]
    assert prompts == [{"prompt_token_ids": [1, 2, 3]}, {"prompt_token_ids": [4]}]
    assert params == [{"temperature": 0.0, "max_tokens": 7, "min_tokens": 7},
                      {"temperature": 0.0, "max_tokens": 9, "min_tokens": 9}]
    assert use_tqdm is False


def test_vllm_missing_is_one_line_error(tmp_path, beir_folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import fails as when it is not installed
    result = invoke("teach", "llm", "castorini/rank_zephyr_7b_v1_full", beir_folder, "--split",
                    "test", "--backend", "vllm", "--depth", 3, "--output", tmp_path / "x.trec")
    assert result.exit_code == 2
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) == 1 and "needs the vllm package" in lines[0] and "--backend" in lines[0]


def test_auto_backend_without_vllm_is_transformers(tiny_llm, monkeypatch):
    monkeypatch.setattr("irdistill.teachers.llm.vllm_available", lambda: False)
    assert load_backend(tiny_llm, "auto", device="cpu").name == "transformers"


@pytest.mark.parametrize("args,words", [
    (["--stride", "30"], "stride must be between 1 and the window (20), got 30"),
    (["--backend", "vlm"], "unknown backend 'vlm' (did you mean 'vllm'?)"),
])
def test_llm_command_errors(tmp_path, beir_folder, tiny_llm, args, words):
    result = invoke("teach", "llm", tiny_llm, beir_folder, "--split", "test", "--output",
                    tmp_path / "x.trec", *args)
    assert result.exit_code == 2, result.output
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0] == f"error: {words}", result.output
    assert not (tmp_path / "x.trec").exists()


def test_auto_precision_loads_the_weights_the_device_does_natively(tiny_llm, monkeypatch):
    import torch

    import irdistill.models.runtime as cross_encoder

    for native, dtype in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(cross_encoder, "cpu_has_native_bf16", lambda n=native: n)
        backend = TransformersBackend.from_pretrained(tiny_llm, device="cpu", precision="auto")
        assert next(backend.model.parameters()).dtype == dtype
    with pytest.raises(IrdistillError, match="choose fp32, bf16, fp16 or auto"):
        TransformersBackend.from_pretrained(tiny_llm, device="cpu", precision="bf61")


def test_sharded_llm_teacher_merged_equals_one_process(tiny_llm, beir_folder, tmp_path):
    candidates = tmp_path / "cands.trec"
    candidates.write_text("".join(f"{q} Q0 {d} {r} {5 - r} bm25\n" for q in ("q1", "q2")
                                  for r, d in enumerate(["d1", "d2", "d3", "d4"], start=1)))
    common = ["teach", "llm", tiny_llm, str(beir_folder), "--split", "test", "--run",
              str(candidates), "--depth", "4", "--window", "3", "--stride", "2", "--backend",
              "transformers", "--batch-size", "1", "--max-passage-words", "20"]
    runner = CliRunner()
    one = runner.invoke(app, [*common, "-o", str(tmp_path / "one.trec")])
    assert one.exit_code == 0, one.output
    for i in range(2):
        result = runner.invoke(app, [*common, "--shard", f"{i}/2",
                                     "-o", str(tmp_path / f"part{i}.trec")])
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["teach", "merge", str(tmp_path / "part0.trec"),
                                 str(tmp_path / "part1.trec"), "-o", str(tmp_path / "all.trec")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "all.trec").read_bytes() == (tmp_path / "one.trec").read_bytes()
    alone = runner.invoke(app, ["teach", "merge", str(tmp_path / "part0.trec"),
                                "-o", str(tmp_path / "half.trec")])
    assert alone.exit_code == 2 and "missing [1]" in alone.output  # a shard left out
    assert {line.split()[0] for line in (tmp_path / "part0.trec").read_text().splitlines()} \
        == {"q1"}  # every second query: q1 | q2
