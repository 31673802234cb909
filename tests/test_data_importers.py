"""Each importer reproduces the counts of ../shared/data/README.md on the real files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_fixtures import imported
from multimodal_interest.cli import main
from multimodal_interest.data import CrossPlatformDataset, DatasetError
from multimodal_interest.data.importers import create_draft
from multimodal_interest.data.registry import dataset_entry
from multimodal_interest.data.splits import overlapping_users


def _import(tmp_path_factory, kind: str, src: Path, name: str, **options) -> CrossPlatformDataset:
    return imported(kind, src, tmp_path_factory.getbasetemp() / name, **options)


@pytest.fixture(scope="session")
def game_video(shared_data, tmp_path_factory) -> CrossPlatformDataset:
    return _import(tmp_path_factory, "cdrib", shared_data / "amazon_idonly/cdrib/game_video", "gv")


def users_on_both(ds: CrossPlatformDataset, rows: pd.Series) -> int:
    users = ds.interactions.loc[rows, "user_idx"].unique()
    first, second = (ds.active_users(p)[users] for p in ds.platforms)
    return int((first & second).sum())


def test_amazon_art_office_counts(amazon: CrossPlatformDataset) -> None:
    report, inter = amazon.manifest.import_report, amazon.interactions
    # README: train 8,000 users, 7,988 on both; 165,419 art + 136,651 office entries
    # (entries of both lines, before the union removes each user's repeated history)
    assert report["traindata_new.txt users"] == 8000
    assert (report["traindata_new.txt art entries"], report["traindata_new.txt office entries"]) \
        == (165419, 136651)
    train = inter["label"] == "train"
    assert users_on_both(amazon, train) == 7988
    assert inter.loc[train, "platform"].value_counts().to_dict() == {"art": 86290, "office": 71522}
    for role, n in (("valid", 577), ("test", 1000)):
        assert inter.loc[inter["label"] == role, "user_id"].nunique() == n
        assert users_on_both(amazon, inter["label"] == role) == n
    assert amazon.n_users == 9577 and amazon.n_items == {"art": 18639, "office": 19757}
    assert amazon.text_fields("office") == ("item_title", "item_attribute")
    # idAfter ids: art 0..18638 -> item_idx 0..18638; office 18639.. -> 0..
    assert amazon.item_idx("office", ["18639", "38395"]).tolist() == [0, 19756]
    assert report["office item_title 'nan' read as empty"] == 1  # README: one title is empty
    assert amazon.user_ids[0] == "A7PVZNHRTX1J7"  # the reviewer ids of userlist.txt


def test_amazon_user_items_are_the_union_of_both_lines(amazon: CrossPlatformDataset,
                                                       shared_data: Path) -> None:
    seq = shared_data / "amazon_art_office/seq_format/traindata_new.txt"
    first, second = ([int(e.split("|")[0]) for e in line.rstrip("\t").split("\t")[2:]]
                     for line in seq.read_text().splitlines()[:2])
    union = list(dict.fromkeys(first + second))  # history, target 1, target 2; no repeats
    rows = amazon.interactions[amazon.interactions["user_idx"] == 0]
    assert rows["item_id"].astype(int).tolist() == union


def test_cdrib_counts_and_published_split(game_video: CrossPlatformDataset) -> None:
    report = game_video.manifest.import_report
    assert game_video.platforms == ["game", "video"]
    assert report["game train.txt rows"] == 155036 and report["video train.txt rows"] == 156091
    # The data holds 2,179 overlapping users (its common_new_reindex.txt and the info file
    # of the matching half say so); README's 2,193 is the other half's info file.
    assert len(overlapping_users(game_video)) == 2179
    assert game_video.n_items == {"game": 12319, "video": 8751}
    split = game_video.split("published").users
    assert split.groupby(["target", "role"]).size().to_dict() == {
        ("game", "test"): 212, ("game", "valid"): 14, ("video", "test"): 216, ("video", "valid"): 1}
    assert split["user_id"].astype(int).lt(2179).all()  # cold users are overlapping users


def test_cdrib_sport_cloth_overlap(shared_data, tmp_path_factory) -> None:
    ds = _import(tmp_path_factory, "cdrib", shared_data / "amazon_idonly/cdrib/sport_cloth", "sc")
    assert len(overlapping_users(ds)) == 9828  # README's 9,928 is the other half's info file
    assert ds.n_items == {"sport": 12655, "cloth": 17943}


def test_cdrib_without_its_other_half_is_refused(shared_data: Path) -> None:
    with pytest.raises(DatasetError, match="electronic_cell, is missing"):
        create_draft("cdrib", shared_data / "amazon_idonly/cdrib/cell_electronic")


def test_disencdr_all_users_overlap(shared_data, tmp_path_factory) -> None:
    ds = _import(tmp_path_factory, "disencdr", shared_data / "amazon_idonly/disencdr/sport_cloth",
                 "dis")
    assert ds.n_users == 9928 and len(overlapping_users(ds)) == 9928
    inter = ds.interactions
    assert inter.groupby("platform", observed=True).size().to_dict() == {
        "sport": 92612 + 9928, "cloth": 87829 + 9928}
    last = inter.groupby(["user_idx", "platform"], observed=True).tail(1)
    assert (last["label"] == "test").all()  # the held-out item is each history's last


@pytest.mark.parametrize("name,users,items,rated,interactions", [
    ("ml-100k", 943, 1682, 1682, 100000),
    ("ml-1m", 6040, 3883, 3706, 1000209),
])
def test_recbole_movielens_counts(shared_data, tmp_path_factory, name, users, items, rated,
                                  interactions) -> None:
    ds = _import(tmp_path_factory, "recbole", shared_data / "movielens" / name, name)
    assert ds.platforms == [name]
    assert (ds.n_users, ds.n_items[name], len(ds.interactions)) == (users, items, interactions)
    assert ds.interactions["item_idx"].nunique() == rated
    assert "timestamp" in ds.interactions and ds.interactions["rating"].between(1, 5).all()
    assert "movie_title" in ds.text_fields(name)


# docs/datasets.md, movielens-genres: (comedy, drama) items, movies of both / neither genre
# dropped, ratings kept of all, users on both platforms; the genre column's name in the files.
GENRE_SPLITS = {
    "movielens-100k": dict(src="ml-100k", items=(416, 636), both=89, neither=541,
                           kept=61493, total=100000, overlapping=938, column="class"),
    "movielens-1m": dict(src="ml-1m", items=(974, 1377), both=226, neither=1306,
                         kept=572833, total=1000209, overlapping=5991, column="genre"),
}


@pytest.mark.parametrize("entry", list(GENRE_SPLITS))
def test_movielens_genre_split_is_synthetic_and_counted(shared_data, tmp_path_factory,
                                                        entry) -> None:
    want = GENRE_SPLITS[entry]
    registered = dataset_entry(entry)  # the registry prepares exactly what is tested here
    assert (registered.kind, registered.subdir, registered.options, registered.synthetic) == (
        "movielens-genres", f"movielens/{want['src']}", {"genres": ("Comedy", "Drama")}, True)
    ds = _import(tmp_path_factory, "movielens-genres", shared_data / "movielens" / want["src"],
                 "g" + want["src"].removeprefix("ml-"))
    assert ds.synthetic and "SYNTHETIC" in ds.manifest.description and "[synthetic]" in repr(ds)
    assert ds.platforms == ["comedy", "drama"]
    assert (ds.n_items["comedy"], ds.n_items["drama"]) == want["items"]
    report = ds.manifest.import_report
    assert report["movies in both Comedy and Drama (dropped)"] == want["both"]
    assert report["movies in neither genre (dropped)"] == want["neither"]
    assert len(ds.interactions) == report["interactions kept"] == want["kept"]
    assert report["interactions on dropped movies (dropped)"] + want["kept"] == want["total"]
    for platform, genre, other in (("comedy", "Comedy", "Drama"), ("drama", "Drama", "Comedy")):
        tags = ds.items[platform][want["column"]].str.split(" ")
        assert tags.map(lambda t: genre in t and other not in t).all()
    assert len(overlapping_users(ds)) == want["overlapping"]
    task = ds.cold_start("comedy", "drama", "cold20_seed900")
    assert task.synthetic and "synthetic" in task.label


def test_lastfm_counts_labels_and_vectors(shared_data, tmp_path_factory) -> None:
    ds = _import(tmp_path_factory, "lastfm2k", shared_data / "lastfm2k_multimodal", "lastfm")
    assert (ds.n_users, ds.n_items["lastfm"], len(ds.interactions)) == (1858, 1425, 56345)
    assert ds.interactions["label"].value_counts().to_dict() == {
        "train": 44327, "test": 7219, "valid": 4799}
    raw_ids = pd.read_csv(shared_data / "lastfm2k_multimodal/item_ids.csv", dtype=str)["artistID"]
    rows = ds.item_idx("lastfm", raw_ids)
    for name, dim, modality in (("vggish", 128, "audio"), ("whisper", 512, "audio"),
                                ("minilm_l6", 384, "text")):
        vectors = ds.vectors("lastfm", name)
        raw = np.load(shared_data / f"lastfm2k_multimodal/{name}.npy")
        assert vectors.vectors.shape == (1425, dim) and vectors.modality == modality
        np.testing.assert_array_equal(vectors.vectors[rows], raw)
    assert ds.items["lastfm"]["tags"].str.len().gt(0).all()


def test_plain_csv_import_via_cli(tmp_path: Path, capsys) -> None:
    src = tmp_path / "events.csv"
    pd.DataFrame({"user": ["a", "a", "b", "b", "c"],
                  "platform": ["web", "app", "web", "app", "web"],
                  "item": ["1", "x", "2", "y", "1"], "time": [3, 1, 2, 5, 4],
                  "rating": [1, 2, 3, 4, 5]}).to_csv(src, index=False)
    assert main(["import", "csv", str(src), str(tmp_path / "ds"), "--name", "events"]) == 0
    assert "users 3 | interactions 5 | overlapping users 2" in capsys.readouterr().out
    ds = CrossPlatformDataset.load(tmp_path / "ds")
    assert ds.platforms == ["web", "app"] and ds.n_items == {"web": 2, "app": 2}
    assert ds.interactions.loc[ds.interactions["user_id"] == "a", "item_id"].tolist() == ["x", "1"]


def test_cli_import_reports_a_bad_option(tmp_path: Path, shared_data: Path, capsys) -> None:
    assert main(["import", "lastfm2k", str(shared_data / "lastfm2k_multimodal"),
                 str(tmp_path / "x"), "--genres", "Rock", "Pop"]) == 2
    assert "unexpected keyword argument 'genres'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def _own_data(tmp_path: Path, **changes) -> dict[str, Path]:
    """Interactions in shuffled rows (position gives the order) and an items table per platform."""
    inter = pd.DataFrame({"user": ["a", "b", "a", "c", "a", "b", "c", "d", "d"],
                          "platform": ["art", "art", "office", "art", "art", "office", "office", "art", "office"],
                          "item": ["a2", "a1", "o1", "a1", "a1", "o2", "o1", "a2", "o2"],
                          "position": [2, 0, 1, 0, 0, 1, 1, 0, 1],
                          "split": ["train", "train", "train", "test", "train", "train", "test", "valid", "valid"],
                          "store": ["x"] * 9})
    for column, value in changes.items():
        inter[column] = value
    files = {"interactions": tmp_path / "inter.csv", "art": tmp_path / "art.csv", "office": tmp_path / "office.tsv"}
    inter.to_csv(files["interactions"], index=False)
    pd.DataFrame({"item": ["a1", "a2"], "title": ["red paint", "brush"]}).to_csv(files["art"], index=False)
    pd.DataFrame({"item_id": ["o1", "o2"], "title": ["stapler", "pen"], "brand": ["x", "y"]}).to_csv(
        files["office"], sep="\t", index=False)
    return files


def _import_own(files: dict[str, Path], dst: Path, *extra: str) -> int:
    return main(["import", "csv", str(files["interactions"]), str(dst), "--items", f"art={files['art']}",
                 "--items", f"office={files['office']}", *extra])


def test_own_data_items_position_and_given_split(tmp_path: Path, capsys) -> None:
    files = _own_data(tmp_path)
    assert _import_own(files, tmp_path / "ds", "--split-column", "split") == 0
    out = capsys.readouterr().out
    assert "column(s) split, store kept as they are" in out
    assert "platform office: 2 items" in out and "text column(s) title, brand" in out
    ds = CrossPlatformDataset.load(tmp_path / "ds")
    assert ds.platforms == ["art", "office"]  # --items order
    assert ds.text_fields("office") == ("title", "brand")
    assert ds.items["art"]["title"].tolist() == ["red paint", "brush"]
    a = ds.interactions[ds.interactions["user_id"] == "a"]
    assert a["item_id"].tolist() == ["a1", "o1", "a2"]  # by position, not by row
    split = ds.split("given").users
    assert split.sort_values("user_id").values.tolist() == [["c", "test", "*"], ["d", "valid", "*"]]
    assert "| given | 2 | 1 | 1 |" in (main(["validate", str(tmp_path / "ds")]), capsys.readouterr().out)[1]


def test_own_data_errors_name_file_line_and_column(tmp_path: Path, capsys) -> None:
    split = ["train", "train", "train", "test", "train", "train", "valid", "valid", "valid"]
    files = _own_data(tmp_path, split=split)
    bad_item = pd.read_csv(files["interactions"], dtype=str)
    bad_item.loc[4, "item"] = "a9"
    bad_item.loc[5, "split"] = "held-out"
    bad_item.to_csv(files["interactions"], index=False)
    assert _import_own(files, tmp_path / "ds", "--split-column", "split") == 2
    err = capsys.readouterr().err
    assert f"{files['interactions']}:6: column 'item_id': item 'a9' is not in the items table of platform 'art'" in err
    assert f"{files['interactions']}:7: column 'split': unknown split value 'held-out'" in err
    assert not (tmp_path / "ds").exists()
    files = _own_data(tmp_path, split=split)  # c: test on art, valid on office
    assert _import_own(files, tmp_path / "ds", "--split-column", "split") == 2
    assert "column 'split': user's rows say both valid and test" in capsys.readouterr().err


def test_own_data_split_from_user_lists_and_mmi_split(tmp_path: Path, capsys) -> None:
    files = _own_data(tmp_path)
    (tmp_path / "test.txt").write_text("c\n")
    pd.DataFrame({"user_id": ["d"], "target": ["office"]}).to_csv(tmp_path / "valid.csv", index=False)
    assert _import_own(files, tmp_path / "ds", "--split-users", f"test={tmp_path / 'test.txt'}",
                       "--split-users", f"valid={tmp_path / 'valid.csv'}") == 0
    ds = CrossPlatformDataset.load(tmp_path / "ds")
    assert ds.split("given").users.values.tolist() == [["c", "test", "*"], ["d", "valid", "office"]]
    (tmp_path / "more.txt").write_text("a\nnobody\n")
    assert main(["split", str(tmp_path / "ds"), "--test-users", str(tmp_path / "more.txt"), "--name", "mine"]) == 2
    assert f"{tmp_path / 'more.txt'}:2: user 'nobody' is not in the interactions" in capsys.readouterr().err
    (tmp_path / "more.txt").write_text("a\nb\n")
    assert main(["split", str(tmp_path / "ds"), "--test-users", str(tmp_path / "more.txt"), "--name", "mine"]) == 0
    assert ds.split("mine").counts() == {"valid": 0, "test": 2}
