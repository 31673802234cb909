"""Adapter heads: small maps from one vector space into another.

An adapter maps the interest vector ``[..., in_dim]`` into a target platform's item space
``[..., out_dim]`` (and, in a content space, the items' shared-space vectors into it). Adapters
live in an explicit registry: :func:`register_adapter` names a class, :func:`list_adapters`
lists the names, :func:`create_adapter` builds one (``None`` keywords dropped, an unknown
keyword is an error), :meth:`Adapter.load` rebuilds a saved one from its folder.

Adapters that map a space onto itself start as (close to) the identity, so an untrained
head keeps what the shared space already knows; the zero-shot path works from step 0.
"""
from __future__ import annotations

import fnmatch
import os
import warnings
from typing import Any, Callable, ClassVar, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from fusion.saving import load_part, part_files, read_part_config, save_part

_ADAPTERS: dict[str, type[Adapter]] = {}

A = TypeVar("A", bound=type)


def register_adapter(name: str) -> Callable[[A], A]:
    """Class decorator: make an :class:`Adapter` subclass creatable by ``name``.
    Registering a name twice replaces the earlier class and warns, as timm does."""

    def decorator(cls: A) -> A:
        if name in _ADAPTERS and _ADAPTERS[name] is not cls:
            warnings.warn(f"adapter {name!r} registered again; {cls.__qualname__} replaces "
                          f"{_ADAPTERS[name].__qualname__}", stacklevel=2)
        _ADAPTERS[name] = cls  # type: ignore[assignment]
        cls.registry_name = name  # type: ignore[attr-defined]
        return cls

    return decorator


def list_adapters(pattern: str = "*") -> list[str]:
    """Sorted names of registered adapters matching the glob ``pattern``."""
    return sorted(n for n in _ADAPTERS if fnmatch.fnmatch(n, pattern))


def get_adapter_class(name: str) -> type[Adapter]:
    try:
        return _ADAPTERS[name]
    except KeyError:
        raise ValueError(f"unknown adapter {name!r}; registered: {', '.join(list_adapters())}") from None


def create_adapter(name: str, **kwargs: Any) -> Adapter:
    """Build the adapter registered as ``name`` (``in_dim`` and ``out_dim`` are required)."""
    cls = get_adapter_class(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    unknown = set(kwargs) - set(cls.config_keys)
    if unknown:
        raise TypeError(f"adapter {name!r} takes {', '.join(cls.config_keys)}; "
                        f"unknown: {', '.join(sorted(unknown))}")
    return cls(**kwargs)


class Adapter(nn.Module):
    """Base of all adapters: ``forward(x [..., in_dim]) -> [..., out_dim]``.

    ``config_keys`` are the constructor's arguments; :meth:`save` writes them with the
    registered type to ``config.json`` and the weights to ``model.safetensors``;
    :meth:`load` rebuilds it.
    ``same_dim`` adapters map a space onto itself and refuse ``in_dim != out_dim``.
    """

    config_keys: ClassVar[tuple[str, ...]] = ("in_dim", "out_dim")
    same_dim: ClassVar[bool] = False
    registry_name: ClassVar[str] = ""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        if self.same_dim and in_dim != out_dim:
            raise ValueError(f"adapter {self.registry_name!r} maps a space onto itself; it cannot "
                             f"map width {in_dim} to {out_dim} (use 'linear', 'mlp' or 'moe')")
        self.in_dim, self.out_dim = in_dim, out_dim

    def get_config(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.config_keys}

    def save(self, folder: str | os.PathLike) -> None:
        save_part(self, folder, {"type": self.registry_name, **self.get_config()})

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Adapter:
        """The adapter saved in ``folder``, of the registered type its ``config.json`` names
        (that of ``cls``; ``Adapter.load`` takes any)."""
        files = part_files(folder)
        config = read_part_config(files)
        name = config.pop("type", None)

        def build() -> Adapter:
            if not isinstance(name, str):
                raise ValueError("no adapter 'type'")
            if cls is not Adapter and get_adapter_class(name) is not cls:
                raise ValueError(f"an adapter of type {name!r}, not {cls.registry_name!r}")
            return create_adapter(name, **config)

        return load_part(files, build)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.get_config().items())


@register_adapter("identity")
class IdentityAdapter(Adapter):
    """No parameters: the query is the interest vector itself."""

    same_dim = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@register_adapter("linear")
class LinearAdapter(Adapter):
    """``W x + b``; starts as the identity when ``in_dim == out_dim``."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__(in_dim, out_dim)
        self.linear = nn.Linear(in_dim, out_dim)
        if in_dim == out_dim:
            nn.init.eye_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


@register_adapter("lowrank")
class LowRankAdapter(Adapter):
    """``x + B A x`` with ``A: in -> rank``, ``B: rank -> out``; B starts at zero (LoRA-style)."""

    config_keys = ("in_dim", "out_dim", "rank")
    same_dim = True

    def __init__(self, in_dim: int, out_dim: int, rank: int = 16):
        super().__init__(in_dim, out_dim)
        self.rank = rank
        self.down = nn.Linear(in_dim, rank, bias=False)
        self.up = nn.Linear(rank, out_dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.down(x))


@register_adapter("mlp")
class MLPAdapter(Adapter):
    """Two layers with a GELU (EMCDR's mapping). Residual, starting as the identity, when
    ``in_dim == out_dim``; a plain MLP otherwise."""

    config_keys = ("in_dim", "out_dim", "hidden")

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 256):
        super().__init__(in_dim, out_dim)
        self.hidden = hidden
        self.fc = nn.Linear(in_dim, hidden)
        self.proj = nn.Linear(hidden, out_dim)
        self.residual = in_dim == out_dim
        if self.residual:
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(F.gelu(self.fc(x)))
        return x + y if self.residual else y


@register_adapter("moe")
class MoEAdapter(Adapter):
    """UniSRec's parametric whitening + mixture of experts:
    ``y = sum_e softmax(x G)_e * (x - b_e) W_e``.

    Each expert subtracts a learned bias ``b_e`` then maps linearly; a softmax gate over the
    input mixes them (uniform at the start). With ``n_experts=1`` it is a whitened linear
    map. Experts start near the identity when ``in_dim == out_dim`` (exactly identity plus
    small noise, which lets them diverge), otherwise at N(0, 0.02). The fusion model uses
    this module as each modality's projection.
    """

    config_keys = ("in_dim", "out_dim", "n_experts")

    def __init__(self, in_dim: int, out_dim: int, n_experts: int = 4):
        super().__init__(in_dim, out_dim)
        self.n_experts = n_experts
        self.weight = nn.Parameter(torch.randn(n_experts, in_dim, out_dim) * 0.02)  # [E, in, out]
        if in_dim == out_dim:
            self.weight.data += torch.eye(in_dim)
        self.whiten = nn.Parameter(torch.zeros(n_experts, in_dim))  # [E, in]
        self.gate = nn.Parameter(torch.zeros(in_dim, n_experts)) if n_experts > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        E, out = self.n_experts, self.out_dim
        shift = torch.einsum("ei,eio->eo", self.whiten, self.weight)  # [E, out]
        w = self.weight.permute(1, 0, 2).reshape(self.in_dim, E * out)  # one matmul for all experts
        y = (x @ w).unflatten(-1, (E, out)) - shift  # [..., E, out]
        if self.gate is None:
            return y.squeeze(-2)
        g = torch.softmax(x @ self.gate, dim=-1)  # [..., E]
        return torch.einsum("...e,...eo->...o", g, y)
