"""Pretrained item encoders behind one registry and one ``encode()`` contract.

>>> from encoders import create_encoder, list_encoders
>>> enc = create_encoder("sentence-transformer")          # packaged all-MiniLM-L6-v2
>>> enc.encode(["a red stapler", "oil paint set"]).shape
(2, 384)

Importable without ``multimodal_interest`` or accelerate.
"""
from __future__ import annotations

from encoders.base import EncodeResult, Encoder, EncoderInputError, best_device
from encoders.registry import create_encoder, get_encoder_class, list_encoders, register_encoder
from encoders.text import combine_text_fields
from encoders.weights import MissingWeightsError

__all__ = ["Encoder", "EncodeResult", "EncoderInputError", "MissingWeightsError", "best_device",
           "combine_text_fields", "create_encoder", "get_encoder_class", "list_encoders",
           "register_encoder"]
