"""ONNX Runtime on the CPU for Hugging Face transformer encoders: export once, cache, run.

A :class:`Recipe` says how a model is turned into an ONNX file:

1. ``torch.onnx.export`` (the TorchScript exporter, opset :data:`OPSET`) of the transformer
   with eager attention, ``(input_ids, attention_mask[, token_type_ids]) -> last hidden
   states``; pooling stays in torch with the model's own modules, so it is exactly theirs;
2. ``fuse``: ONNX Runtime's transformer optimizer rewrites the graph into its fused CPU
   kernels (``Attention``, ``EmbedLayerNormalization``, ``SkipLayerNormalization``,
   ``BiasGelu``); it recognises the eager attention pattern at this opset;
3. ``quantize="int8"``: dynamic quantisation (weights int8 once, activations uint8 per
   batch at run time) of the fused graph, weights per output channel (per tensor lost
   too much: mean cosine 0.95 to the float vectors against 0.99).

The file is cached under :func:`cache_root` in a folder named by the weights' digests,
the recipe and the exporter and runtime versions, written to a temporary folder and
renamed into place (a killed export leaves nothing half-written), with ``model.json``
recording its sha256: a cached file whose bytes no longer match is exported again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from fusion.files import sha256_file

logger = logging.getLogger(__name__)

OPSET = 17
RECIPE_VERSION = 1  # bump when the export steps change: cached files are then rebuilt
QUANTIZE = ("int8",)
CACHE_ENV = "MMI_ONNX_CACHE"
_MODEL, _INFO = "model.onnx", "model.json"


def cache_root() -> Path:
    """``$MMI_ONNX_CACHE``, else ``~/.cache/multimodal-interest/onnx``."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/multimodal-interest/onnx").expanduser()


def check_quantize(quantize: str | None) -> None:
    if quantize is not None and quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE)} (or None: float32), "
                         f"got {quantize!r}")


@dataclass(frozen=True)
class Recipe:
    """How the ONNX file is made (see the module docstring); the defaults are the backend's."""

    fuse: bool = True
    quantize: str | None = None
    per_channel: bool = True

    def __post_init__(self) -> None:
        check_quantize(self.quantize)


class _HiddenStates(nn.Module):
    """``(input_ids, attention_mask[, token_type_ids])`` -> ``[batch, seq, hidden]``."""

    def __init__(self, model: nn.Module, names: Sequence[str]):
        super().__init__()
        self.model, self.names = model, list(names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, inputs))).last_hidden_state


def export(model: nn.Module, example: Mapping[str, torch.Tensor], path: Path) -> None:
    """Write ``model`` (a Hugging Face encoder) as ONNX, batch and sequence length dynamic.

    ``example``: a tokenised batch (``input_ids``, ``attention_mask``, maybe ``token_type_ids``).
    """
    names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in example]
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")  # the pattern ORT's optimizer fuses
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _HiddenStates(model.eval(), names), tuple(example[k] for k in names), str(path),
                dynamo=False, opset_version=OPSET, input_names=names, output_names=["hidden"],
                dynamic_axes={k: {0: "batch", 1: "seq"} for k in [*names, "hidden"]})
    finally:
        model.set_attn_implementation(before)


def fuse(src: Path, dst: Path, config) -> dict[str, int]:
    """ONNX Runtime's transformer fusions of ``src`` into ``dst``; the fused-op counts."""
    from onnxruntime.transformers.optimizer import optimize_model

    opt = optimize_model(str(src), model_type="bert", num_heads=config.num_attention_heads,
                         hidden_size=config.hidden_size, opt_level=1, use_gpu=False)
    opt.save_model_to_file(str(dst))
    return {k: v for k, v in opt.get_fused_operator_statistics().items() if v}


def quantize_int8(src: Path, dst: Path, per_channel: bool = True) -> None:
    """Dynamic int8 quantisation of ``src``'s MatMul/Attention weights into ``dst``."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quiet = logging.getLogger()  # the quantizer warns through the root logger
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(src), str(dst), per_channel=per_channel, weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        quiet.setLevel(level)


def recipe_key(weight_digests: Sequence[str], recipe: Recipe) -> str:
    """16 hex digits naming a cached file: weights, recipe, exporter and runtime versions."""
    import onnxruntime

    blob = json.dumps({"weights": list(weight_digests), "recipe": asdict(recipe), "opset": OPSET,
                       "version": RECIPE_VERSION, "torch": torch.__version__,
                       "onnxruntime": onnxruntime.__version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_model(model: nn.Module, example: Mapping[str, torch.Tensor],
                 weight_digests: Sequence[str], recipe: Recipe = Recipe(),
                 root: Path | None = None) -> Path:
    """The ONNX file of ``model`` made by ``recipe``: from the cache when it is there and its
    bytes match ``model.json``, else made now (a quantized file from the cached float one)."""
    root = root or cache_root()
    folder = root / recipe_key(weight_digests, recipe)
    if _valid(folder):
        return folder / _MODEL
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".export-") as tmp:
        tmp = Path(tmp)
        out = tmp / "new"
        out.mkdir()
        info: dict = {"recipe": asdict(recipe), "opset": OPSET}
        if recipe.quantize:
            base = cached_model(model, example, weight_digests, Recipe(fuse=recipe.fuse), root)
            quantize_int8(base, out / _MODEL, recipe.per_channel)
        elif recipe.fuse:
            export(model, example, tmp / "plain.onnx")
            info["fused"] = fuse(tmp / "plain.onnx", out / _MODEL, model.config)
        else:
            export(model, example, out / _MODEL)
        info["sha256"] = sha256_file(out / _MODEL)
        (out / _INFO).write_text(json.dumps(info, indent=2) + "\n")
        if folder.exists():  # there but corrupt: replace it
            logger.warning("%s: cached ONNX model does not match its model.json; exported again", folder)
            shutil.rmtree(folder, ignore_errors=True)
        try:
            out.rename(folder)
        except OSError:  # another process renamed its own export in first: use that one
            if not _valid(folder):
                raise
    logger.info("exported ONNX model %s", folder / _MODEL)
    return folder / _MODEL


def _valid(folder: Path) -> bool:
    try:
        info = json.loads((folder / _INFO).read_text())
        return info.get("sha256") == sha256_file(folder / _MODEL)
    except (OSError, ValueError):
        return False


class OnnxTransformer:
    """An ONNX Runtime CPU session of an exported file: tokenised batch -> hidden states.

    ``threads``: intra-op threads (default: torch's thread count, so both backends use the
    same CPUs); operators run one at a time.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``{input_ids, attention_mask, ...}`` each ``[batch, seq]`` -> ``[batch, seq, hidden]``."""
        feed = {k: batch[k].cpu().numpy() for k in self.input_names}
        return torch.from_numpy(self.session.run(None, feed)[0])
