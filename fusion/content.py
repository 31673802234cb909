"""A learned item space's content head: vectors for items added to a target's catalog after
training, from what the items are.

The closed-form fit gives every target item it trained on a learned vector ``V_j``; an item
nobody touched gets ``rho * c_j M`` from its content ``c_j`` (Gantner et al., ICDM 2010;
:mod:`multimodal_interest.training.closed_form.items`), and a content blend adds columns of
``c_j`` itself. This head keeps that linear map, so an item the catalog gains later is scored
as an untouched item of the training catalog was::

    tokens  t_j = l2(sublinear tf(text_j) * idf) @ lsa / scale_tokens      [k]
    m       x_j = (vector_m(j) - mu_m) @ W_m / scale_m   (0 without m)    [d_m]
    c_j     = [blocks in ``config.blocks`` order]                          [F]
    v_j     = c_j @ map                                                    [width]

``map [F, width]`` is whatever linear map the fit made (e.g. ``rho M`` in the first columns,
the identity of the blend's blocks in its own); columns it leaves 0 (a popularity column)
are 0 for a new item.

The text rule is scikit-learn's ``TfidfVectorizer`` default (lower case, tokens of two or more
word characters, ``(?u)\\b\\w\\w+\\b``) with sublinear tf and unit-length rows, the vocabulary
and idf those of the fit; a token outside the vocabulary counts for nothing. An item with no
known token and no vector has ``c_j = 0``: its vector is 0, as an untouched training item's
without content is.

It saves as a part (``config.json``: the blocks, scales, vocabulary and the fingerprint
of the catalog it was trained on; ``model.safetensors``: idf, LSA basis, whitening, map).
Pure torch and the standard library, like the rest of ``fusion``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from fusion.config import check_name, from_dict
from fusion.saving import load_part, part_files, read_part_config, save_part

TOKENS = "tokens"  # the block of the items' texts (as the closed-form fit names it)
TOKEN_PATTERN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token_pattern


def catalog_fingerprint(item_ids: Sequence[str]) -> str:
    """``sha256:<hex>`` of a catalog's item ids in item_idx order: which items, in which rows."""
    return "sha256:" + hashlib.sha256(json.dumps(list(item_ids), ensure_ascii=False).encode()).hexdigest()


@dataclass
class ContentHeadConfig:
    """What builds a :class:`ContentHead` (its ``config.json``)."""

    blocks: list[str]  # the content's blocks, in the order of their columns: "tokens" and/or modalities
    width: int  # the item vectors' width (the fusion's)
    scale: dict[str, float]  # block -> the root mean square its vectors were divided by
    modalities: dict[str, int] = field(default_factory=dict)  # modality block -> its vectors' width
    vocabulary: list[str] = field(default_factory=list)  # the tokens block: token of tf-idf column i
    lsa_dims: int = 0  # the tokens block's width
    n_items: int = 0  # the catalog the model was trained on: its first n_items rows
    catalog: str | None = None  # catalog_fingerprint of those items' ids (None: not recorded)

    def __post_init__(self) -> None:
        if len(set(self.blocks)) != len(self.blocks) or not self.blocks:
            raise ValueError(f"blocks {self.blocks}: expected distinct block names, at least one")
        for b in self.blocks:
            if b != TOKENS and b not in self.modalities:
                raise ValueError(f"block {b!r} is neither {TOKENS!r} nor a modality of {sorted(self.modalities)}")
            if not isinstance(self.scale.get(b), (int, float)) or not self.scale[b] > 0:
                raise ValueError(f"block {b!r}: scale must be a positive number, got {self.scale.get(b)!r}")
        for m in self.modalities:
            check_name("modality", m)
        if TOKENS in self.blocks and (not self.vocabulary or self.lsa_dims < 1):
            raise ValueError(f"the {TOKENS!r} block needs a vocabulary and lsa_dims >= 1")
        if len(set(self.vocabulary)) != len(self.vocabulary):
            raise ValueError("the vocabulary repeats a token")

    @property
    def features(self) -> int:
        """``F``: the content's width, every block's columns."""
        return sum(self.lsa_dims if b == TOKENS else self.modalities[b] for b in self.blocks)


class ContentHead(nn.Module):
    """See the module docstring. Buffers: ``idf [V]``, ``lsa [V, k]`` (the tokens block),
    ``mu_<m> [d_m]``, ``whiten_<m> [d_m, d_m]`` (each modality block), ``map [F, width]``."""

    def __init__(self, config: ContentHeadConfig):
        super().__init__()
        self.config = config
        v = len(config.vocabulary)
        self.register_buffer("idf", torch.zeros(v))
        self.register_buffer("lsa", torch.zeros(v, config.lsa_dims))
        for m, d in config.modalities.items():
            self.register_buffer(f"mu_{m}", torch.zeros(d))
            self.register_buffer(f"whiten_{m}", torch.zeros(d, d))
        self.register_buffer("map", torch.zeros(config.features, config.width))
        self._column = {t: i for i, t in enumerate(config.vocabulary)}

    @property
    def modalities(self) -> list[str]:
        """The modalities whose vectors the head reads (those of its blocks)."""
        return [b for b in self.config.blocks if b != TOKENS]

    @property
    def reads_text(self) -> bool:
        return TOKENS in self.config.blocks

    def tfidf(self, texts: Sequence[str]) -> torch.Tensor:
        """``[K, V]`` (sparse) each text's tf-idf row over the vocabulary, unit length (0 for a
        text with no known token)."""
        rows, cols, values = [], [], []
        idf = self.idf.double().cpu()
        for r, text in enumerate(texts):
            counts = Counter(c for t in TOKEN_PATTERN.findall(text.lower()) if (c := self._column.get(t)) is not None)
            if not counts:
                continue
            col = torch.tensor(list(counts), dtype=torch.long)
            w = (1.0 + torch.tensor(list(counts.values()), dtype=torch.float64).log()) * idf[col]
            rows += [r] * len(col)
            cols.append(col)
            values.append(w / w.norm())
        size = (len(texts), len(self.config.vocabulary))
        if not rows:
            index, values = torch.zeros(2, 0, dtype=torch.long), [torch.zeros(0, dtype=torch.float64)]
        else:
            index = torch.stack([torch.tensor(rows), torch.cat(cols)])
        return torch.sparse_coo_tensor(index, torch.cat(values), size, check_invariants=True)

    def content(self, n: int, texts: Sequence[str] | None = None,
                vectors: Mapping[str, torch.Tensor] | None = None,
                present: Mapping[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(c [n, F] float64, has [n] bool)`` of ``n`` items: ``texts`` (``n`` strings; needed
        when the head reads text), ``vectors[m]`` ``[n, d_m]`` and ``present[m]`` bool ``[n]``
        (default: all present) for each modality the head reads (one not given: no item has it).
        ``has``: the item has some content the head reads."""
        vectors, present = dict(vectors or {}), dict(present or {})
        parts, has = [], torch.zeros(n, dtype=torch.bool)
        for b in self.config.blocks:
            s = self.config.scale[b]
            if b == TOKENS:
                if texts is None or len(texts) != n:
                    raise ValueError(f"the content head reads the items' texts: give {n} of them")
                c = torch.sparse.mm(self.tfidf(texts), self.lsa.double().cpu()) / s  # [n, k]
                has |= (c != 0).any(1)
            elif b in vectors:
                d = self.config.modalities[b]
                x = torch.as_tensor(vectors[b]).double().cpu()
                if x.shape != (n, d):
                    raise ValueError(f"modality {b!r}: vectors of shape {tuple(x.shape)}, expected [{n}, {d}]")
                with_m = torch.as_tensor(present[b]).cpu() if b in present else torch.ones(n, dtype=torch.bool)
                if with_m.shape != (n,) or with_m.dtype != torch.bool:
                    raise ValueError(f"modality {b!r}: present must be bool [{n}], got {with_m.dtype} "
                                     f"{tuple(with_m.shape)}")
                x = torch.where(with_m[:, None], x, 0.0)
                if not bool(torch.isfinite(x).all()):
                    raise ValueError(f"modality {b!r}: NaN or infinite values among the items that have it")
                white = (x - getattr(self, f"mu_{b}").double().cpu()) @ getattr(self, f"whiten_{b}").double().cpu()
                c = torch.where(with_m[:, None], white / s, 0.0)
                has |= with_m
            else:
                c = torch.zeros(n, self.config.modalities[b], dtype=torch.float64)
            parts.append(c)
        return torch.cat(parts, 1), has

    def item_vectors(self, n: int, texts: Sequence[str] | None = None,
                     vectors: Mapping[str, torch.Tensor] | None = None,
                     present: Mapping[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(v [n, width] float32, has [n] bool)``: ``c @ map`` (see :meth:`content`)."""
        c, has = self.content(n, texts, vectors, present)
        return (c @ self.map.double().cpu()).float(), has

    def save(self, folder: str | os.PathLike) -> None:
        save_part(self, folder, asdict(self.config))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> ContentHead:
        files = part_files(folder)
        config = from_dict(ContentHeadConfig, read_part_config(files), str(files.root / "config.json"))
        return load_part(files, lambda: cls(config))
