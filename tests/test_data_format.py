"""The dataset format: round trip through every table format, user links, media, vectors."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_fixtures import CLIP, write_tiny
from multimodal_interest.cli import main
from multimodal_interest.data import CrossPlatformDataset
from multimodal_interest.data.writer import DatasetDraft, PlatformDraft, write_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cat(media_samples: Path) -> Path:
    return media_samples / "images" / "chelsea.png"


@pytest.mark.parametrize("ext", ["csv", "tsv", "parquet", "jsonl"])
def test_round_trip_every_table_format(tmp_path: Path, cat: Path, ext: str) -> None:
    ds = CrossPlatformDataset.load(write_tiny(tmp_path / ext, ext, media=cat))
    assert ds.name == "tiny" and not ds.synthetic
    assert ds.platforms == ["art", "office"]
    assert ds.n_items == {"art": 3, "office": 2}
    assert ds.text_fields("art") == ("title", "attributes")
    assert ds.items["art"]["item_id"].tolist() == ["a1", "a2", "a3"]
    assert ds.items["office"]["title"].tolist() == ["stapler", "pen, blue"]
    assert ds.items["art"]["title"].tolist() == ["red paint", "brush", ""]
    # media paths are absolute, resolved inside the folder; '' where an item has none
    image = ds.items["art"]["image"].tolist()
    assert image[1] == "" and Path(image[0]).is_absolute()
    assert Path(image[0]).read_bytes() == cat.read_bytes()
    # the link makes office user 'x-u2' the same person as 'u2': 4 users, not 5
    assert sorted(ds.user_ids) == ["u1", "u2", "u3", "u4"]
    inter = ds.interactions
    u1 = inter[inter["user_id"] == "u1"]
    assert u1["item_id"].tolist() == ["o1", "a1", "a2", "a3"]  # sorted by time
    assert (inter["user_idx"].diff().dropna() >= 0).all()  # sorted by user
    assert ds.item_idx("art", ["a3", "zz"]).tolist() == [2, -1]
    u2 = inter.loc[inter["user_id"] == "u2", "user_idx"].iloc[0]
    assert ds.user_idx(["u2", "nobody"]).tolist() == [u2, -1]
    assert inter["rating"].sum() == pytest.approx(28.0) and (inter["weight"] == 1.0).all()
    vectors = ds.vectors("office", "clip")
    assert vectors.modality == "image"
    np.testing.assert_array_equal(vectors.vectors, CLIP[[1, 0]])  # file order o2, o1
    assert vectors.present.all()


def test_ties_in_time_keep_file_order(tmp_path: Path) -> None:
    ds = CrossPlatformDataset.load(write_tiny(tmp_path))
    u2 = ds.interactions[ds.interactions["user_id"] == "u2"]
    assert u2["item_id"].tolist() == ["o2", "a3", "a1"]  # a3 and a1 share time 7.0


def test_documented_example_is_a_valid_manifest(tmp_path: Path) -> None:
    doc = (REPO / "docs" / "dataset_format.md").read_text()
    example = re.search(r"## The manifest\n\n```yaml\n(.*?)```", doc, re.S).group(1)
    assert len(example.strip().splitlines()) == 10
    (tmp_path / "dataset.yaml").write_text(example)
    (tmp_path / "items").mkdir()
    (tmp_path / "media").mkdir()
    (tmp_path / "media/a.png").write_bytes(b"png")
    pd.DataFrame({"item_id": ["a"], "title": ["t"], "attributes": ["x"],
                  "image_path": ["media/a.png"]}).to_csv(tmp_path / "items/art.csv", index=False)
    pd.DataFrame({"item_id": ["b"], "title": ["u"]}).to_parquet(tmp_path / "items/office.parquet")
    (tmp_path / "vectors/office").mkdir(parents=True)
    np.savez(tmp_path / "vectors/office/clip.npz", item_id=np.array(["b"]),
             vectors=np.ones((1, 4), np.float32))
    pd.DataFrame({"user_id": ["p", "p"], "platform": ["art", "office"], "item_id": ["a", "b"],
                  "timestamp": [1, 2]}).to_csv(tmp_path / "interactions.csv", index=False)
    ds = CrossPlatformDataset.load(tmp_path)
    assert ds.platforms == ["art", "office"] and ds.vectors("office", "clip").present.all()


def test_writer_adds_standard_splits_and_refuses_to_overwrite(tmp_path: Path) -> None:
    users = [f"u{i}" for i in range(20)]
    draft = DatasetDraft(
        name="w", platforms={p: PlatformDraft(pd.DataFrame({"item_id": ["1", "2"]}))
                             for p in ("a", "b")},
        interactions=pd.DataFrame({"user_id": users * 2, "platform": ["a"] * 20 + ["b"] * 20,
                                   "item_id": ["1", "2"] * 20, "order": range(40)}))
    path = write_dataset(draft, tmp_path / "w")
    ds = CrossPlatformDataset.load(path)
    assert len(ds.splits()) == 15
    assert ds.split("cold50_seed900").counts() == {"valid": 2, "test": 10}
    with pytest.raises(FileExistsError):
        write_dataset(draft, tmp_path / "w")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]  # no temp folder left behind


def test_cli_validate_prints_statistics(tmp_path: Path, capsys) -> None:
    assert main(["validate", str(write_tiny(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "users 4 | interactions 9 | overlapping users 2" in out
    assert "| art | 3 | 3 (3) | 6 |" in out
    assert "empty text cells: art.title: 1" in out


def test_a_killed_write_leaves_nothing_that_counts(tmp_path: Path) -> None:
    draft = DatasetDraft(name="k", platforms={"a": PlatformDraft(pd.DataFrame({"item_id": ["1"]}))},
                         interactions=pd.DataFrame({"user_id": ["u"], "platform": ["a"],
                                                    "item_id": ["1"], "order": [0]}))
    leftover = tmp_path / ".k.tmp-999999999"  # what a process killed mid-write leaves
    (leftover / "items").mkdir(parents=True)
    write_dataset(draft, tmp_path / "k")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]


def test_jsonl_ids_of_mixed_types_are_text(tmp_path: Path) -> None:
    root = write_tiny(tmp_path / "ds", "jsonl")
    lines = (root / "interactions.jsonl").read_text().splitlines()
    lines[6] = lines[6].replace('"u3"', "3")  # a number where the other ids are strings
    (root / "interactions.jsonl").write_text("\n".join(lines) + "\n")
    ds = CrossPlatformDataset.load(root)
    assert sorted(ds.user_ids) == ["3", "u1", "u2", "u4"]
