"""Configurations of the fusion model, as dataclasses: a misspelt key is an error.

:class:`FusionConfig` shapes the fusion transformer (item projections, id embeddings,
transformer, pooling); :class:`TargetConfig` shapes one target platform's head (its item
space, adapters, item bias, temperature); :class:`InterestConfig` bundles them.
``from_dict`` accepts what ``to_dict`` writes and names any unknown or missing key.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

from torch import nn

C = TypeVar("C")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
SPACES = ("content", "external")
POOLINGS = ("attention", "mean")


def check_name(kind: str, name: str) -> str:
    """Platform and modality names become module keys and folder names: keep them plain."""
    if not isinstance(name, str) or not _NAME.match(name) or hasattr(nn.ModuleDict(), name):
        raise ValueError(f"{kind} name {name!r} is not allowed: use letters, digits, '_' and '-', "
                         f"starting with a letter or digit, and not a torch.nn.ModuleDict attribute")
    return name


def from_dict(cls: type[C], d: dict[str, Any], where: str | None = None) -> C:
    """Build dataclass ``cls`` from ``d``; unknown and missing keys are errors naming ``where``."""
    where = where or cls.__name__
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                         f"valid keys: {', '.join(fields)}")
    missing = [n for n, f in fields.items() if n not in d and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"{where}: missing required key(s) {', '.join(missing)}")
    try:
        return cls(**d)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None


class _Dict:
    """``to_dict`` / ``from_dict`` for a flat dataclass config."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        return from_dict(cls, d)


@dataclass
class FusionConfig(_Dict):
    """The fusion transformer: history of items -> one interest vector of width ``dim``.

    ``modalities`` maps each modality to its encoder's vector width (``{"text": 384,
    "image": 1280}``; empty for id-only data). ``platforms`` lists the platforms whose items
    may appear in histories (one platform embedding each). ``id_items`` maps the platforms
    that get a learned item-id embedding to their number of items. ``max_len`` position
    embeddings count back from the most recent item; older items share the last one.
    ``n_experts`` > 1 makes each modality's projection UniSRec's whitened mixture of experts.
    """

    modalities: dict[str, int]
    platforms: list[str]
    id_items: dict[str, int] = field(default_factory=dict)
    dim: int = 128
    n_layers: int = 2
    n_heads: int = 4
    max_len: int = 50
    dropout: float = 0.1
    modality_dropout: float = 0.1
    n_experts: int = 1
    pooling: str = "attention"

    def __post_init__(self) -> None:
        for m, d in self.modalities.items():
            check_name("modality", m)
            if m == "id":
                raise ValueError("modality name 'id' is reserved for the learned item-id embedding")
            if not isinstance(d, int) or d < 1:
                raise ValueError(f"modalities[{m!r}] must be a positive width, got {d!r}")
        for p in self.platforms:
            check_name("platform", p)
        if len(set(self.platforms)) != len(self.platforms):
            raise ValueError(f"platforms has duplicates: {self.platforms}")
        for p, n in self.id_items.items():
            check_name("platform", p)
            if not isinstance(n, int) or n < 1:
                raise ValueError(f"id_items[{p!r}] must be a positive number of items, got {n!r}")
        if not self.modalities and not self.id_items:
            raise ValueError("no way to embed items: give modalities, id_items or both")
        if self.dim < 1 or self.n_layers < 0 or self.n_heads < 1 or self.dim % self.n_heads:
            raise ValueError(f"dim ({self.dim}) must be a positive multiple of n_heads "
                             f"({self.n_heads}) and n_layers ({self.n_layers}) >= 0")
        if self.max_len < 1 or self.n_experts < 1:
            raise ValueError("max_len and n_experts must be >= 1")
        if not (0 <= self.dropout < 1 and 0 <= self.modality_dropout < 1):
            raise ValueError("dropout and modality_dropout must be in [0, 1)")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")


@dataclass
class TargetConfig(_Dict):
    """One target platform: how its ``n_items`` items are represented and scored.

    ``space="content"``: items go through the fusion model's projections (+ id embedding)
    and ``item_adapter`` into the shared space, so a new platform needs only its catalog.
    ``space="external"``: the platform brings its own item vectors of width ``external_dim``
    (:meth:`~fusion.model.InterestModel.set_item_vectors`). Either way ``adapter`` maps the
    interest vector into that space; scores are ``cos(query, item) / temperature + bias``.
    """

    n_items: int
    space: str = "content"
    external_dim: int | None = None
    adapter: str = "linear"
    adapter_kwargs: dict[str, Any] = field(default_factory=dict)
    item_adapter: str = "identity"
    item_adapter_kwargs: dict[str, Any] = field(default_factory=dict)
    item_bias: bool = True
    temperature: float = 0.05
    learn_temperature: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.n_items, int) or self.n_items < 1:
            raise ValueError(f"n_items must be a positive number of items, got {self.n_items!r}")
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {self.space!r}")
        if (self.space == "external") != (self.external_dim is not None):
            raise ValueError("external_dim is required for space='external' and only for it")
        if self.external_dim is not None and self.external_dim < 1:
            raise ValueError(f"external_dim must be >= 1, got {self.external_dim}")
        if self.space == "external" and (self.item_adapter != "identity" or self.item_adapter_kwargs):
            raise ValueError("an external space has no item adapter: its vectors are used as given")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


@dataclass
class InterestConfig:
    """The whole model: the fusion transformer and one head per target platform."""

    fusion: FusionConfig
    targets: dict[str, TargetConfig]

    def __post_init__(self) -> None:
        for p in self.targets:
            check_name("platform", p)

    def to_dict(self) -> dict[str, Any]:
        return {"fusion": self.fusion.to_dict(),
                "targets": {p: t.to_dict() for p, t in self.targets.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InterestConfig:
        if not isinstance(d, dict) or set(d) != {"fusion", "targets"}:
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"InterestConfig: expected keys fusion, targets; got {got}")
        targets = {p: from_dict(TargetConfig, t, f"targets.{p}") for p, t in d["targets"].items()}
        return cls(from_dict(FusionConfig, d["fusion"], "fusion"), targets)


# ------------------------------------------------------------------------ files of a part
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (temp file + rename): a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def read_manifest(path: str | os.PathLike, fmt: str, version: int, what: str) -> dict[str, Any]:
    """The JSON manifest at ``path``, which must declare ``format`` ``fmt`` and
    ``format_version`` ``version``; ``what`` says what a missing one means."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; {what}")
    manifest = read_json(path)
    if manifest.get("format") != fmt or manifest.get("format_version") != version:
        raise ValueError(f"{path}: format {manifest.get('format')!r} version "
                         f"{manifest.get('format_version')!r}; expected {fmt!r} {version}")
    return manifest


def read_config(cls: type[C], folder: str | os.PathLike) -> C:
    """Dataclass ``cls`` from ``folder/config.json``; errors name the file."""
    path = Path(folder) / CONFIG_FILE
    return from_dict(cls, read_json(path), str(path))


def save_weights(module: nn.Module, folder: str | os.PathLike) -> None:
    """``module``'s state dict as ``folder/model.safetensors`` (atomic; no pickle)."""
    from safetensors.torch import save_file

    path = Path(folder) / WEIGHTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}, str(tmp))
    os.replace(tmp, path)


def load_weights(module: nn.Module, folder: str | os.PathLike) -> None:
    """Load ``folder/model.safetensors`` into ``module``; every tensor must match by name."""
    from safetensors.torch import load_file

    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing")
    state = load_file(str(path))
    check_finite(state, path)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: does not fit the model its config describes: {e}") from None


def check_finite(tensors: dict[str, Any], path: str | os.PathLike) -> None:
    """Refuse NaN or an infinity in any floating tensor of ``tensors``, read from ``path``:
    the error names the file and the tensor (a weight like that turns every score it
    touches into NaN, which ranks as nothing)."""
    import torch

    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = ~torch.isfinite(t)
            kinds = [k for k, hit in (("nan", torch.isnan(t).any()), ("+inf", (t == torch.inf).any()),
                                      ("-inf", (t == -torch.inf).any())) if bool(hit)]
            raise ValueError(f"{path}: tensor {name!r} has {int(bad.sum())} non-finite value(s) "
                             f"({', '.join(kinds)}) of {t.numel()}; the file is corrupt or the model "
                             f"diverged in training")

