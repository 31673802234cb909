"""Histories: time order, ties in table order, truncation to the last N, padding, batches."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from data_fixtures import write_tiny
from multimodal_interest.data import CrossPlatformDataset, build_histories


def events() -> pd.DataFrame:
    # user 0: items 5, 3, 9 at t=3, 1, 2 -> 3, 9, 5; user 2: 7 then 8, both t=4 (table order)
    return pd.DataFrame({"user_idx": [0, 2, 0, 0, 2, 1],
                         "platform": ["p", "p", "p", "p", "p", "q"],
                         "item_idx": [5, 7, 3, 9, 8, 1],
                         "timestamp": [3.0, 4.0, 1.0, 2.0, 4.0, 0.0]})


def test_order_padding_and_empty_users() -> None:
    h = build_histories(events(), "p", np.array([2, 1, 0]))
    assert h.items.tolist() == [[7, 8, 0], [0, 0, 0], [3, 9, 5]]
    assert h.mask.tolist() == [[True, True, False], [False] * 3, [True] * 3]
    assert h.lengths.tolist() == [2, 0, 3]
    assert h.timestamps[2].tolist() == [1.0, 2.0, 3.0]
    assert h.items.dtype == torch.int64 and h.mask.dtype == torch.bool


def test_truncation_keeps_the_most_recent() -> None:
    h = build_histories(events(), "p", np.array([0, 2]), max_len=2)
    assert h.items.tolist() == [[9, 5], [7, 8]]
    assert build_histories(events(), "p", np.array([0]), max_len=1).items.tolist() == [[5]]


def test_batches_trim_padding_to_each_batch() -> None:
    h = build_histories(events(), "p", np.array([1, 2, 0]))
    batches = list(h.batches(2))
    assert [b.items.shape for b in batches] == [(2, 2), (1, 3)]
    assert batches[0].users.tolist() == [1, 2] and batches[1].items.tolist() == [[3, 9, 5]]


def test_dataset_histories_follow_time(tmp_path: Path) -> None:
    ds = CrossPlatformDataset.load(write_tiny(tmp_path))
    h = ds.histories("art")
    ids = ds.items["art"]["item_id"].to_numpy()
    by_user = {ds.user_ids[u]: ids[row[m].numpy()].tolist()
               for u, row, m in zip(h.users, h.items, h.mask)}
    assert by_user == {"u1": ["a1", "a2", "a3"], "u2": ["a3", "a1"], "u3": ["a2"]}
    assert ds.histories("art", max_len=1).items.shape == (3, 1)


def test_a_million_rows_match_a_pandas_sort() -> None:
    rng = np.random.default_rng(0)
    n = 1_000_000
    frame = pd.DataFrame({"user_idx": rng.integers(0, 6000, n), "platform": "p",
                          "item_idx": rng.integers(0, 4000, n), "timestamp": rng.random(n)})
    users = np.arange(6000)
    h = build_histories(frame, "p", users, max_len=50)
    assert h.items.shape == (6000, 50) and bool(h.mask.all())
    last = frame.sort_values(["user_idx", "timestamp"]).groupby("user_idx").tail(1)
    rows = torch.as_tensor(last["user_idx"].to_numpy().copy())
    assert h.items[rows, -1].tolist() == last["item_idx"].tolist()
