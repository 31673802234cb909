"""The two towers of fine-tuning, sharing one sentence encoder, and what shapes what learns.

A user is the normalised mean of their source items' vectors, an item its normalised vector
(cosine, as the content nearest-neighbour baseline scores); the loss is InfoNCE over the
step's candidate target items. The encoder is a SentenceTransformer: every weight learns, or
only LoRA adapters (``peft``) on its transformer, and optionally only its top layers; a saved
encoder is a plain sentence-transformers folder, LoRA merged into the weights.
"""
from __future__ import annotations

import copy
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

_LAYER = re.compile(r"\.layer\.(\d+)\.")  # BERT-style blocks: encoder.layer.<i>.
_POOLER = re.compile(r"(^|\.)pooler\.")


def load_base(spec: str):
    """``(SentenceTransformer, fingerprint)`` of a text encoder spec as ``mmi embed`` takes it
    (``sentence-transformer``, ``mpnet``, ``finetuned:PATH``, ...), on the CPU."""
    from encoders.text import SentenceTransformerEncoder
    from multimodal_interest.embed import load_encoders

    encoder = load_encoders({"text": spec}, device="cpu")["text"]
    if not isinstance(encoder, SentenceTransformerEncoder) or encoder.session is not None:
        raise ValueError(f"--encoder text={spec}: fine-tuning needs a sentence-transformers text encoder "
                         f"run by torch (sentence-transformer, mpnet, finetuned:PATH), not "
                         f"{encoder.registry_name!r}{' with backend onnx' if encoder.session is not None else ''}")
    return encoder.net, encoder.fingerprint


def adapt(st, lora_rank: int, lora_alpha: float, train_layers: int | None) -> None:
    """Make only what should learn trainable: LoRA adapters of rank ``lora_rank`` on the
    transformer (0: every weight), and with ``train_layers`` only those of the top N layers
    (the embeddings and the layers below stay frozen: no gradient is computed for them).
    A BERT-style pooler (``pooler.``) never learns: sentence-transformers pools the token
    vectors itself and never reads it."""
    if lora_rank:
        from peft import LoraConfig, get_peft_model

        st[0].model = get_peft_model(st[0].model, LoraConfig(r=lora_rank, lora_alpha=lora_alpha, lora_dropout=0.0))
    for name, p in st.named_parameters():
        if _POOLER.search(name):
            p.requires_grad_(False)
    if train_layers is None:
        return
    names = [n for n, _ in st.named_parameters()]
    layers = {int(m.group(1)) for n in names if (m := _LAYER.search(n))}
    if not layers:
        raise ValueError("train_layers: the encoder has no numbered layers (encoder.layer.<i>) to choose from")
    if train_layers > len(layers):
        raise ValueError(f"train_layers {train_layers}: the encoder has {len(layers)} layers")
    lowest = len(layers) - train_layers
    for name, p in st.named_parameters():
        m = _LAYER.search(name)
        if m is None or int(m.group(1)) < lowest:
            p.requires_grad_(False)


def trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@dataclass
class Tuning:
    """What a run tunes, ready for the towers: the encoder module (only what should learn
    trainable), its base's fingerprint, the items' tokens for steps and validation (None when
    every item is encoded from ``lower``), the cache of its frozen lower part (None: none), and
    how the encoder is saved (``save(encoder, folder)``, atomically)."""

    encoder: nn.Module
    fingerprint: str
    tokens: dict | None
    lower: object | None
    save: Callable[[nn.Module, Path], None]


class InterestTowers(nn.Module):
    """User tower (mean of source item vectors) and item tower, one shared encoder.

    ``lower``: with only the top layers tuned, the cache of the frozen lower layers' states
    (:mod:`~.lower_cache`): a step then runs the top layers only, on the items' cached states.
    ``save``: how the encoder is saved (:func:`save_encoder`, a sentence-transformers folder, by
    default).
    """

    def __init__(self, encoder, temperature: float, chunk_size: int = 64, lower=None,
                 save: Callable[[nn.Module, Path], None] | None = None):
        super().__init__()
        self.encoder, self.temperature, self.chunk_size = encoder, temperature, chunk_size
        self.lower = lower  # a LowerLayerCache or None (a plain object: not a submodule, never saved)
        self.save_encoder = save or save_encoder

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[M, T]`` token ids -> ``[M, D]`` item vectors, encoded ``chunk_size`` at a time in
        order of length (each chunk cut to its own longest), returned in input order."""
        lengths = attention_mask.sum(1)
        order = torch.argsort(lengths, descending=True, stable=True)
        parts = []
        for chunk in order.split(self.chunk_size):
            width = int(lengths[chunk].max())
            out = self.encoder({"input_ids": input_ids[chunk, :width],
                                "attention_mask": attention_mask[chunk, :width]})
            parts.append(out["sentence_embedding"])
        vectors = torch.cat(parts)
        return vectors[torch.argsort(order)]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A step (:meth:`~.batches.FinetunePlanner.build`) -> ``{"loss": scalar}``."""
        if self.lower is None:
            v = self.embed(batch["input_ids"], batch["attention_mask"]).float()  # [M, D]
        else:
            v = self.lower.embed(self.lower.keys(batch["platform"], batch["items"]), self.chunk_size).float()
        users = user_vectors(v, batch["hist"], batch["hist_mask"])  # [B, D]
        items = nn.functional.normalize(v[batch["cand"]], dim=-1)  # [C, D]
        logits = (users @ items.T / self.temperature).masked_fill(batch["exclude"], -torch.inf)
        return {"loss": nn.functional.cross_entropy(logits, batch["label"])}


def user_vectors(items: torch.Tensor, hist: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, D]`` the normalised mean of each user's item vectors: ``items [M, D]``, ``hist
    [B, L]`` rows of ``items``, ``mask [B, L]`` True on real history slots."""
    m = mask.unsqueeze(-1).to(items.dtype)
    return nn.functional.normalize((items[hist] * m).sum(1) / m.sum(1).clamp_min(1), dim=-1)


def save_encoder(st, folder: Path) -> None:
    """Save ``st`` as a plain sentence-transformers folder (LoRA merged into the weights, the
    model being trained left as it is), written aside and swapped in: a reader never sees
    half an encoder."""
    from peft import PeftModel

    if isinstance(st[0].model, PeftModel):
        st = copy.deepcopy(st)
        st[0].model = st[0].model.merge_and_unload()
    write_folder(folder, lambda tmp: st.save(str(tmp), create_model_card=False))


def write_folder(folder: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` fills a folder beside ``folder``, which is then swapped in for it: a
    reader never sees half a folder, and a kill between the renames is repaired next time."""
    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    if old.exists() and not folder.exists():  # killed between the two renames below
        old.rename(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
