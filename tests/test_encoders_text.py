"""Text encoders on real sentences, and the text-field rule."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from encoders import EncoderInputError, create_encoder
from encoders.text import combine_text_fields

SENTENCES = ["A man is playing a guitar.", "Someone plays the guitar.",
             "The stock market fell sharply today.", "A cat sleeps on the sofa in the afternoon sun."]


@pytest.fixture(scope="module")
def st():
    return create_encoder("sentence-transformer", device="cpu")


@pytest.fixture(scope="module")
def hf_mean():
    return create_encoder("hf-text", device="cpu")


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_sentence_transformer_matches_its_own_encode_and_ranks_paraphrases(st):
    vec = st.encode(SENTENCES)
    assert vec.shape == (4, 384) and vec.dtype == np.float32
    np.testing.assert_allclose(vec, st.net.encode(SENTENCES), atol=1e-5)
    assert _cos(vec[0], vec[1]) > 0.5 > _cos(vec[0], vec[2]) + 0.3


def test_hf_mean_pooling_reproduces_sentence_transformers(st, hf_mean):
    np.testing.assert_allclose(hf_mean.encode(SENTENCES, normalize_embeddings=True), st.encode(SENTENCES),
                               atol=1e-5)
    cls = create_encoder("hf-text", pooling="cls", device="cpu").encode(SENTENCES, normalize_embeddings=True)
    assert cls.shape == (4, 384) and not np.allclose(cls, st.encode(SENTENCES), atol=1e-2)
    with pytest.raises(ValueError, match="pooling must be"):
        create_encoder("hf-text", pooling="max")


def test_order_restored_single_input_and_normalisation(hf_mean):
    texts = ["short", "a much longer text about office supplies and paint brushes", "mid length text"]
    batch = hf_mean.encode(texts, batch_size=2)  # encoded longest first, returned in input order
    for i, text in enumerate(texts):
        single = hf_mean.encode(text)
        assert single.shape == (384,)
        np.testing.assert_allclose(batch[i], single, atol=1e-5)
    unit = hf_mean.encode(texts, normalize_embeddings=True, convert_to_tensor=True)
    torch.testing.assert_close(unit.norm(dim=1), torch.ones(3))


def test_bad_text_is_named_or_recorded(st):
    with pytest.raises(EncoderInputError, match=r"input 1 \('  '\): empty text"):
        st.encode(["fine", "  ", "also fine"])
    result = st.encode_with_errors(["fine", "", float("nan"), "also fine"])
    assert result.ok == [0, 3]
    assert result.errors == {1: "empty text", 2: "expected text (str), got float"}
    np.testing.assert_allclose(result.vectors.numpy(), st.encode(["fine", "also fine"]), atol=1e-6)


def test_combine_text_fields_rule():
    record = {"title": "  Red   stapler ", "attributes": ["office", None, "red"], "description": None,
              "brand": float("nan"), "note": "Heavy duty!", "extra": "", "tail": "works"}
    fields = ["title", "attributes", "description", "brand", "note", "extra", "tail"]
    assert combine_text_fields(record, fields) == "Red stapler. office, red. Heavy duty! works"
    assert combine_text_fields(record, ["attributes", "title"]) == "office, red. Red stapler"
    assert combine_text_fields(record, ["description", "extra"]) == ""
    with pytest.raises(KeyError, match="'titel' is not in the record"):
        combine_text_fields(record, ["titel"])


def test_combine_text_fields_on_real_catalog_rows(shared_data, st):
    items = pd.read_csv(shared_data / "amazon_art_office" / "item_listA_F.csv", nrows=3)
    texts = [combine_text_fields(r, ["item_title", "item_attribute"]) for r in items.to_dict("records")]
    assert texts[2] == ("clover wonder clips red 50 pack. "
                        "arts crafts sewing sewing sewing notions supplies clover")
    assert st.encode(texts).shape == (3, 384)
