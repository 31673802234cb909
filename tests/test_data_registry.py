"""Named datasets: fetched once into a cache, checked by checksum, from the index or a folder."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from multimodal_interest.cli import main
from multimodal_interest.data import CrossPlatformDataset, get_dataset
from multimodal_interest.data import registry
from multimodal_interest.data.download import (RECBOLE_WHEEL, ChecksumMismatch,
                                               DatasetUnavailable, fetch_recbole_ml100k)


@pytest.fixture(scope="session")
def recbole_wheel(tmp_path_factory) -> Path:
    """The recbole 1.2.1 wheel from the package index (reachable in tests and CI)."""
    where = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                    "recbole==1.2.1", "-d", str(where)], check=True, capture_output=True)
    return where / RECBOLE_WHEEL


def check_movielens_100k(path: Path) -> None:
    ds = CrossPlatformDataset.load(path)
    assert ds.name == "movielens-100k" and ds.synthetic and "SYNTHETIC" in ds.manifest.description
    assert ds.platforms == ["comedy", "drama"] and ds.n_users == 943
    assert ds.n_items == {"comedy": 416, "drama": 636} and len(ds.interactions) == 61493
    assert "cold20_seed900" in ds.splits() and len(ds.splits()) == 15
    assert len(ds.cold_start("comedy", "drama", "cold20_seed900").test_users) == 188


def test_movielens_100k_from_the_package_index(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MMI_CACHE", str(tmp_path / "cache"))
    path = get_dataset("movielens-100k")
    assert path == tmp_path / "cache" / "movielens-100k"
    check_movielens_100k(path)
    # fetched once: the second call neither downloads nor imports
    monkeypatch.setattr(registry, "create_draft", lambda *a, **k: pytest.fail("re-imported"))
    assert get_dataset("movielens-100k") == path


def test_movielens_100k_from_a_local_wheel(tmp_path: Path, recbole_wheel: Path) -> None:
    path = get_dataset("movielens-100k", root=tmp_path, from_dir=recbole_wheel.parent)
    check_movielens_100k(path)
    raw = tmp_path / "downloads/movielens-100k/ml-100k"
    assert sorted(p.name for p in raw.iterdir()) == ["ml-100k.inter", "ml-100k.item"]


def test_a_tampered_wheel_or_file_is_refused(tmp_path: Path, recbole_wheel: Path) -> None:
    bad = tmp_path / RECBOLE_WHEEL
    shutil.copy(recbole_wheel, bad)
    with open(bad, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ChecksumMismatch, match="not the published one"):
        fetch_recbole_ml100k(tmp_path / "dl", wheel=bad)
    folder = fetch_recbole_ml100k(tmp_path / "ok", wheel=recbole_wheel)
    with open(folder / "ml-100k.item", "a") as f:
        f.write("999\tFake\t2000\tComedy\n")
    with pytest.raises(ChecksumMismatch):
        fetch_recbole_ml100k(tmp_path / "ok", wheel=recbole_wheel)


def test_from_the_shared_data_folder(tmp_path: Path, shared_data: Path, capsys) -> None:
    assert main(["fetch", "amazon-art-office", "--root", str(tmp_path),
                 "--from-dir", str(shared_data)]) == 0
    assert "users 9,577" in capsys.readouterr().out
    ds = CrossPlatformDataset.load(tmp_path / "amazon-art-office")
    assert ds.split("published").counts() == {"valid": 577, "test": 1000}
    assert str(shared_data / "amazon_art_office") in ds.manifest.provenance
    assert main(["datasets", "--root", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert "| amazon-art-office | real |" in listing and "| yes |" in listing
    assert "| movielens-100k | SYNTHETIC | package index | no |" in listing


def test_from_a_public_archive_url(tmp_path: Path, shared_data: Path, monkeypatch) -> None:
    # A zip laid out like the GitHub archive of cjx96/CDRIB, served from a file:// URL.
    archive = tmp_path / "CDRIB-main.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for half in ("game_video", "video_game"):
            for f in (shared_data / "amazon_idonly/cdrib" / half).iterdir():
                z.write(f, f"CDRIB-main/dataset/{half}/{f.name}")
    entry = replace(registry.dataset_entry("cdrib-game-video"), url=archive.as_uri())
    monkeypatch.setitem(registry._REGISTRY, "cdrib-game-video", entry)
    ds = CrossPlatformDataset.load(get_dataset("cdrib-game-video", root=tmp_path / "cache"))
    assert ds.name == "cdrib-game-video" and ds.n_items == {"game": 12319, "video": 8751}
    assert ds.split("published").counts() == {"valid": 15, "test": 428}


def test_unreachable_or_missing_sources_say_what_to_do(tmp_path: Path, monkeypatch, capsys) -> None:
    entry = replace(registry.dataset_entry("cdrib-game-video"), url="http://127.0.0.1:9/x.zip")
    monkeypatch.setitem(registry._REGISTRY, "cdrib-game-video", entry)
    with pytest.raises(DatasetUnavailable, match="cannot download .*--from-dir"):
        get_dataset("cdrib-game-video", root=tmp_path)
    assert not (tmp_path / "cdrib-game-video").exists()
    assert main(["fetch", "lastfm-2k", "--root", str(tmp_path)]) == 2
    assert "no public download is wired in" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        get_dataset("nope", root=tmp_path)
