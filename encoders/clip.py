"""open_clip models built from local weights only (shared by ``clip-text`` and ``clip-image``).

No package ships CLIP weights, and these encoders never download: ``pretrained`` is a local
checkpoint file, or an open_clip tag (``"openai"``, ``"laion2b_s34b_b79k"``, ...) whose file
is already in the local Hugging Face cache. Without either, :class:`MissingWeightsError`
says what to pass.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from encoders.weights import MissingWeightsError, hf_cached_file


@dataclass
class OpenClip:
    """A loaded open_clip model with what decides its vectors."""

    model: nn.Module
    weights: Path
    quick_gelu: bool
    dim: int  # width of the shared image-text space
    preprocess: dict[str, Any]  # size, mean, std, interpolation, resize_mode


def open_clip_weights(model_name: str, pretrained: str | os.PathLike | None) -> tuple[Path, dict]:
    """Resolve ``pretrained`` to a local file; also return the tag's settings (empty for a path)."""
    import open_clip

    if model_name not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {model_name!r}; e.g. ViT-B-32, ViT-B-16, RN50")
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    how = (f"pass pretrained=<path to a {model_name} open_clip checkpoint, e.g. "
           f"open_clip_pytorch_model.bin or open_clip_model.safetensors>, or a tag whose file is "
           f"already in the local Hugging Face cache ({', '.join(tags[:3])}{', ...' if len(tags) > 3 else ''})")
    if pretrained is None:
        raise MissingWeightsError(f"open_clip {model_name}: no weights given (open_clip would "
                                  f"start from random ones); {how}")
    tag_cfg = open_clip.get_pretrained_cfg(model_name, str(pretrained))
    if not tag_cfg:
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise MissingWeightsError(f"open_clip {model_name}: weights file {path} does not exist "
                                      f"(and {str(pretrained)!r} is not one of its tags); {how}")
        return path, {}
    repo, filename = os.path.split(tag_cfg.get("hf_hub", ""))  # "org/name/" or "org/name/file"
    names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    found = hf_cached_file(repo, names) if repo else None
    if found is None:
        raise MissingWeightsError(f"open_clip {model_name} {str(pretrained)!r}: {' or '.join(names)} "
                                  f"of the hub repository {repo or '(none)'} is not in the local "
                                  f"Hugging Face cache, and nothing is downloaded; download it "
                                  f"yourself and pass pretrained=<its path>")
    return found, tag_cfg


def load_open_clip(model_name: str, pretrained: str | os.PathLike | None,
                   quick_gelu: bool | None) -> OpenClip:
    """Build ``model_name`` with the weights of ``pretrained`` (see :func:`open_clip_weights`).

    ``quick_gelu=None`` takes the tag's setting (OpenAI's weights need QuickGELU), and False
    for a plain file: pass True for a file of OpenAI-trained weights.
    """
    import open_clip

    weights, tag_cfg = open_clip_weights(model_name, pretrained)
    quick_gelu = bool(tag_cfg.get("quick_gelu", False)) if quick_gelu is None else bool(quick_gelu)
    try:
        model = open_clip.create_model(model_name, pretrained=str(weights), force_quick_gelu=quick_gelu,
                                       weights_only=True)
    except (RuntimeError, ValueError, AssertionError, EOFError, pickle.UnpicklingError) as e:  # another model's file
        raise ValueError(f"{weights}: not an open_clip {model_name} checkpoint: "
                         f"{str(e).splitlines()[0][:300]}") from e
    preprocess = dict(open_clip.get_model_preprocess_cfg(model))
    preprocess.update({k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode")
                       if k in tag_cfg})
    dim = int(open_clip.get_model_config(model_name)["embed_dim"])
    return OpenClip(model.eval(), weights, quick_gelu, dim, preprocess)


class OpenClipTower:
    """What ``clip-text`` and ``clip-image`` share: configuration, weight file and width.

    Args:
        model_name: an open_clip architecture (``"ViT-B-32"``).
        pretrained: a local checkpoint file or a tag cached locally (see :func:`open_clip_weights`).
        quick_gelu: ``None`` = the tag's setting, False for a file; True for OpenAI's weights.
    """

    config_keys = ("model_name", "pretrained", "quick_gelu")
    fingerprint_ignore = ("pretrained",)

    def _adopt(self, model_name: str, pretrained: str | os.PathLike | None, clip: OpenClip) -> nn.Module:
        """Record the configuration of ``clip`` (from :func:`load_open_clip`); return its model."""
        self.model_name, self.pretrained = model_name, None if pretrained is None else os.fspath(pretrained)
        self.quick_gelu, self._weights, self._dim = clip.quick_gelu, clip.weights, clip.dim
        return clip.model

    @property
    def dim(self) -> int:
        return self._dim

    def weight_files(self) -> list[Path]:
        return [self._weights]
