"""Top-K retrieval over one target platform's items: exact (chunked torch) or FAISS.

The score of item ``i`` for a unit query ``q`` is the model's logit::

    s_i = scale * <q, v_i> + bias_i        v_i unit item vectors [N, D], bias [N]

:class:`ExactRetriever` computes it with the model's own function
(:func:`fusion.items.logits`) chunk by chunk (memory bounded by ``chunk`` items, not
by the catalog). The FAISS indexes hold *augmented* vectors ``[scale * v_i, bias_i]`` and
are searched with ``[q, 1]``, so their inner product is the same score:

* ``flat``: brute-force inner product, exact (up to float rounding; tested against torch);
* ``ivf``: inverted lists over k-means cells (``nlist``), ``nprobe`` cells visited per query;
* ``hnsw``: a navigable small-world graph (``M`` links), ``ef_search`` candidates per query.

``ivf`` and ``hnsw`` are approximate: they may miss some of the true top-K (measure it with
:func:`recall_at_k`), but the scores they return are exact (both store the full vectors).
Every retriever takes ``exclude``: per query, item indices never to return (items the user
already has).
"""
from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fusion.items import logits

KINDS = ("exact", "flat", "ivf", "hnsw")
FAISS_KINDS = KINDS[1:]


@dataclass
class TargetItems:
    """What scoring one target platform needs: ``vectors [N, D]`` float32 (unit, or 0 for an
    item with nothing to embed), ``bias [N]`` float32 and the model's ``scale``."""

    vectors: torch.Tensor
    bias: torch.Tensor
    scale: float

    def __post_init__(self) -> None:
        n = len(self.vectors)
        if self.vectors.dim() != 2 or self.bias.shape != (n,):
            raise ValueError(f"item vectors {tuple(self.vectors.shape)} and bias {tuple(self.bias.shape)} "
                             f"do not match: expected [N, D] and [N]")
        if not (torch.isfinite(self.vectors).all() and torch.isfinite(self.bias).all()
                and math.isfinite(self.scale)):
            raise ValueError("item vectors, bias and scale must be finite")

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def augmented(self) -> np.ndarray:
        """``[N, D + 1]`` float32 ``[scale * v, bias]`` (what the FAISS indexes hold)."""
        return torch.cat([self.vectors * self.scale, self.bias[:, None]], 1).float().contiguous().numpy()


class Retriever(ABC):
    """``search(queries [B, D], k, exclude) -> (scores [B, k'], items [B, k'])``, best first;
    ``k' = min(k, N)``. A slot an approximate index could not fill holds item -1, score -inf."""

    kind: str

    @abstractmethod
    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw top-``k``: float32 scores and int64 items ``[B, k]`` (-1 where none)."""

    @property
    @abstractmethod
    def n_items(self) -> int: ...

    def search(self, queries: torch.Tensor | np.ndarray, k: int,
               exclude: list[np.ndarray] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        q = np.ascontiguousarray(torch.as_tensor(queries).float().cpu().numpy())
        if q.ndim != 2:
            raise ValueError(f"queries must be [batch, dim], got shape {q.shape}")
        k = min(int(k), self.n_items)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        extra = max((len(e) for e in exclude), default=0) if exclude else 0
        scores, items = self._search(q, min(k + extra, self.n_items))
        if extra:
            scores, items = _drop(scores, items, exclude, k)  # type: ignore[arg-type]
        return torch.from_numpy(scores[:, :k].copy()), torch.from_numpy(items[:, :k].copy())


def _drop(scores: np.ndarray, items: np.ndarray, exclude: list[np.ndarray],
          k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's excluded items, keep the first ``k`` left (pad with -1 / -inf)."""
    out_s = np.full((len(items), k), -np.inf, dtype=np.float32)
    out_i = np.full((len(items), k), -1, dtype=np.int64)
    for r, (s, i, e) in enumerate(zip(scores, items, exclude)):
        keep = ~np.isin(i, e) & (i >= 0)
        n = min(k, int(keep.sum()))
        out_s[r, :n], out_i[r, :n] = s[keep][:n], i[keep][:n]
    return out_s, out_i


class ExactRetriever(Retriever):
    """Exact top-K in torch, ``chunk`` items at a time (peak memory ``B x chunk`` scores)."""

    kind = "exact"

    def __init__(self, items: TargetItems, chunk: int = 1 << 18):
        self.items, self.chunk = items, chunk

    @property
    def n_items(self) -> int:
        return len(self.items)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = torch.from_numpy(queries)
        v, bias, scale = self.items.vectors, self.items.bias, self.items.scale
        best_s = torch.full((len(q), 0), -torch.inf)
        best_i = torch.zeros((len(q), 0), dtype=torch.int64)
        with torch.inference_mode():
            for lo in range(0, len(v), self.chunk):
                s = logits(q, v[lo:lo + self.chunk], scale, bias[lo:lo + self.chunk])
                top = s.topk(min(k, s.shape[1]), dim=1)
                cand_s = torch.cat([best_s, top.values], 1)
                cand_i = torch.cat([best_i, top.indices + lo], 1)
                keep = cand_s.topk(min(k, cand_s.shape[1]), dim=1)
                best_s, best_i = keep.values, cand_i.gather(1, keep.indices)
        return best_s.numpy(), best_i.numpy()


class FaissRetriever(Retriever):
    """A FAISS inner-product index over augmented item vectors (see the module docstring)."""

    def __init__(self, index, kind: str):
        if kind not in FAISS_KINDS:
            raise ValueError(f"unknown FAISS index kind {kind!r}; choose one of {FAISS_KINDS}")
        self.index, self.kind = index, kind

    @property
    def n_items(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    def build(cls, kind: str, items: TargetItems, nlist: int | None = None, nprobe: int = 32,
              hnsw_m: int = 32, ef_construction: int = 80, ef_search: int = 128,
              seed: int = 0) -> FaissRetriever:
        """Index ``items``. IVF: ``nlist`` cells (default ``4 sqrt(N)``, at most ``N / 39``),
        trained on up to 64 points per cell; HNSW: ``hnsw_m`` links per node."""
        import faiss

        x = items.augmented()
        d = x.shape[1]
        if kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif kind == "ivf":
            n = len(x)
            nlist = nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(seed)
            sample = x if n <= 64 * nlist else x[np.sort(rng.choice(n, 64 * nlist, replace=False))]
            index.cp.seed = seed
            index.train(sample)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = ef_construction
        else:
            raise ValueError(f"unknown FAISS index kind {kind!r}; choose one of {FAISS_KINDS}")
        index.add(x)
        out = cls(index, kind)
        out.set_search_params(nprobe=nprobe, ef_search=ef_search)
        return out

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """How hard an approximate index searches (more: slower, higher recall)."""
        if self.kind == "ivf" and nprobe is not None:
            self.index.nprobe = min(nprobe, self.index.nlist)
        if self.kind == "hnsw" and ef_search is not None:
            self.index.hnsw.efSearch = ef_search

    def params(self) -> dict[str, int]:
        if self.kind == "ivf":
            return {"nlist": int(self.index.nlist), "nprobe": int(self.index.nprobe)}
        if self.kind == "hnsw":
            return {"M": int(self.index.hnsw.nb_neighbors(1)), "ef_search": int(self.index.hnsw.efSearch)}
        return {}

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.hstack([queries, np.ones((len(queries), 1), dtype=np.float32)])
        if q.shape[1] != self.index.d:
            raise ValueError(f"queries have width {queries.shape[1]}, the index {self.index.d - 1}")
        scores, items = self.index.search(q, k)
        scores[items < 0] = -np.inf
        return scores, items.astype(np.int64)

    def save(self, path: str | Path) -> None:
        """``faiss.write_index`` to a temporary name, then rename (a reader never sees half)."""
        import faiss

        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        faiss.write_index(self.index, str(tmp))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path, kind: str) -> FaissRetriever:
        """Read an index written by :meth:`save` (memory-mapped and read-only where FAISS can)."""
        import faiss

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing FAISS index")
        flags = faiss.IO_FLAG_READ_ONLY | (faiss.IO_FLAG_MMAP if kind == "ivf" else faiss.IO_FLAG_MMAP_IFC)
        try:
            index = faiss.read_index(str(path), flags)
        except RuntimeError as e:  # FAISS's C++ exception, with a stack of its source lines
            raise ValueError(f"{path}: not a readable FAISS index ({_faiss_reason(e)}); the file is "
                             f"corrupt: re-export the bundle with `mmi export-index`") from None
        expected = {"flat": faiss.IndexFlat, "ivf": faiss.IndexIVF, "hnsw": faiss.IndexHNSW}[kind]
        if not isinstance(index, expected):
            raise ValueError(f"{path}: a FAISS {type(index).__name__}, not a {kind} index")
        return cls(index, kind)


def _faiss_reason(e: RuntimeError) -> str:
    """The reason in FAISS's C++ error text, without its source location."""
    lines = str(e).strip().splitlines() or [type(e).__name__]
    return re.sub(r"^Error in .*? at \S+:\d+: ", "", lines[0])[:300]


def recall_at_k(approx: Retriever, exact: Retriever, queries: torch.Tensor | np.ndarray,
                k: int = 10) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / k."""
    _, a = approx.search(queries, k)
    _, e = exact.search(queries, k)
    return float(np.mean([len(set(x.tolist()) & set(y.tolist())) / k for x, y in zip(a, e)]))
