"""A small deployment, made the way a user makes one: a dataset folder, an embedding store,
a trained model (``train``), then a bundle. The world is :func:`synthetic.synthetic_task`
(planted cross-platform signal), written out as files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from encoders import create_encoder
from multimodal_interest.data.dataset import CrossPlatformDataset
from multimodal_interest.store import EmbeddingStore
from multimodal_interest.training import ItemFeatures, TrainConfig, train
from synthetic import synthetic_task

MANIFEST = """\
name: serving-world
synthetic: true
description: synthetic two-platform world with planted signal (tests/synthetic.py)
provenance: tests/serving_world.py
licence: CC0
interactions: interactions.csv
platforms:
  a: {items: items/a.csv, text: [title]}
  b: {items: items/b.csv, text: [title]}
"""
NEW_ITEMS = 5  # items of b that no one has: never seen in training, ranked by content alone
SMALL = dict(kind="transformer", dim=32, n_heads=2, n_layers=1, batch_size=64, lr=5e-3, dropout=0.0, max_len=8,
             item_ids=True, min_epoch_steps=1)


def item_id(platform: str, i: int) -> str:
    return f"{platform}{i}"


def write_world(root: Path, n_users: int = 300) -> tuple[CrossPlatformDataset, EmbeddingStore]:
    """The dataset folder ``root/data`` and the store ``root/store`` (precomputed text vectors)."""
    task, features = synthetic_task(n_users=n_users, latent=4)
    new = torch.randn(NEW_ITEMS, features.vectors["b"]["text"].shape[1], generator=torch.Generator().manual_seed(0))
    features.vectors["b"]["text"] = torch.cat([features.vectors["b"]["text"], new])  # on no one's history
    task.n_items["b"] += NEW_ITEMS
    data = root / "data"
    (data / "items").mkdir(parents=True)
    (data / "splits").mkdir()
    (data / "dataset.yaml").write_text(MANIFEST)
    for p, n in task.n_items.items():
        ids = [item_id(p, i) for i in range(n)]
        pd.DataFrame({"item_id": ids, "title": [f"item {i}" for i in ids]}).to_csv(data / f"items/{p}.csv", index=False)
    rows = pd.concat([task.train, task.holdout]).sort_values(["user_idx", "timestamp"], kind="stable")
    pd.DataFrame({"user_id": "u" + rows["user_idx"].astype(str), "platform": rows["platform"],
                  "item_id": [item_id(p, i) for p, i in zip(rows["platform"], rows["item_idx"])],
                  "timestamp": rows["timestamp"]}).to_csv(data / "interactions.csv", index=False)
    split = pd.DataFrame({"user_id": [f"u{u}" for u in [*task.valid_users, *task.test_users]],
                          "role": ["valid"] * len(task.valid_users) + ["test"] * len(task.test_users),
                          "target": "b"})
    split.to_csv(data / "splits/s0.csv", index=False)
    store = EmbeddingStore(root / "store")  # one encoder for both platforms, as `mmi embed` does
    ids = {p: [item_id(p, i) for i in range(n)] for p, n in task.n_items.items()}
    np.savez(root / "text.npz", item_id=np.array(ids["a"] + ids["b"]),
             vectors=np.concatenate([features.vectors[p]["text"].numpy() for p in ("a", "b")]))
    encoder = create_encoder("precomputed", path=root / "text.npz", modality="text")
    for p in ("a", "b"):
        vectors = features.vectors[p]["text"].numpy()
        store.open(p, "text", encoder).write_shard(ids[p], ["-"] * len(vectors), vectors)
    return CrossPlatformDataset.load(data), store


def train_model(dataset: CrossPlatformDataset, store: EmbeddingStore, out: Path, epochs: int = 2,
                seed: int = 0, **settings) -> Path:
    """``mmi train``'s path: the run folder of a small model trained a->b on split s0
    (``settings``: TrainConfig values over :data:`SMALL`)."""
    task = dataset.cold_start("a", "b", "s0")
    ids = {p: dataset.items[p]["item_id"].tolist() for p in ("a", "b")}
    features = ItemFeatures.from_store(store, ids)
    config = TrainConfig(**{**SMALL, **settings}, epochs=epochs, patience=epochs, seed=seed)
    train(task, features, config, out, progress_bar=False)
    return out


def assert_same_ranking(scores_a, items_a, scores_b, items_b, atol: float = 1e-4) -> None:
    """Two top-K results agree: the same scores position by position, and the same items
    except where two items' scores tie within ``atol`` (float rounding may swap those)."""
    import torch

    scores_a, scores_b = torch.as_tensor(scores_a).double(), torch.as_tensor(scores_b).double()
    assert torch.allclose(scores_a, scores_b, atol=atol)
    items_a, items_b = torch.as_tensor(items_a), torch.as_tensor(items_b)
    for pos in (items_a != items_b).nonzero().tolist():
        row = scores_a[tuple(pos[:-1])]
        col = pos[-1]
        neighbours = row[max(col - 1, 0):col + 2]
        assert (neighbours - row[col]).abs().sort().values[1] <= atol, f"items differ at {pos} without a tie"
