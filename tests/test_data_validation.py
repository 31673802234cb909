"""Bad input is rejected with the file, line (or row) and column, and what was expected."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_fixtures import ART, INTERACTIONS, OFFICE, write_tiny
from multimodal_interest.cli import main
from multimodal_interest.data import CrossPlatformDataset, DatasetError
from multimodal_interest.data.errors import Problem
from multimodal_interest.data.importers import create_draft
from multimodal_interest.data.tables import write_table


def problems(root: Path) -> list[str]:
    with pytest.raises(DatasetError) as info:
        CrossPlatformDataset.load(root)
    return [str(p) for p in info.value.problems]


def with_interactions(tmp_path: Path, frame: pd.DataFrame, ext: str = "csv") -> Path:
    root = write_tiny(tmp_path / "ds", ext)
    write_table(frame, root / f"interactions.{ext}")
    return root


def test_missing_column(tmp_path: Path) -> None:
    root = with_interactions(tmp_path, INTERACTIONS.drop(columns="item_id"))
    assert problems(root) == ["interactions.csv:1: missing column 'item_id' (columns found: "
                              "user_id, platform, timestamp, rating)"]


def test_missing_time_and_order(tmp_path: Path) -> None:
    root = with_interactions(tmp_path, INTERACTIONS.drop(columns="timestamp"))
    assert any("interactions.csv:1: missing column 'timestamp' or 'order'" in p
               for p in problems(root))


@pytest.mark.parametrize("column,value,expected", [
    ("timestamp", "soon", "expected a finite number, found 'soon'"),
    ("rating", "", "expected a number, found ''"),
    ("user_id", "", "missing value"),
])
def test_wrong_type_or_missing_value_names_line_and_column(tmp_path: Path, column: str,
                                                           value: str, expected: str) -> None:
    frame = INTERACTIONS.astype({column: object})
    frame.loc[3, column] = value  # data row 3 = line 5 (header is line 1)
    assert problems(with_interactions(tmp_path, frame)) == [
        f"interactions.csv:5: column '{column}': {expected}"]


def test_order_must_be_an_integer(tmp_path: Path) -> None:
    frame = INTERACTIONS.drop(columns="timestamp").assign(order=[0, 1, 2, 3.5, 4, 5, 6, 7, 8])
    assert problems(with_interactions(tmp_path, frame)) == [
        "interactions.csv:5: column 'order': expected an integer within int64 (a position), found '3.5'"]


def test_wrong_type_in_parquet_names_the_row(tmp_path: Path) -> None:
    frame = INTERACTIONS.astype({"timestamp": str})
    frame.loc[6, "timestamp"] = "yesterday"
    assert problems(with_interactions(tmp_path, frame, "parquet")) == [
        "interactions.parquet: row 7: column 'timestamp': expected a finite number, found 'yesterday'"]


def test_unknown_item_and_platform(tmp_path: Path) -> None:
    frame = INTERACTIONS.copy()
    frame.loc[1, "item_id"] = "o9"
    frame.loc[2, "platform"] = "garden"
    assert problems(with_interactions(tmp_path, frame)) == [
        "interactions.csv:4: column 'platform': unknown platform 'garden' (expected one of art, "
        "office)",
        "interactions.csv:3: column 'item_id': item_id 'o9' is not in the items of platform "
        "'office' (items/office.csv)"]


def test_duplicate_item_ids(tmp_path: Path) -> None:
    root = write_tiny(tmp_path / "ds")
    write_table(pd.concat([ART, ART.iloc[[1]]]), root / "items/art.csv")
    assert problems(root) == ["items/art.csv:5: column 'item_id': duplicate item_id 'a2' (item ids "
                              "are unique within a platform)"]


def test_empty_platforms(tmp_path: Path) -> None:
    root = write_tiny(tmp_path / "ds")
    write_table(OFFICE.iloc[:0], root / "items/office.csv")
    write_table(INTERACTIONS[INTERACTIONS["platform"] == "art"], root / "interactions.csv")
    (root / "vectors/office_clip.npz").unlink()
    found = problems(root)
    assert "items/office.csv: platform 'office' has no items (empty platform)" in found
    assert "interactions.csv: platform 'office' has no interactions (empty platform)" in found


LEAVES = "path {path!r} leaves {root} (its real path, links followed, is {real})"


@pytest.mark.parametrize("path,expected", [
    ("../outside.png", LEAVES),
    ("media/../../outside.png", LEAVES),
    ("/etc/hostname", LEAVES),
    ("media/dog.png", "media file 'media/dog.png' not found"),
])
def test_bad_media_paths(tmp_path: Path, path: str, expected: str) -> None:
    root = write_tiny(tmp_path / "ds")
    (tmp_path / "outside.png").write_bytes(b"x")
    write_table(ART.assign(image=["media/cat.png", path, ""]), root / "items/art.csv")
    real = os.path.realpath(os.path.join(root, path))
    assert problems(root) == [f"items/art.csv:3: column 'image': "
                              f"{expected.format(path=path, root=root, real=real)}"]


def test_symlink_out_of_the_folder_escapes(tmp_path: Path) -> None:
    root = write_tiny(tmp_path / "ds")
    (tmp_path / "secret.png").write_bytes(b"x")
    (root / "media/link.png").symlink_to(tmp_path / "secret.png")
    write_table(ART.assign(image=["media/link.png", "", ""]), root / "items/art.csv")
    assert problems(root) == ["items/art.csv:2: column 'image': " + LEAVES.format(
        path="media/link.png", root=root, real=os.path.realpath(tmp_path / "secret.png"))]


def test_manifest_problems_name_their_line(tmp_path: Path) -> None:
    root = write_tiny(tmp_path / "ds")
    text = (root / "dataset.yaml").read_text()
    text = text.replace("    text: [title]\n", "    txt: [title]\n").replace(
        "synthetic: false", "synthetic: sometimes")
    (root / "dataset.yaml").write_text(text.replace("interactions: interactions.csv\n", ""))
    assert problems(root) == [
        "dataset.yaml: missing required key 'interactions'",
        "dataset.yaml:14: platforms.office.txt: unknown key (expected one of items, text, "
        "image, audio, vectors)",
        "dataset.yaml:2: synthetic: expected bool, found 'sometimes'"]


def test_manifest_paths_stay_inside(tmp_path: Path) -> None:
    root = write_tiny(tmp_path / "ds")
    text = (root / "dataset.yaml").read_text().replace("items/art.csv", "../art.csv")
    (root / "dataset.yaml").write_text(text)
    assert problems(root) == ["../art.csv: " + LEAVES.format(
        path="../art.csv", root=root, real=os.path.realpath(tmp_path / "art.csv"))]


def test_not_a_dataset_folder(tmp_path: Path) -> None:
    assert problems(tmp_path) == [f"{tmp_path}: not a dataset folder: none of dataset.yaml, "
                                  "dataset.yml, dataset.json found"]


def test_csv_with_a_short_line(tmp_path: Path) -> None:
    root = write_tiny(tmp_path / "ds")
    lines = (root / "interactions.csv").read_text().splitlines()
    lines[6] = "u3,art,a2"
    (root / "interactions.csv").write_text("\n".join(lines) + "\n")
    assert problems(root) == ["interactions.csv:7: expected 5 fields (as in the header), found 3"]


def test_csv_quoted_newlines_keep_line_numbers_exact(tmp_path: Path) -> None:
    root = write_tiny(tmp_path / "ds")
    write_table(OFFICE.assign(title=["two\nlines", "pen"]), root / "items/office.csv")
    frame = INTERACTIONS.copy()
    write_table(frame, root / "interactions.csv")
    items = ART.assign(title=["multi\nline\ntitle", "brush", ""], item_id=["a1", "a1", "a3"])
    write_table(items, root / "items/art.csv")
    assert "items/art.csv:5: column 'item_id': duplicate item_id 'a1' (item ids are unique " \
           "within a platform)" in problems(root)


def test_invalid_utf8(tmp_path: Path) -> None:
    root = write_tiny(tmp_path / "ds")
    raw = (root / "items/office.csv").read_bytes().replace(b"stapler", b"stap\xffler")
    (root / "items/office.csv").write_bytes(raw)
    assert problems(root) == ["items/office.csv:2: not valid UTF-8 text: byte 0xff at byte 8 of "
                              "the line (byte 21 of the file); save the file as UTF-8"]


def test_jsonl_bad_line(tmp_path: Path) -> None:
    root = write_tiny(tmp_path / "ds", "jsonl")
    lines = (root / "interactions.jsonl").read_text().splitlines()
    lines[4] = '{"user_id": "u2", "platform": "art",'
    (root / "interactions.jsonl").write_text("\n".join(lines) + "\n")
    found = problems(root)
    assert len(found) == 1 and found[0].startswith("interactions.jsonl:5: not valid JSON")


def test_vectors_of_unknown_items(tmp_path: Path) -> None:
    root = write_tiny(tmp_path / "ds")
    np.savez(root / "vectors/office_clip.npz", item_id=np.array(["o1", "zz"]),
             vectors=np.ones((2, 3), np.float32))
    assert problems(root) == ["vectors/office_clip.npz: row 2: column 'item_id': item_id 'zz' is "
                              "not an item of platform 'office'"]


def test_bad_user_links(tmp_path: Path) -> None:
    root = write_tiny(tmp_path / "ds")
    write_table(pd.DataFrame({"platform": ["office", "office", "moon"],
                              "user_id": ["x-u2", "x-u2", "u1"], "person_id": ["u2", "u9", "u1"]}),
                root / "user_links.csv")
    assert problems(root) == [
        "user_links.csv:4: column 'platform': unknown platform 'moon' (expected one of art, "
        "office)",
        "user_links.csv:3: column 'user_id': user 'x-u2' is linked twice on the same platform"]


def test_many_bad_rows_are_counted_not_listed(tmp_path: Path) -> None:
    frame = pd.concat([INTERACTIONS] * 3, ignore_index=True).assign(item_id="nope")
    found = problems(with_interactions(tmp_path, frame))
    assert len(found) == (10 + 1) + 9  # art: 18 bad rows, 10 listed + a count; office: 9
    assert "interactions.csv: column 'item_id': ... and 8 more rows like these" in found


def test_bad_split_file(tmp_path: Path) -> None:
    ds = CrossPlatformDataset.load(write_tiny(tmp_path / "ds"))
    (ds.root / "splits").mkdir()
    pd.DataFrame({"user_id": ["u1", "nobody", "u2", "u2"], "role": ["test", "test", "dev", "valid"],
                  "target": ["*", "office", "art", "*"]}).to_csv(ds.root / "splits/mine.csv",
                                                                 index=False)
    with pytest.raises(DatasetError) as info:
        ds.cold_start("art", "office", "mine")
    assert [str(p) for p in info.value.problems] == [
        "splits/mine.csv:4: column 'role': unknown role 'dev' (expected valid or test)",
        "splits/mine.csv:3: column 'user_id': user 'nobody' is not in the dataset",
        "splits/mine.csv:5: column 'user_id': user 'u2' is listed more than once for the same "
        "target"]
    with pytest.raises(DatasetError, match="no split 'other'"):
        ds.cold_start("art", "office", "other")


def test_cli_validate_lists_problems_and_fails(tmp_path: Path, capsys) -> None:
    frame = INTERACTIONS.copy()
    frame.loc[0, "item_id"] = "a7"
    assert main(["validate", str(with_interactions(tmp_path, frame))]) == 1
    out = capsys.readouterr().out
    assert "interactions.csv:2: column 'item_id': item_id 'a7' is not in the items of platform " \
           "'art'" in out
    assert out.splitlines()[0].endswith(": 1 problem:")  # the error's headline, then every problem


def test_importer_rejects_bad_raw_lines(tmp_path: Path) -> None:
    for half in ("game_video", "video_game"):
        (tmp_path / half).mkdir()
        for name in ("train", "valid", "test", "common_new_reindex"):
            (tmp_path / half / f"{name}.txt").write_text("0\t1\t1\n" if name.startswith("common")
                                                         else "0\t1\n")
    (tmp_path / "video_game/train.txt").write_text("0\t1\n1\tx7\n")
    with pytest.raises(DatasetError) as info:
        create_draft("cdrib", tmp_path / "game_video")
    assert [str(p) for p in info.value.problems] == [
        f"{tmp_path}/video_game/train.txt:2: column 'item': expected an integer, found 'x7'"]


def test_importer_rejects_a_bad_recbole_header(tmp_path: Path) -> None:
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy/toy.inter").write_text("user_id:token\titem_id\n1\t2\n")
    with pytest.raises(DatasetError) as info:
        create_draft("recbole", tmp_path / "toy")
    assert [str(p) for p in info.value.problems] == [
        f"{tmp_path}/toy/toy.inter:1: header field 'item_id': expected 'name:type' with type "
        "token, token_seq, float or float_seq"]


def test_a_dataset_error_carries_its_context_and_headline() -> None:
    error = DatasetError([Problem("items.csv", "bad", line=2), Problem("items.csv", "worse", line=3)],
                         "dataset 'x'")
    assert (error.context, error.headline) == ("dataset 'x'", "dataset 'x': 2 problems:")
    assert str(error).splitlines() == ["dataset 'x': 2 problems:", "  items.csv:2: bad", "  items.csv:3: worse"]
    assert DatasetError([], "dataset 'y'").headline == str(DatasetError([], "dataset 'y'")) == "dataset 'y'"
