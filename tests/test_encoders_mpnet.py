"""mpnet: all-mpnet-base-v2 joined from its five packages (extra [mpnet], not in the test command)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from encoders import create_encoder
from encoders.mpnet import mpnet_folder, part_files
from encoders.weights import MissingWeightsError

try:
    part_files()
except MissingWeightsError as e:
    print(f"\nskipping mpnet tests: {e}")  # shown with -s; the skip reason says the same
    pytest.skip(f"mpnet tests skipped: {e}", allow_module_level=True)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def mpnet(cache, monkeypatch_module):
    monkeypatch_module.setenv("MMI_MODEL_CACHE", str(cache))
    return create_encoder("mpnet", device="cpu")


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_reassembled_once_into_the_cache_and_read_offline(mpnet, cache):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    (folder,) = [p for p in cache.iterdir()]  # one entry, no temporary left behind
    assert (folder / "model.safetensors").stat().st_size == 437_971_872
    assert mpnet_folder(cache) == folder  # found, not rebuilt
    assert mpnet.dim == 768 and mpnet.get_config() == {}


def test_paraphrase_is_nearer_than_unrelated(mpnet):
    vec = mpnet.encode(["crayola washable markers broad line 10 count", "ten broad-tip washable markers "
                        "from crayola", "stainless steel heavy duty desk stapler"])
    assert vec.shape == (3, 768) and vec.dtype == np.float32
    assert float(vec[0] @ vec[1]) > float(vec[0] @ vec[2]) + 0.2


def test_fingerprint_differs_from_minilm(mpnet):
    assert mpnet.fingerprint != create_encoder("sentence-transformer", device="cpu").fingerprint


def test_killed_reassembly_leaves_nothing_half_written(tmp_path):
    code = "from encoders.mpnet import mpnet_folder; import sys; mpnet_folder(sys.argv[1])"
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=os.getcwd())
    try:
        for _ in range(600):  # wait until the join has begun writing
            if any(tmp_path.glob(".*/model.zip")):
                break
            if proc.poll() is not None:
                pytest.fail("reassembly finished before it could be interrupted")
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]  # no model folder
    folder = mpnet_folder(tmp_path)  # a later run completes it and clears the killed run's work
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]
    assert (folder / "model.safetensors").stat().st_size == 437_971_872
