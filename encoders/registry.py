"""An explicit registry of item encoders.

Encoders register themselves by name with :func:`register_encoder`; users list them with
:func:`list_encoders` and build them with :func:`create_encoder`. Nothing is discovered by
introspection or by file names: a name exists because a module said so.
"""
from __future__ import annotations

import fnmatch
import warnings
from typing import TYPE_CHECKING, Any, Callable, TypeVar

if TYPE_CHECKING:
    from encoders.base import Encoder

_ENCODERS: dict[str, type[Encoder]] = {}

E = TypeVar("E", bound=type)


def register_encoder(name: str) -> Callable[[E], E]:
    """Class decorator: make an :class:`~encoders.base.Encoder` subclass creatable by ``name``.

    Registering a name twice replaces the earlier class and warns, as timm does.
    """

    def decorator(cls: E) -> E:
        if name in _ENCODERS and _ENCODERS[name] is not cls:
            warnings.warn(f"encoder {name!r} registered again; {cls.__qualname__} replaces "
                          f"{_ENCODERS[name].__qualname__}", stacklevel=2)
        _ENCODERS[name] = cls  # type: ignore[assignment]
        cls.registry_name = name  # type: ignore[attr-defined]
        return cls

    return decorator


def list_encoders(pattern: str = "*", modality: str | None = None) -> list[str]:
    """Sorted names of registered encoders matching a glob ``pattern`` (and ``modality``)."""
    _import_builtin()
    return sorted(name for name, cls in _ENCODERS.items()
                  if fnmatch.fnmatch(name, pattern) and (modality is None or cls.modality == modality))


def get_encoder_class(name: str) -> type[Encoder]:
    _import_builtin()
    try:
        return _ENCODERS[name]
    except KeyError:
        raise ValueError(f"unknown encoder {name!r}; registered: {', '.join(sorted(_ENCODERS))}") from None


def create_encoder(name: str, **kwargs: Any) -> Encoder:
    """Build the encoder registered as ``name``. Keyword arguments that are ``None`` are dropped,
    so callers can pass optional CLI values straight through; an unknown keyword is an error."""
    cls = get_encoder_class(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    unknown = set(kwargs) - set(cls.config_keys) - {"device"}
    if unknown:
        raise TypeError(f"encoder {name!r} takes {', '.join(cls.config_keys) or 'no options'} "
                        f"(and device); unknown: {', '.join(sorted(unknown))}")
    return cls(**kwargs)


def _import_builtin() -> None:
    """Import the modules that hold the built-in encoders (they register on import)."""
    from encoders import audio, image, llm, mpnet, precomputed, text  # noqa: F401
