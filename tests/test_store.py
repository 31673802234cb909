"""The embedding store: round trips, refusals, atomic shards."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from multimodal_interest.store import EmbeddingStore, StoreError


class FakeEncoder:
    """Just what the store reads from an encoder: identity and width."""

    modality = "text"

    def __init__(self, fingerprint: str = "f" * 16, dim: int = 4, name: str = "sentence-transformer"):
        self.fingerprint, self.dim, self.registry_name = fingerprint, dim, name

    def get_config(self) -> dict:
        return {"model": "x"}


def vecs(n: int, dim: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def test_round_trip_and_id_order(tmp_path):
    store = EmbeddingStore(tmp_path)
    vs = store.open("office", "text", FakeEncoder())
    a, b = vecs(3), vecs(2, seed=1)
    vs.write_shard(["i0", "i1", "i2"], ["h0", "h1", "h2"], a)
    vs.write_shard(["i3", "i4"], ["h3", "h4"], b)
    got = store.load("office", "text")
    assert got.ids == ["i0", "i1", "i2", "i3", "i4"]
    assert got.vectors.dtype == torch.float32 and got.vectors.shape == (5, 4)
    assert torch.equal(got.vectors, torch.from_numpy(np.concatenate([a, b])))
    picked = store.load("office", "text", ids=["i4", "i0"])
    assert torch.equal(picked.vectors, torch.from_numpy(np.stack([b[1], a[0]])))
    assert picked.index == {"i4": 0, "i0": 1}
    manifest = json.loads((tmp_path / "office" / "text" / ("f" * 16) / "manifest.json").read_text())
    assert manifest["dim"] == 4 and manifest["encoder"]["type"] == "sentence-transformer"
    assert "torch" in manifest["versions"]


def test_newer_row_wins_and_compact_keeps_it(tmp_path):
    vs = EmbeddingStore(tmp_path).open("art", "text", FakeEncoder())
    old, new = vecs(2), vecs(1, seed=5)
    vs.write_shard(["a", "b"], ["h1", "h1"], old)
    vs.write_shard(["a"], ["h2"], new)
    assert vs.content_hashes() == {"a": "h2", "b": "h1"}
    assert torch.equal(vs.load(["a"]).vectors[0], torch.from_numpy(new[0]))
    vs.compact()
    assert len(vs.shards()) == 1
    assert vs.content_hashes() == {"a": "h2", "b": "h1"}
    assert torch.equal(vs.load(["a", "b"]).vectors, torch.from_numpy(np.stack([new[0], old[1]])))


def test_vectors_from_another_encoder_are_refused(tmp_path):
    store = EmbeddingStore(tmp_path)
    store.open("art", "text", FakeEncoder("a" * 16)).write_shard(["x"], ["h"], vecs(1))
    with pytest.raises(StoreError, match=r"no vectors from encoder b{16}.*a{16} \(sentence-transformer\)"):
        store.load("art", "text", fingerprint="b" * 16)
    with pytest.raises(StoreError, match="run `mmi embed`"):
        store.load("art", "image")


def test_missing_items_and_bad_shapes_are_refused(tmp_path):
    vs = EmbeddingStore(tmp_path).open("art", "text", FakeEncoder())
    vs.write_shard(["x"], ["h"], vecs(1))
    with pytest.raises(StoreError, match=r"1 of 2 items have no vector.*'y'"):
        vs.load(["x", "y"])
    with pytest.raises(StoreError, match="expected"):
        vs.write_shard(["y"], ["h"], vecs(1, dim=3))
    bad = vecs(1)
    bad[0, 0] = np.nan
    with pytest.raises(StoreError, match="non-finite"):
        vs.write_shard(["y"], ["h"], bad)
    assert len(vs.shards()) == 1


def test_same_fingerprint_other_dim_is_refused(tmp_path):
    store = EmbeddingStore(tmp_path)
    store.open("art", "text", FakeEncoder(dim=4))
    with pytest.raises(StoreError, match="dim 4"):
        store.open("art", "text", FakeEncoder(dim=8))


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    vs = EmbeddingStore(tmp_path).open("art", "text", FakeEncoder())

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        vs.write_shard(["x"], ["h"], vecs(1))
    assert sorted(p.name for p in vs.folder.iterdir()) == ["manifest.json"]


@pytest.mark.parametrize("name", ["", "..", "a/b", ".hidden"])
def test_names_that_are_not_folders_are_refused(tmp_path, name):
    with pytest.raises(StoreError, match="cannot be a folder name"):
        EmbeddingStore(tmp_path).open(name, "text", FakeEncoder())
