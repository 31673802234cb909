"""One rule for ids and one for the numbers of an interaction, wherever they are read:
``mmi import``, the dataset loader, ``mmi recommend-batch`` and ``mmi recommend``
(issue 31, round two: tables and ids)."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from data_fixtures import write_tiny
from multimodal_interest.cli import main
from multimodal_interest.batch import read_chunks
from multimodal_interest.data import CrossPlatformDataset, DatasetError
from multimodal_interest.recommend import UserHistories

NFD, NFC = "cafe\u0301", "caf\u00e9"  # the two spellings of café


def interactions(**changes) -> pd.DataFrame:
    """Six users on both platforms, one row each per platform; ``changes``: column -> values."""
    users = [f"u{n}" for n in range(6)]
    frame = pd.DataFrame({"user": users * 2, "platform": ["art"] * 6 + ["office"] * 6,
                          "item": ["a1"] * 6 + ["o1"] * 6, "position": [0] * 6 + [1] * 6})
    for column, values in changes.items():
        frame[column] = values
    return frame


def import_csv(tmp_path: Path, frame: pd.DataFrame, *extra: str) -> int:
    path = tmp_path / "inter.csv"
    frame.to_csv(path, index=False)
    return main(["import", "csv", str(path), str(tmp_path / "ds"), *extra])


# ---------------------------------------------------------------------- ids
def test_import_refuses_control_characters_and_overlong_ids_naming_the_row(tmp_path, capsys):
    user = [f"u{n}" for n in range(6)] * 2
    user[1] = "u\x00x"
    item = ["a1"] * 6 + ["o1"] * 6
    item[8] = "o" * 1_000_000
    assert import_csv(tmp_path, interactions(user=user, item=item)) == 2
    err = capsys.readouterr().err
    path = tmp_path / "inter.csv"
    assert f"{path}:3: column 'user_id': a control character in the id 'u\\x00x'" in err
    assert f"{path}:10: column 'item_id': an id of 1000000 characters (ids are at most 256)" in err
    assert "o" * 300 not in err  # the id itself is not printed
    assert not (tmp_path / "ds").exists()


def test_import_reads_nfc_and_nfd_twins_as_one_user_and_warns_naming_both(tmp_path, caplog):
    user = [f"u{n}" for n in range(6)] * 2
    user[0], user[6] = NFD, NFC  # one person, two spellings: art in NFD, office in NFC
    items = tmp_path / "art.csv"
    pd.DataFrame({"item": ["a1", NFD], "title": ["x", "y"]}).to_csv(items, index=False)
    frame = interactions(user=user, item=[NFC] + ["a1"] * 5 + ["o1"] * 6)
    with caplog.at_level(logging.WARNING):
        assert import_csv(tmp_path, frame, "--items", f"art={items}") == 0
    warned = [r.getMessage() for r in caplog.records if "same id in Unicode NFC" in r.getMessage()]
    assert warned == [f"{tmp_path / 'inter.csv'}:2 and {tmp_path / 'inter.csv'}:8: user_id "
                      f"'cafe\\u0301' and 'caf\\xe9' are the same id in Unicode NFC ('{NFC}'): read as one"]
    ds = CrossPlatformDataset.load(tmp_path / "ds")
    assert ds.n_users == 6 and NFC in ds.user_ids.tolist()
    assert ds.items["art"]["item_id"].tolist() == ["a1", NFC]  # the items table's NFD id, kept as NFC
    mine = ds.interactions[ds.interactions["user_id"] == NFC]
    assert mine["item_id"].astype(str).tolist() == [NFC, "o1"]  # found in the items table
    assert UserHistories(ds)(NFD) == [("art", NFC), ("office", "o1")]  # `mmi recommend --user`


def test_loader_refuses_bad_ids_of_a_hand_made_folder(tmp_path):
    root = write_tiny(tmp_path / "tiny")
    inter = pd.read_csv(root / "interactions.csv", dtype=str)
    inter.loc[2, "user_id"] = "u1\x1b[2J"
    inter.to_csv(root / "interactions.csv", index=False)
    with pytest.raises(DatasetError, match=r"interactions.csv:4: column 'user_id': a control "
                                           r"character in the id 'u1\\x1b\[2J'"):
        CrossPlatformDataset.load(root)


# ---------------------------------------------------------------------- numbers
@pytest.mark.parametrize("value", ["-1", "inf", "-inf"])
def test_import_refuses_negative_and_non_finite_weights(tmp_path, capsys, value):
    weight = ["1"] * 12
    weight[4] = value
    assert import_csv(tmp_path, interactions(weight=weight)) == 2
    assert (f"{tmp_path / 'inter.csv'}:6: column 'weight': expected a finite number >= 0, found "
            f"'{value}'") in capsys.readouterr().err


@pytest.mark.parametrize("value", ["1e30", "2.5", "-1e19"])
def test_import_refuses_positions_that_are_not_int64(tmp_path, capsys, value):
    position = ["0"] * 6 + ["1"] * 6
    position[7] = value
    assert import_csv(tmp_path, interactions(position=position)) == 2
    assert (f"{tmp_path / 'inter.csv'}:9: column 'order': expected an integer within int64 (a "
            f"position), found '{value}'") in capsys.readouterr().err


def test_import_stores_positions_as_int64(tmp_path):
    position = [0] * 6 + [2 ** 40] * 6
    assert import_csv(tmp_path, interactions(position=position)) == 0
    stored = pq.read_table(tmp_path / "ds" / "interactions.parquet")
    assert str(stored.schema.field("order").type) == "int64"
    assert stored.column("order").to_pylist()[-1] == 2 ** 40


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_recommend_batch_and_import_refuse_the_same_timestamps(tmp_path, capsys, value):
    """One rule for both: what `mmi import` refuses, `mmi recommend-batch` refuses, in the
    same words."""
    stamps = ["1"] * 12
    stamps[3] = value
    assert import_csv(tmp_path, interactions(time=stamps)) == 2
    want = f"column 'timestamp': expected a finite number, found '{value}'"
    assert f"{tmp_path / 'inter.csv'}:5: {want}" in capsys.readouterr().err
    path = tmp_path / "h.csv"
    pd.DataFrame({"user_id": ["u1", "u1", "u2"], "item_id": ["a1", "a2", "a1"],
                  "timestamp": ["1", value, "2"]}).to_csv(path, index=False)
    with pytest.raises(DatasetError, match=f"h.csv:3: {want}"):
        list(read_chunks(path, 10, "art"))


def test_import_of_a_header_only_file_names_the_file(tmp_path, capsys):
    path = tmp_path / "inter.csv"
    path.write_text("user,platform,item\n")
    assert main(["import", "csv", str(path), str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert f"{path}: no interactions: the file has a header and no rows" in err
    assert ".tmp-" not in err and "dataset.yaml" not in err


def test_loader_refuses_negative_weights_and_infinite_times_of_a_hand_made_folder(tmp_path):
    root = write_tiny(tmp_path / "tiny")
    inter = pd.read_csv(root / "interactions.csv", dtype=str)
    inter["weight"] = "1"
    inter.loc[1, "weight"] = "-2"
    inter.loc[3, "timestamp"] = "inf"
    inter.to_csv(root / "interactions.csv", index=False)
    with pytest.raises(DatasetError) as caught:
        CrossPlatformDataset.load(root)
    shown = [str(p) for p in caught.value.problems]
    assert shown == ["interactions.csv:5: column 'timestamp': expected a finite number, found 'inf'",
                     "interactions.csv:3: column 'weight': expected a finite number >= 0, found '-2'"]


# ---------------------------------------------------------------------- recommend-batch ids
def test_recommend_batch_reads_ids_in_nfc_and_refuses_control_characters(tmp_path):
    path = tmp_path / "h.csv"
    pd.DataFrame({"user_id": [NFD, NFC, "u2"], "item_id": ["a1", NFD, "a1"]}).to_csv(path, index=False)
    chunk, = read_chunks(path, 10, "art")
    assert chunk.users == [(NFC, [("art", "a1"), ("art", NFC)]), ("u2", [("art", "a1")])]  # one user
    pd.DataFrame({"user_id": ["u1", "u\x00"], "item_id": ["a1", "a1"]}).to_csv(path, index=False)
    with pytest.raises(DatasetError, match=r"h.csv:3: column 'user_id': a control character"):
        list(read_chunks(path, 10, "art"))
    pd.DataFrame({"user_id": ["u1"], "item_id": ["a" * 257]}).to_csv(path, index=False)
    with pytest.raises(DatasetError, match=r"h.csv:2: column 'item_id': an id of 257 characters"):
        list(read_chunks(path, 10, "art"))
