"""Tuning the image encoder's last blocks (``mmi finetune --encoder image=efficientnet-lite0``).

EfficientNet-Lite0 (timm's ``tf_efficientnet_lite0``) runs a stem (``conv_stem``, ``bn1``),
seven stages of blocks (``net.blocks[0..6]``) and a head (``conv_head``, ``bn2``, then global
average pooling: 1280-d). Only the last ``train_layers`` stages (default 1: ``blocks[6]``) and
the head learn; the stem and the stages below are frozen, and what they make of an item never
changes, so :class:`ImageLowerCache` computes it once per item and keeps it (float16, in
fixed blocks of items, least recently used dropped past ``lower_cache_mb``: the text cache's
rules, :class:`~.lower_cache.BlockCache`). A step and validation then run only the tuned stages
and the head on the cached feature maps (after ``blocks[5]``: ``[192, 7, 7]``, 18 KB an item).

Everything runs in eval mode, the tuned stages included: BatchNorm normalises with the
packaged running statistics, which never change, while its scale and shift learn with the
convolutions. A step's batch statistics (a few dozen items, often the same images) would be
noisy and would make an item's vector depend on the step it is in; the saved encoder encodes
as the towers did. The network has no dropout (``drop_rate`` 0).

Images are read by the catalog's rule (:func:`item_images`, as ``mmi embed`` reads them) and
decoded by the encoder's own preprocessing when their block is computed (again only if the
block was dropped). An item whose image is missing, outside the dataset folder or unreadable
is reported (file, row, item, reason) and encoded as a blank image (the mean colour), as an
item with no text is encoded as an empty text; an item with no image cell is blank too.

The result is a ``finetuned-image`` folder (:class:`encoders.image.FinetunedImageEncoder`):
``model.safetensors`` and ``image_encoder.json``, written aside and swapped in.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from multimodal_interest.catalog import Catalog, RowError
from multimodal_interest.data.task import ColdStartTask
from multimodal_interest.training.finetune.config import FinetuneConfig
from multimodal_interest.training.finetune.lower_cache import BLOCK, STORAGE, BlockCache, eval_mode
from multimodal_interest.training.finetune.model import Tuning, write_folder

logger = logging.getLogger(__name__)

TUNABLE = ("efficientnet-lite0", "finetuned-image")  # the image encoders fine-tuning tunes
DEFAULT_TRAIN_LAYERS = 1  # stages of blocks that learn when train_layers is not given


def item_images(dataset, platform: str) -> tuple[list[str | None], list[RowError]]:
    """``[n_items]`` each item's image file (None: no image cell, or an unusable one), by the
    catalog's one rule (what ``mmi embed`` encodes); and the items whose image is there but
    unusable (missing, outside the dataset folder, not an image Pillow can identify)."""
    from encoders.image import check_image

    catalog = Catalog.from_dataset(dataset, platform)
    if catalog.image_field is None:
        raise ValueError(f"platform {platform!r}: its catalog {catalog.path} has no image column "
                         f"(dataset.yaml, platforms: {platform}: image:); image fine-tuning needs one")
    out: list[str | None] = [None] * len(catalog.items)
    errors = []
    for row in catalog.usable:
        try:
            path = catalog.media_path(row, catalog.image_field)
            if path is not None:
                check_image(path)
                out[row] = str(path)
        except (ValueError, OSError) as e:
            errors.append(catalog.error(row, "image", str(e)))
    return out, errors


def split(net: nn.Module, train_layers: int) -> tuple[list[nn.Module], list[nn.Module]]:
    """The frozen lower part (stem, the stages below the last ``train_layers``) and the tuned
    top part (those stages, the head's convolution and norm) of an EfficientNet, in order."""
    stages = len(net.blocks)
    if not 1 <= train_layers <= stages:
        raise ValueError(f"train_layers {train_layers}: the image encoder has {stages} stages of blocks")
    cut = stages - train_layers
    return [net.conv_stem, net.bn1, *net.blocks[:cut]], [*net.blocks[cut:], net.conv_head, net.bn2]


class ImageLowerCache(BlockCache):
    """The frozen lower part's feature maps of items, ``(platform, item_idx) -> [C, h, w]``
    float16, computed once per block of items in file order; and the tuned top part run on them.

    ``encoder``: the EfficientNet-Lite0 encoder being tuned; ``images``: each platform's item
    image files (None: blank); ``platforms``: as :class:`~.lower_cache.BlockCache` takes them.
    """

    def __init__(self, encoder, train_layers: int, images: dict[str, Sequence[str | None]],
                 platforms: Sequence[str], limit_mb: float = 1024, block: int = BLOCK):
        self.encoder, self.net, self.images = encoder, encoder.net, images
        self.lower_part, self.top_part = split(self.net, train_layers)
        super().__init__({p: np.arange(len(v)) for p, v in images.items()}, platforms, limit_mb, block)

    def embed(self, keys: Sequence[tuple[str, int]], chunk_size: int) -> torch.Tensor:
        """``[n, D]`` the encoder's vectors of the items ``keys`` (unnormalised, as ``encode``
        gives them): the top part (with gradients when enabled) on the cached feature maps,
        ``chunk_size`` items at a time, in the order of ``keys``."""
        states = self.states(keys)
        dtype = self.net.conv_head.weight.dtype
        return torch.cat([self.top(torch.stack(states[s:s + chunk_size]).to(dtype))
                          for s in range(0, len(states), chunk_size)])

    def top(self, x: torch.Tensor) -> torch.Tensor:
        """``[n, C, h, w]`` lower feature maps -> ``[n, D]``: the tuned stages, the head, the pooling,
        in eval mode (BatchNorm on its running statistics)."""
        x = x.contiguous(memory_format=torch.channels_last)
        with eval_mode(self.net):
            for module in self.top_part:
                x = module(x)
            return self.net.forward_head(x, pre_logits=True)

    def lower(self, platform: str, b: int) -> list[torch.Tensor]:
        """Block ``b`` of ``platform``: its images decoded, through the stem and the frozen stages
        in eval mode without gradients: ``[C, h, w]`` float16 per item, in block order."""
        items = self.members[platform][b * self.block:(b + 1) * self.block]
        with eval_mode(self.net), torch.no_grad():
            x = self._lower(self.pixels(platform, items))
        self.computed += len(items)
        return [h.to(STORAGE, copy=True) for h in x]

    def _lower(self, x: torch.Tensor) -> torch.Tensor:
        """``[n, 3, H, W]`` normalised pixels -> ``[n, C, h, w]`` after the frozen lower part."""
        for module in self.lower_part:
            x = module(x)
        return x

    def pixels(self, platform: str, items: np.ndarray) -> torch.Tensor:
        """``[n, 3, H, W]`` the items' images, preprocessed and normalised as the encoder does, on
        its device; an item with no usable image is blank (0 after normalisation: the mean colour)."""
        preprocess = self.encoder.preprocess
        decoded: list[np.ndarray | None] = []
        for i in items.tolist():
            path = self.images[platform][i]
            try:
                decoded.append(None if path is None else preprocess(path))
            except (ValueError, OSError) as e:
                logger.warning("%s item %d: image %s is unusable (%s); encoded as a blank image", platform, i, path, e)
                decoded.append(None)
        blank = np.zeros((preprocess.crop, preprocess.crop, 3), dtype=np.uint8)
        device = self.net.conv_stem.weight.device
        x = self.encoder.normalise(torch.from_numpy(np.stack([blank if d is None else d for d in decoded])).to(device))
        missing = torch.tensor([d is None for d in decoded], device=device)
        return x.masked_fill(missing[:, None, None, None], 0.0)


class ImageTuner:
    """Tuning an EfficientNet-Lite0 image encoder (:data:`TUNABLE`): its last ``train_layers``
    stages and head learn, on the cached output of the stages below."""

    def __init__(self, base: str):
        from multimodal_interest.embed import load_encoders

        if base.partition(":")[0] not in TUNABLE:
            raise ValueError(f"--encoder image={base}: image fine-tuning tunes EfficientNet-Lite0 "
                             f"({', '.join(TUNABLE)}:PATH), not {base.partition(':')[0]!r}")
        self.base = base
        self.encoder = load_encoders({"image": base}, device="cpu")["image"]
        self.fingerprint = self.encoder.fingerprint
        self.train_layers = DEFAULT_TRAIN_LAYERS

    def prepare(self, task: ColdStartTask, images: dict[str, Sequence[str | None]], config: FinetuneConfig) -> Tuning:
        """Make only the last stages and the head trainable; the cache of what the rest makes of
        each item (steps and validation carry no tokens: every item comes from the cache)."""
        if config.lora_rank:
            raise ValueError("lora_rank: image fine-tuning tunes the last stages' own weights (LoRA is for "
                             "text encoders); leave it at 0")
        self.train_layers = config.train_layers or DEFAULT_TRAIN_LAYERS
        _, top = split(self.encoder.net, self.train_layers)
        self.encoder.requires_grad_(False)
        for module in top:
            module.requires_grad_(True)
        lower = ImageLowerCache(self.encoder, self.train_layers, images, (task.source, task.target),
                                config.lower_cache_mb)
        return Tuning(self.encoder, self.fingerprint, None, lower, self.save)

    def save(self, encoder, folder: Path) -> None:
        """``encoder`` as a ``finetuned-image`` folder, written aside and swapped in."""
        from encoders.image import FinetunedImageEncoder

        about = {"base": self.base, "base_fingerprint": self.fingerprint, "train_layers": self.train_layers}
        write_folder(folder, lambda tmp: FinetunedImageEncoder.write(encoder, tmp, about))
