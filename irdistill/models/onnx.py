"""An optional ONNX Runtime backend for cross-encoder inference.

:func:`export_onnx` writes the model as ONNX (inputs ``input_ids``, ``attention_mask`` and, if
the family takes them, ``token_type_ids``; batch and sequence axes dynamic; output the one
score per pair), then, for BERT-like graphs, lets ONNX Runtime's transformer optimizer fuse
attention, GELU and layer norms. The file is cached under a key made of the weights' content
and the export settings, so a model is exported once. :class:`OnnxRunner` scores collated
batches with it. Needs ``pip install onnxruntime onnx`` (extra ``irdistill[onnx]``).

``quantize="int8"`` then quantises the graph dynamically (ONNX Runtime's ``quantize_dynamic``:
the weights of every MatMul stored as int8 with one scale per output channel, activations
quantised per batch at run time), which CPUs with VNNI or AMX-INT8 compute at about twice the
fp32 rate. One scale per channel rather than per tensor matters: on the demo's SciFact
re-ranker, per tensor lost 0.017 nDCG@10, per channel 0.001. Scores move (rankings by a
little): check the ranking against fp32
(:func:`irdistill.rerank.quality.int8_agreement`, what ``irdistill rerank --backend onnx-int8``
reports) before trusting it.

On a CPU without native bf16, ONNX Runtime in fp32 is the fastest fp32 path; where bf16 is
native, PyTorch with ``precision="bf16"`` is faster (see ``benchmarks/speed.py``).
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from irdistill.errors import IrdistillError
from irdistill.utils import cache_dir

log = logging.getLogger(__name__)

EXPORT_VERSION = 1  # part of the cache key: bump when the export changes
OPSET = 17
QUANTIZATIONS = ("int8",)


def _require_onnxruntime():
    try:
        import onnxruntime  # optional dependency: irdistill[onnx]
    except ImportError:
        raise IrdistillError("the ONNX backend needs onnxruntime",
                             hint="pip install onnxruntime onnx (or irdistill[onnx])") from None
    return onnxruntime


def weights_digest(model: torch.nn.Module) -> str:
    """Hash of the model's config and every parameter and buffer (its content, not its path)."""
    digest = hashlib.sha256()
    digest.update(model.config.to_json_string(use_diff=False).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        data = tensor.detach().cpu().contiguous()
        digest.update(str(data.dtype).encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()[:16]


class _Scores(torch.nn.Module):
    """The model as a function of positional inputs, returning one score per pair."""

    def __init__(self, model, names: list[str]):
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *inputs):
        return self.model(**dict(zip(self.names, inputs))).logits[:, 0]


def input_names(encoder) -> list[str]:
    return ["input_ids", "attention_mask"] + (["token_type_ids"] if encoder.use_token_types
                                              else [])


def _probe_batch(encoder) -> dict[str, torch.Tensor]:
    """A small batch with padding, to trace the general (masked) path."""
    q = [encoder.template.prefix[0] if encoder.template.prefix else 1] * 3
    return encoder.collate([(q, q * 3), (q, q)])


def export_onnx(model: torch.nn.Module, encoder, folder: str | Path | None = None,
                optimize: bool = True, quantize: str | None = None) -> Path:
    """Export ``model`` (a sequence-classification model with one output) to ONNX, once
    (``quantize="int8"``: then quantised dynamically, see the module docstring).

    The file is ``folder/<content hash>/model.onnx`` (default folder: ``<irdistill cache>/onnx``);
    an existing file is reused. Attention is exported from the eager implementation, whose
    graph ONNX Runtime's optimizer recognises and fuses.
    """
    _require_onnxruntime()
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise IrdistillError(f"unknown ONNX quantisation '{quantize}'",
                             hint="choose " + ", ".join(QUANTIZATIONS))

    names = input_names(encoder)
    settings = [weights_digest(model), names, OPSET, optimize, EXPORT_VERSION]
    reduce_range = quantize is not None and not has_int8_dot_product()
    if quantize is not None:  # (keys of unquantised exports stay as they were)
        settings += [quantize, "per-channel"] + (["reduce-range"] if reduce_range else [])
    key = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16]
    root = Path(folder) if folder is not None else cache_dir() / "onnx"
    target = root / key / "model.onnx"
    if target.exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        clone = copy.deepcopy(model).float().cpu().eval()
        if hasattr(clone, "set_attn_implementation"):
            try:
                clone.set_attn_implementation("eager")
            except (ValueError, ImportError):  # a family without it keeps its own
                pass
        probe = _probe_batch(encoder)
        raw = work / "raw.onnx"
        log.info("exporting the model to ONNX (%s)", target)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(_Scores(clone, names), tuple(probe[n] for n in names), str(raw),
                              input_names=names, output_names=["scores"],
                              dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names},
                                            "scores": {0: "batch"}},
                              opset_version=OPSET, dynamo=False)
        final = raw
        if optimize:
            final = _optimize(raw, clone.config, work / "optimized.onnx") or raw
        if quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic  # optional, above

            log.info("quantising the ONNX model to int8 (dynamic)")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # the fused graph's contrib ops defeat shape inference: say their outputs'
                # type (float) instead
                # without VNNI/AMX the int8 products go through 16-bit sums that can saturate:
                # 7-bit weights then (reduce_range), as ONNX Runtime advises
                quantize_dynamic(str(final), str(work / "int8.onnx"),
                                 weight_type=QuantType.QInt8, per_channel=True,
                                 reduce_range=reduce_range,
                                 extra_options={"DefaultTensorType": 1})  # TensorProto.FLOAT
            final = work / "int8.onnx"
        os.replace(final, work / "model.onnx")
        for leftover in work.glob("*.onnx"):
            if leftover.name != "model.onnx":
                leftover.unlink()
        try:
            os.rename(work, target.parent)  # atomic: the folder appears complete or not at all
        except OSError:
            if not target.exists():  # not another process that finished first
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def has_int8_dot_product() -> bool:
    """Whether this CPU has int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI or AMX-INT8;
    read from /proc/cpuinfo, so False where it cannot be read)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def _optimize(path: Path, config, out: Path) -> Path | None:
    """Fuse attention, GELU and layer norms with ONNX Runtime's transformer optimizer (BERT-like
    graphs); None when the optimizer cannot handle the graph (then the plain export is used)."""
    try:
        from onnxruntime.transformers.optimizer import optimize_model  # optional, as above
    except ImportError:
        return None
    model_type = {"bert": "bert", "roberta": "bert", "electra": "bert",
                  "xlm-roberta": "bert"}.get(getattr(config, "model_type", ""))
    if model_type is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optimized = optimize_model(str(path), model_type=model_type,
                                       num_heads=config.num_attention_heads,
                                       hidden_size=config.hidden_size)
            optimized.save_model_to_file(str(out))
    except Exception as exc:  # noqa: BLE001 - the plain export still works
        log.warning("ONNX Runtime's optimizer failed (%s); using the plain export", exc)
        return None
    return out


class OnnxRunner:
    """Scores collated batches with an ONNX Runtime session (CPU, or CUDA if available)."""

    def __init__(self, path: str | Path, device: torch.device | str = "cpu",
                 threads: int | None = None):
        ort = _require_onnxruntime()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda" and \
                "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        feed = {name: batch[name].numpy() for name in self.names}
        return self.session.run(None, feed)[0].astype(np.float32, copy=False).reshape(-1)
