"""Precomputed vectors keyed by item id: Last.fm-2K's real features, parquet layouts, bad files."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from encoders import EncoderInputError, create_encoder


@pytest.fixture(scope="module")
def lastfm(shared_data):
    return shared_data / "lastfm2k_multimodal"


@pytest.mark.parametrize("name, dim, modality", [("vggish", 128, "audio"), ("whisper", 512, "audio"),
                                                 ("minilm_l6", 384, "text")])
def test_lastfm_features_by_artist_id(lastfm, name, dim, modality):
    enc = create_encoder("precomputed", path=lastfm / f"{name}.npy", ids=lastfm / "item_ids.csv",
                         id_column="artistID", modality=modality)
    assert enc.dim == dim and enc.modality == modality
    ids = pd.read_csv(lastfm / "item_ids.csv")
    rows = np.load(lastfm / f"{name}.npy")
    pick = [5, 0, 1424]
    got = enc.encode([int(ids.artistID[i]) for i in pick])  # ints find the ids read as text
    np.testing.assert_array_equal(got, rows[pick].astype(np.float32))
    assert enc.encode(str(ids.artistID[3])).shape == (dim,)


def test_unknown_ids_and_bad_vectors(lastfm, tmp_path):
    enc = create_encoder("precomputed", path=lastfm / "vggish.npy", ids=lastfm / "item_ids.csv",
                         id_column="artistID")
    with pytest.raises(EncoderInputError, match=r"input 1 \(999999\): unknown item id 999999: not in .*vggish.npy"):
        enc.encode([80, 999999])
    result = enc.encode_with_errors([80, "nope", 66])
    assert result.ok == [0, 2] and list(result.errors) == [1]
    vectors = np.ones((3, 4), np.float32)
    vectors[1, 2] = np.nan
    np.save(tmp_path / "v.npy", vectors)
    (tmp_path / "ids.txt").write_text("a\nb\nc\n")
    enc = create_encoder("precomputed", path=tmp_path / "v.npy", ids=tmp_path / "ids.txt")
    assert enc.encode_with_errors(["a", "b", "c"]).errors == {1: "the vector of item 'b' holds NaN or infinite values"}


def test_parquet_layouts(tmp_path):
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    pd.DataFrame({"item_id": ["x", "y", "z"], "vec": list(vectors)}).to_parquet(tmp_path / "list.parquet")
    wide = pd.DataFrame(vectors, columns=[f"f{i}" for i in range(4)])
    wide.insert(2, "sku", [10, 11, 12])
    wide.to_parquet(tmp_path / "wide.parquet")
    listed = create_encoder("precomputed", path=tmp_path / "list.parquet")
    np.testing.assert_array_equal(listed.encode(["z", "x"]), vectors[[2, 0]])
    spread = create_encoder("precomputed", path=tmp_path / "wide.parquet", id_column="sku")
    np.testing.assert_array_equal(spread.encode([11]), vectors[[1]])
    assert spread.fingerprint != listed.fingerprint
    np.savez(tmp_path / "v.npz", item_id=np.array(["x", "y", "z"]), vectors=vectors)
    packed = create_encoder("precomputed", path=tmp_path / "v.npz", modality="image")
    np.testing.assert_array_equal(packed.encode(["y"]), vectors[[1]])
    np.savez(tmp_path / "bad.npz", ids=np.array(["x"]), vectors=vectors[:1])
    with pytest.raises(ValueError, match="no array item_id"):
        create_encoder("precomputed", path=tmp_path / "bad.npz")


def test_bad_files_are_refused_with_the_reason(tmp_path):
    np.save(tmp_path / "v.npy", np.zeros((3, 2), np.float32))
    (tmp_path / "two.txt").write_text("a\nb\n")
    (tmp_path / "dup.txt").write_text("a\nb\na\n")
    (tmp_path / "blank.txt").write_text("a\n\nc\n")
    (tmp_path / "ids.csv").write_text("id,name\n1,x\n2,y\n3,z\n")
    cases = [(dict(ids=tmp_path / "two.txt"), "2 ids for 3 vectors"),
             (dict(ids=tmp_path / "dup.txt"), "item id 'a' appears twice"),
             (dict(ids=tmp_path / "blank.txt"), "line 2: empty item id"),
             (dict(ids=tmp_path / "ids.csv"), r"no column 'item_id' \(columns: id, name\)"),
             ({}, "needs ids="),
             (dict(ids=tmp_path / "missing.csv"), "missing.csv does not exist")]
    for kwargs, message in cases:
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            create_encoder("precomputed", path=tmp_path / "v.npy", **kwargs)
    assert create_encoder("precomputed", path=tmp_path / "v.npy", ids=tmp_path / "ids.csv", id_column="id").dim == 2
    pd.DataFrame({"item_id": ["a"], "name": ["text"]}).to_parquet(tmp_path / "text.parquet")
    with pytest.raises(ValueError, match="not numeric: name"):
        create_encoder("precomputed", path=tmp_path / "text.parquet")
    with pytest.raises(ValueError, match="modality must be one of"):
        create_encoder("precomputed", path=tmp_path / "v.npy", ids=tmp_path / "ids.csv", modality="video")
