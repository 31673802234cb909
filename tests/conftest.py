"""Test set-up: everything offline, data read from ../shared/data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # `main([...])` keeps one_thread's choice below

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MMI_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real data folder {SHARED_DATA} is missing (set MMI_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def media_samples(shared_data: Path) -> Path:
    return shared_data / "media_samples"


@pytest.fixture(scope="session")
def amazon(shared_data: Path, tmp_path_factory):
    """amazon_art_office imported once per session (a CrossPlatformDataset)."""
    from data_fixtures import imported

    return imported("amazon-art-office", shared_data / "amazon_art_office",
                    tmp_path_factory.getbasetemp() / "aao")


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """The tests' models are tiny: on one thread they run several times faster when the cores
    are shared (OpenMP threads wait on each other); no result depends on it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
