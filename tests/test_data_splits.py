"""Cold-start splits: deterministic, the right sizes, only overlapping users, targets hidden."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_fixtures import imported
from multimodal_interest.cli import main
from multimodal_interest.data import CrossPlatformDataset, random_split, save_split
from multimodal_interest.data.splits import RATIOS, SEEDS, overlapping_users


@pytest.fixture(scope="session")
def genres(shared_data, tmp_path_factory) -> CrossPlatformDataset:
    return imported("movielens-genres", shared_data / "movielens/ml-100k",
                    tmp_path_factory.getbasetemp() / "g100k")


@pytest.fixture(scope="session")
def amazon(shared_data, tmp_path_factory) -> CrossPlatformDataset:
    return imported("amazon-art-office", shared_data / "amazon_art_office",
                    tmp_path_factory.getbasetemp() / "aao")


def test_deterministic_for_a_seed_different_across_seeds(genres: CrossPlatformDataset) -> None:
    a, b = random_split(genres, 0.2, 900), random_split(genres, 0.2, 900)
    pd.testing.assert_frame_equal(a.users, b.users)
    tests = {seed: set(random_split(genres, 0.2, seed).users.query("role == 'test'")["user_id"])
             for seed in SEEDS}
    assert len({frozenset(t) for t in tests.values()}) == len(SEEDS)
    # the splits saved at import are exactly these
    saved = genres.split("cold20_seed900").users
    pd.testing.assert_frame_equal(saved.reset_index(drop=True), a.users.astype("str"),
                                  check_dtype=False)


@pytest.mark.parametrize("ratio", RATIOS)
def test_ratios_and_only_overlapping_users(genres: CrossPlatformDataset, ratio: float) -> None:
    overlap = set(genres.user_ids[overlapping_users(genres)])
    assert len(overlap) == 938
    split = random_split(genres, ratio, 1000)
    counts = split.counts()
    assert counts == {"test": round(ratio * 938), "valid": round(0.1 * 938)}
    assert set(split.users["user_id"]) <= overlap
    assert not split.users["user_id"].duplicated().any()  # valid and test are disjoint


@pytest.mark.parametrize("source,target", [("comedy", "drama"), ("drama", "comedy")])
def test_cold_start_hides_exactly_the_target_rows(genres: CrossPlatformDataset, source: str,
                                                  target: str) -> None:
    task = genres.cold_start(source, target, "cold50_seed2020")
    held = np.r_[task.valid_users, task.test_users]
    assert len(task.test_users) == 469 and len(task.valid_users) == 94
    assert not set(task.valid_users) & set(task.test_users)
    train, holdout = task.train, task.holdout
    assert len(train) + len(holdout) == len(genres.interactions)
    assert (holdout["platform"] == target).all() and set(holdout["user_idx"]) == set(held)
    in_train = train["user_idx"].isin(held)
    assert not (in_train & (train["platform"] == target)).any()  # never their target rows
    source_rows = genres.interactions["platform"] == source
    assert in_train.sum() == genres.interactions.loc[source_rows, "user_idx"].isin(held).sum()
    assert set(task.overlap_users()).isdisjoint(held)
    truth = task.target_truth(task.test_users[:3])
    for user, items in zip(task.test_users[:3], truth):
        rows = holdout[holdout["user_idx"] == user]
        assert items.tolist() == sorted(set(rows["item_idx"]))
    hist = task.source_histories(task.test_users[:3])
    assert (hist.lengths > 0).all()


def test_amazon_published_split_is_the_evaluation_protocol(amazon: CrossPlatformDataset) -> None:
    assert amazon.split("published").counts() == {"valid": 577, "test": 1000}
    label = amazon.interactions.drop_duplicates("user_idx").set_index("user_idx")["label"]
    task = amazon.cold_start("art", "office", "published")
    assert len(task.test_users) == 1000 and len(task.valid_users) == 577
    assert (label[task.test_users] == "test").all() and (label[task.valid_users] == "valid").all()
    train_office = task.train[task.train["platform"] == "office"]
    assert set(label[train_office["user_idx"].unique()]) == {"train"}  # 8,000 train users only
    test_art = task.train["user_idx"].isin(task.test_users) & (task.train["platform"] == "art")
    assert test_art.sum() == 7191  # the test users' art items stay in training
    # Popularity (distinct training users per office item), top 10 over all office items:
    # Recall@10 must land on EVALUATION.md's reference row (0.0376).
    pairs = train_office.drop_duplicates(["user_idx", "item_idx"])
    counts = np.bincount(pairs["item_idx"], minlength=task.n_items["office"])
    top = np.argsort(-counts, kind="stable")[:10]
    recall = np.mean([np.isin(top, t).sum() / len(t) for t in task.target_truth(task.test_users)])
    assert recall == pytest.approx(0.0376, abs=5e-4)


def test_cdrib_published_split_per_target(shared_data, tmp_path_factory) -> None:
    ds = imported("cdrib", shared_data / "amazon_idonly/cdrib/game_video",
                  tmp_path_factory.getbasetemp() / "gv")
    to_game = ds.cold_start("video", "game", "published")
    to_video = ds.cold_start("game", "video", "published")
    assert (len(to_game.test_users), len(to_game.valid_users)) == (212, 14)
    assert (len(to_video.test_users), len(to_video.valid_users)) == (216, 1)
    assert set(to_game.test_users).isdisjoint(to_video.test_users)
    # CDRIB's training files exactly: cold-on-game users keep their video rows, lose game rows
    game_rows = ds.interactions["platform"] == "game"
    assert len(to_game.holdout) == (ds.interactions.loc[game_rows, "label"] != "train").sum()


def test_within_platform_task_follows_the_interaction_labels(shared_data, tmp_path_factory) -> None:
    ds = imported("lastfm2k", shared_data / "lastfm2k_multimodal", tmp_path_factory.getbasetemp() / "lfm")
    task = ds.within_platform("lastfm", valid_share=0.2, seed=0)
    assert task.platforms == ["lastfm"] and task.label.startswith("lastfm-2k lastfm->lastfm")
    label = ds.interactions["label"].to_numpy()
    assert len(task.train) == (label == "train").sum() == 44327  # every user's train rows, nothing else
    assert set(task.valid_users).isdisjoint(task.test_users)
    assert len(task.valid_users) == round(0.2 * 1783) and len(task.valid_users) + len(task.test_users) == 1858
    key = ["user_idx", "item_idx"]
    rows = ds.interactions.assign(valid=ds.interactions["user_idx"].isin(task.valid_users))
    truth = rows[np.where(rows["valid"], label == "valid", label == "test")]
    pd.testing.assert_frame_equal(task.holdout[key].reset_index(drop=True), truth[key].reset_index(drop=True))
    held = task.holdout.merge(task.train, on=key)
    assert held.empty  # (the authors' labels never repeat an item of a user)
    assert ds.within_platform("lastfm", seed=1).valid_users.tolist() != task.valid_users.tolist()
    with pytest.raises(ValueError, match="within_platform"):
        ds.cold_start("lastfm", "lastfm")


def test_save_split_refuses_to_replace_different_users(genres, tmp_path: Path) -> None:
    split = random_split(genres, 0.2, 900)
    root = tmp_path / "s"
    save_split(root, split)
    save_split(root, split)  # the same split again: fine
    other = random_split(genres, 0.2, 10)
    with pytest.raises(FileExistsError, match="exists with other users"):
        save_split(root, type(split)(split.name, other.users, other.meta))


def test_cli_split(tmp_path: Path, shared_data: Path, capsys) -> None:
    path = tmp_path / "ds"
    assert main(["import", "csv", str(_events(tmp_path)), str(path)]) == 0
    for name in Path(path, "splits").iterdir():
        name.unlink()
    assert main(["split", str(path), "--ratio", "0.5", "--seed", "7"]) == 0
    assert "10 test, 2 valid of 20 overlapping users" in capsys.readouterr().out
    assert CrossPlatformDataset.load(path).splits() == ["cold50_seed7"]
    assert main(["split", str(path), "--ratio", "1.5"]) == 2
    assert "ratio" in capsys.readouterr().err


def _events(tmp_path: Path) -> Path:
    users = [f"u{i}" for i in range(20)] + ["solo"]
    frame = pd.DataFrame({"user": users * 2, "platform": ["a"] * 21 + ["b"] * 21,
                          "item": ["1", "2", "3"] * 14})
    frame = frame[~((frame["user"] == "solo") & (frame["platform"] == "b"))]
    frame.to_csv(tmp_path / "events.csv", index=False)
    return tmp_path / "events.csv"


def test_within_platform_task_without_labels_holds_out_each_users_latest_items(genres) -> None:
    inter = genres.interactions
    assert "label" not in inter.columns
    task = genres.within_platform("drama", seed=0)
    assert task.split == "time10-valid20_seed0" and "drama->drama" in task.label
    rows = inter[inter["platform"] == "drama"]
    n = rows.groupby("user_idx").size()
    for user in np.concatenate([task.valid_users, task.test_users])[:50]:
        mine = rows[rows["user_idx"] == user].sort_values("timestamp", kind="stable")
        held = max(1, round(0.1 * len(mine)))
        truth = task.holdout[task.holdout["user_idx"] == user]
        assert len(truth) == held and n[user] >= 3
        latest = mine.iloc[-held:] if user in task.test_users else mine.iloc[-2 * held:-held]
        assert sorted(truth["item_idx"]) == sorted(latest["item_idx"])
        history = task.train[task.train["user_idx"] == user]
        assert len(history) == len(mine) - 2 * held  # no held-out row, and neither split in training
        assert history["timestamp"].max() <= latest["timestamp"].min()
    small = n[n < 3].index
    assert not np.isin(small, task.test_users).any() and not np.isin(small, task.valid_users).any()
