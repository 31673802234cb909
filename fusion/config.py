"""Configurations of the interest model, as dataclasses: a misspelt key is an error.

:class:`FusionConfig` shapes the fusion (its kind, linear or transformer; width; item
projections and id embeddings; the transformer's layers and pooling); :class:`TargetConfig` shapes one target platform's head (its item
space, adapters, item bias, temperature); :class:`InterestConfig` bundles them.
``from_dict`` accepts what ``to_dict`` writes and names any unknown or missing key.

What a user chooses about a model, and its one default, is written once: in
:class:`FusionSettings` (width, layers, heads, ...) and :class:`HeadSettings` (adapter, item
bias, temperature). :class:`FusionConfig` and :class:`TargetConfig` extend them with what
the data fixes (modalities, platforms, number of items); :class:`ModelSettings` is both
together, the model part of a training configuration, and builds the two configs.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

from torch import nn

C = TypeVar("C")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
SPACES = ("content", "external", "learned")
POOLINGS = ("attention", "mean")
KINDS = ("linear", "transformer")  # FusionSettings.kind: which fusion module turns histories into interests
DEFAULT_DIMS = {"linear": 1024, "transformer": 128}  # FusionSettings.dim left None: the width of each kind


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
    fields = {f.name: f for f in init_order(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                         f"valid keys: {', '.join(fields)}{closest_hint(unknown, list(fields))}")
    missing = [n for n, f in fields.items() if n not in d and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"{where}: missing required key(s) {', '.join(missing)}")
    try:
        return cls(**d)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None


def closest_hint(unknown: list[str], valid: Any) -> str:
    """``"; did you mean n_layers?"`` for the unknown names that resemble a valid one
    (``valid``: names, or a mapping of names to how to write them)."""
    shown = valid if isinstance(valid, dict) else {v: v for v in valid}
    close = {k: shown[m[0]] for k in unknown if (m := difflib.get_close_matches(k, list(shown), 1))}
    return "; did you mean " + ", ".join(f"{m} (for {k})" if len(unknown) > 1 else m
                                         for k, m in close.items()) + "?" if close else ""


def init_order(cls: Any) -> list[dataclasses.Field]:
    """The fields of dataclass ``cls`` in the order of its ``__init__``: positional ones, then
    keyword-only ones (those of a settings base class)."""
    return sorted(dataclasses.fields(cls), key=lambda f: f.kw_only)


def own_values(obj: Any, cls: Any) -> dict[str, Any]:
    """``obj``'s values of the fields of dataclass ``cls`` (one of its bases)."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(cls)}


class _Dict:
    """``to_dict`` / ``from_dict`` for a flat dataclass config (keys in ``__init__`` order)."""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {f.name: d[f.name] for f in init_order(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        return from_dict(cls, d)


@dataclass(kw_only=True)
class FusionSettings(_Dict):
    """The fusion's shape, as a user chooses it; each setting's one default.

    ``kind`` picks the fusion module: ``"linear"`` (the default;
    :class:`~fusion.linear.LinearFusion`: pooled per-item tables and whitened projections,
    fitted in closed form by :mod:`multimodal_interest.training.closed_form`; it reads
    ``dim``, ``max_len`` and the data's fields, no transformer setting) or ``"transformer"``
    (:class:`~fusion.transformer.FusionTransformer`, trained by gradient). The linear model
    is the default: it leads or ties the best baseline on each dataset of BENCHMARKS.md, where
    the transformer lost. A config saved before ``kind`` existed is a transformer's
    (:mod:`fusion.legacy`).

    The transformer's shape: ``n_layers`` pre-norm blocks of ``n_heads`` heads, ``max_len``
    position embeddings (counting back from the most recent item; older items share the last
    one), ``dropout`` in the blocks and ``modality_dropout`` of whole modality vectors in
    training, ``n_experts`` > 1 makes each modality's projection UniSRec's whitened mixture of
    experts, ``pooling`` of the history into one vector: ``"mean"`` or ``"attention"``.

    ``dim`` is the interest vector's width; None (the default) means :data:`DEFAULT_DIMS` of
    the kind: 128 for the transformer; for the linear model at most 1024, the closed-form fit
    keeping ``min(1024, target items, fit users)`` directions (a lower width loses accuracy on
    small, id-only data: BENCHMARKS.md).
    """

    kind: str = "linear"
    dim: int | None = None
    n_layers: int = 1
    n_heads: int = 4
    max_len: int = 50
    dropout: float = 0.1
    modality_dropout: float = 0.1
    n_experts: int = 1
    pooling: str = "mean"

    def __post_init__(self) -> None:
        if self.n_layers < 0 or self.n_heads < 1 or (self.dim is not None and self.dim < 1):
            raise ValueError(f"dim ({self.dim}) and n_heads ({self.n_heads}) must be >= 1 and n_layers "
                             f"({self.n_layers}) >= 0")
        if self.kind == "transformer" and self.dim is not None and self.dim % self.n_heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of n_heads ({self.n_heads}): each head "
                             f"reads dim / n_heads of the transformer's width")
        if self.max_len < 1 or self.n_experts < 1:
            raise ValueError("max_len and n_experts must be >= 1")
        if not (0 <= self.dropout < 1 and 0 <= self.modality_dropout < 1):
            raise ValueError("dropout and modality_dropout must be in [0, 1)")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")


@dataclass
class FusionConfig(FusionSettings):
    """The fusion (linear or transformer): history of items -> one interest vector of width ``dim``.

    Its :class:`FusionSettings` (keywords) and what the data fixes: ``modalities`` maps each
    modality to its encoder's vector width (``{"text": 384, "image": 1280}``; empty for
    id-only data). ``platforms`` lists the platforms whose items may appear in histories
    (one platform embedding each). ``id_items`` maps the platforms that get a learned item-id
    embedding to their number of items.
    """

    modalities: dict[str, int]
    platforms: list[str]
    id_items: dict[str, int] = field(default_factory=dict)

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
        super().__post_init__()
        if self.dim is None:
            self.dim = DEFAULT_DIMS[self.kind]


@dataclass(kw_only=True)
class HeadSettings(_Dict):
    """A target platform's head, as a user chooses it; each setting's one default.

    ``adapter`` maps the interest vector into the platform's item space (a registered
    adapter name); scores are ``cos(query, item) / temperature + bias``, with a learned
    per-item ``bias`` when ``item_bias`` and the temperature learned when ``learn_temperature``.
    """

    adapter: str = "linear"
    item_bias: bool = True
    temperature: float = 0.05
    learn_temperature: bool = True

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


@dataclass
class TargetConfig(HeadSettings):
    """One target platform: how its ``n_items`` items are represented and scored.

    Its :class:`HeadSettings` (keywords) and: ``space="content"``: items go through the
    fusion model's projections (+ id embedding) and ``item_adapter`` into the shared space,
    so a new platform needs only its catalog. ``space="external"``: the platform brings its
    own item vectors of width ``external_dim`` (:meth:`~fusion.model.InterestModel.set_item_vectors`).
    ``space="learned"``: each item has its own learned vector of the fusion width, saved with
    the head and scored by dot product, not cosine (its length carries the item's prior: the
    closed-form fit's item factors). Either way ``adapter`` (with ``adapter_kwargs``) maps the
    interest vector into that space.
    """

    n_items: int
    space: str = "content"
    external_dim: int | None = None
    adapter_kwargs: dict[str, Any] = field(default_factory=dict)
    item_adapter: str = "identity"
    item_adapter_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.n_items, int) or self.n_items < 1:
            raise ValueError(f"n_items must be a positive number of items, got {self.n_items!r}")
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {self.space!r}")
        if (self.space == "external") != (self.external_dim is not None):
            raise ValueError("external_dim is required for space='external' and only for it")
        if self.external_dim is not None and self.external_dim < 1:
            raise ValueError(f"external_dim must be >= 1, got {self.external_dim}")
        if self.space != "content" and (self.item_adapter != "identity" or self.item_adapter_kwargs):
            raise ValueError(f"an {self.space} space has no item adapter: its vectors are used as given")
        super().__post_init__()


@dataclass(kw_only=True)
class ModelSettings(HeadSettings, FusionSettings):
    """Everything a user chooses about an :class:`~fusion.model.InterestModel`: the
    :class:`FusionSettings` and the :class:`HeadSettings` every target head gets, with their
    defaults. The data fixes the rest: :meth:`fusion_config` and :meth:`target_config`."""

    def __post_init__(self) -> None:
        FusionSettings.__post_init__(self)
        HeadSettings.__post_init__(self)

    def fusion_config(self, modalities: dict[str, int], platforms: list[str],
                      id_items: dict[str, int] | None = None) -> FusionConfig:
        return FusionConfig(modalities, platforms, dict(id_items or {}), **own_values(self, FusionSettings))

    def target_config(self, n_items: int, **data: Any) -> TargetConfig:
        """``data``: the rest of :class:`TargetConfig` (``space``, ``external_dim``, ...)."""
        return TargetConfig(n_items, **data, **own_values(self, HeadSettings))


@dataclass
class InterestConfig:
    """The whole model: the fusion and one head per target platform."""

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
