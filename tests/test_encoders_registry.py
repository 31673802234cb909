"""The encoder registry, the base class's save/load and fingerprint, built off list_encoders()."""
from __future__ import annotations

import inspect
import shutil

import numpy as np
import pytest
import torch

from encoders import Encoder, create_encoder, get_encoder_class, list_encoders, register_encoder
from encoders import registry

BUILTIN = ["clip-image", "clip-text", "crepe", "efficientnet-lite0", "hf-text", "panns-cnn14",
           "precomputed", "resnet", "sentence-transformer"]


def test_builtin_names_and_modalities():
    names = list_encoders()  # other tests may register more
    assert names == sorted(names) and set(BUILTIN) <= set(names)
    builtin = lambda modality: [n for n in list_encoders(modality=modality) if n in BUILTIN]  # noqa: E731
    assert builtin("audio") == ["crepe", "panns-cnn14"]
    assert builtin("image") == ["clip-image", "efficientnet-lite0", "resnet"]
    assert builtin("text") == ["clip-text", "hf-text", "sentence-transformer"]
    assert list_encoders("clip-*") == ["clip-image", "clip-text"]


@pytest.mark.parametrize("name", BUILTIN)
def test_every_encoder_declares_its_contract(name):
    cls = get_encoder_class(name)
    assert cls.registry_name == name
    assert cls.modality in ("text", "image", "audio", "vector")
    params = inspect.signature(cls.__init__).parameters
    assert set(cls.config_keys) | {"self", "device"} == set(params), "config_keys must be the constructor's arguments"
    assert set(cls.fingerprint_ignore) <= set(cls.config_keys)
    assert "device" in params


def test_unknown_name_and_keyword_are_errors():
    with pytest.raises(ValueError, match="unknown encoder 'bert'.*sentence-transformer"):
        create_encoder("bert")
    with pytest.raises(TypeError, match="unknown: hop"):
        create_encoder("crepe", capacity="tiny", hop=0.1)
    with pytest.raises(ValueError, match="capacity must be 'full' or 'tiny'"):
        create_encoder("crepe", capacity="small")


def test_duplicate_registration_warns(monkeypatch):
    monkeypatch.setattr(registry, "_ENCODERS", dict(registry._ENCODERS))

    class A(Encoder):
        modality = "vector"

    class B(Encoder):
        modality = "vector"

    register_encoder("dup-test")(A)
    with pytest.warns(UserWarning, match="registered again"):
        register_encoder("dup-test")(B)
    assert get_encoder_class("dup-test") is B


@pytest.fixture(scope="module")
def crepe_tiny():
    return create_encoder("crepe", capacity="tiny", hop_seconds=0.05, device="cpu")


def _tone(freq: float, seconds: float = 1.0, rate: int = 16000) -> tuple[np.ndarray, int]:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate


def test_none_keywords_are_dropped_and_encode_rejects_unknown_keywords(crepe_tiny):
    enc = create_encoder("crepe", capacity="tiny", hop_seconds=None, device=None)
    assert enc.hop_seconds == 0.1
    with pytest.raises(TypeError, match="normalise"):
        crepe_tiny.encode([_tone(440)], normalise=True)


def test_save_load_round_trip(crepe_tiny, tmp_path):
    crepe_tiny.save(tmp_path / "enc")
    loaded = Encoder.load(tmp_path / "enc", device="cpu")
    assert type(loaded) is type(crepe_tiny)
    assert loaded.get_config() == {"capacity": "tiny", "hop_seconds": 0.05}
    assert loaded.fingerprint == crepe_tiny.fingerprint
    clips = [_tone(440), _tone(300)]
    np.testing.assert_array_equal(loaded.encode(clips), crepe_tiny.encode(clips))
    # the configuration is part of the identity
    assert create_encoder("crepe", capacity="tiny", hop_seconds=0.1).fingerprint != crepe_tiny.fingerprint


def test_changed_weights_change_the_fingerprint_and_block_loading(tmp_path, shared_data):
    src = shared_data / "lastfm2k_multimodal"
    shutil.copy(src / "item_ids.csv", tmp_path / "ids.csv")
    vectors = np.load(src / "minilm_l6.npy")
    np.save(tmp_path / "v.npy", vectors)
    enc = create_encoder("precomputed", path=tmp_path / "v.npy", ids=tmp_path / "ids.csv", id_column="artistID")
    enc.save(tmp_path / "enc")
    assert Encoder.load(tmp_path / "enc").fingerprint == enc.fingerprint
    # the same bytes elsewhere: same fingerprint (paths are not part of it)
    shutil.copy(tmp_path / "v.npy", tmp_path / "copy.npy")
    same = create_encoder("precomputed", path=tmp_path / "copy.npy", ids=tmp_path / "ids.csv", id_column="artistID")
    assert same.fingerprint == enc.fingerprint
    vectors[7, 3] += 1e-3
    np.save(tmp_path / "v.npy", vectors)
    changed = create_encoder("precomputed", path=tmp_path / "v.npy", ids=tmp_path / "ids.csv", id_column="artistID")
    assert changed.fingerprint != enc.fingerprint
    with pytest.raises(ValueError, match="weight files changed"):
        Encoder.load(tmp_path / "enc")


def test_encode_contract_basics(crepe_tiny):
    clips = [_tone(440, 0.3), _tone(300, 2.0), _tone(600, 1.0)]
    batch = crepe_tiny.encode(clips, batch_size=2)
    assert batch.dtype == np.float32 and batch.shape == (3, crepe_tiny.dim)
    single = crepe_tiny.encode(clips[1])
    assert single.shape == (crepe_tiny.dim,)
    np.testing.assert_allclose(batch[1], single, rtol=1e-5, atol=1e-6)
    tensor = crepe_tiny.encode(clips, convert_to_tensor=True, normalize_embeddings=True)
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32
    torch.testing.assert_close(tensor.norm(dim=1), torch.ones(3))
    assert crepe_tiny.encode([]).shape == (0, crepe_tiny.dim)
    with pytest.raises(ValueError, match="batch_size"):
        crepe_tiny.encode(clips, batch_size=0)


def test_decoding_workers_chosen_for_the_device(monkeypatch):
    from encoders.base import auto_workers

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert (auto_workers(torch.device("cpu")), auto_workers(torch.device("cuda"))) == (0, 1)
    monkeypatch.setattr("os.cpu_count", lambda: 32)
    assert (auto_workers(torch.device("cpu")), auto_workers(torch.device("cuda"))) == (8, 8)


def test_encoders_import_neither_multimodal_interest_nor_accelerate():
    import subprocess
    import sys

    code = ("import sys, encoders; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('multimodal_interest', 'accelerate')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
