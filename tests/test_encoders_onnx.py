"""The ONNX Runtime backend of the sentence-transformer encoder, on real Amazon titles."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from encoders import Encoder, create_encoder
from encoders.onnx_backend import CACHE_ENV
from encoders.text import combine_text_fields
from multimodal_interest.embed import load_encoders

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    """A fresh export cache for this module (the user's own is left alone)."""
    root = tmp_path_factory.mktemp("onnx-cache")
    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(root)
    yield root
    if before is None:
        del os.environ[CACHE_ENV]
    else:
        os.environ[CACHE_ENV] = before


@pytest.fixture(scope="module")
def titles(shared_data):
    items = pd.read_csv(shared_data / "amazon_art_office" / "item_listO_AA_F.csv", dtype=str,
                        keep_default_na=False, nrows=400)
    texts = [combine_text_fields(r, ["item_title", "item_attribute"]) for r in items.to_dict("records")]
    return [t for t in texts if t][::4]  # 100 real office items, short and long


@pytest.fixture(scope="module")
def torch_vectors(titles):
    return create_encoder("sentence-transformer", device="cpu").encode(titles, batch_size=32)


@pytest.fixture(scope="module")
def fp32(onnx_cache):
    return create_encoder("sentence-transformer", backend="onnx")


@pytest.fixture(scope="module")
def int8(onnx_cache, fp32):
    return create_encoder("sentence-transformer", backend="onnx", quantize="int8")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_fp32_onnx_gives_the_torch_vectors(fp32, titles, torch_vectors):
    vec = fp32.encode(titles, batch_size=32)
    assert vec.shape == torch_vectors.shape and vec.dtype == np.float32
    assert _cosines(vec, torch_vectors).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1, atol=1e-5)  # the model's Normalize


def test_int8_onnx_stays_near_the_torch_vectors_and_ranks_paraphrases(int8, titles, torch_vectors):
    vec = int8.encode(titles, batch_size=32)
    cos = _cosines(vec, torch_vectors)
    assert cos.mean() >= 0.99 and cos.min() >= 0.97
    a, b, c = int8.encode(["A man is playing a guitar.", "Someone plays the guitar.",
                           "The stock market fell sharply today."])
    assert a @ b > a @ c + 0.3


def test_backend_and_quantize_enter_the_fingerprint_and_saved_config(fp32, int8, tmp_path):
    plain = create_encoder("sentence-transformer", device="cpu")
    assert len({plain.fingerprint, fp32.fingerprint, int8.fingerprint}) == 3
    assert plain.get_config() == {"model": None}  # stores written before backends stay valid
    int8.save(tmp_path)
    assert json.loads((tmp_path / "encoder_config.json").read_text())["config"]["quantize"] == "int8"
    again = Encoder.load(tmp_path)
    assert (again.backend, again.quantize, again.fingerprint) == ("onnx", "int8", int8.fingerprint)


def test_export_is_cached_and_a_damaged_cache_is_exported_again(fp32, int8, onnx_cache):
    files = sorted(onnx_cache.glob("*/model.onnx"))
    assert len(files) == 2 and not list(onnx_cache.glob(".export-*"))  # float + int8, no leftovers
    mtimes = [f.stat().st_mtime_ns for f in files]
    create_encoder("sentence-transformer", backend="onnx", quantize="int8")
    assert [f.stat().st_mtime_ns for f in files] == mtimes  # read from the cache
    small = min(files, key=lambda f: f.stat().st_size)
    small.write_bytes(small.read_bytes()[:1000])  # a cut-short file
    enc = create_encoder("sentence-transformer", backend="onnx", quantize="int8")
    assert small.stat().st_size > 1000 and enc.encode("red stapler").shape == (384,)


def test_command_line_spec_and_bad_options(int8):
    enc = load_encoders({"text": "sentence-transformer:backend=onnx,quantize=int8"})["text"]
    assert (enc.backend, enc.quantize, enc.device.type) == ("onnx", "int8", "cpu")
    with pytest.raises(ValueError, match="quantize must be one of int8"):
        create_encoder("sentence-transformer", backend="onnx", quantize="int4")
    with pytest.raises(ValueError, match="quantize needs backend='onnx'"):
        create_encoder("sentence-transformer", quantize="int8")
    with pytest.raises(ValueError, match="backend must be 'torch' or 'onnx'"):
        create_encoder("sentence-transformer", backend="tensorrt")
    with pytest.raises(ValueError, match="runs on the CPU"):
        create_encoder("sentence-transformer", backend="onnx", device="cuda")
