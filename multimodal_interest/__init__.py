"""multimodal-interest: data, embedding store, training, evaluation and serving around the
``encoders`` and ``fusion`` libraries."""
from __future__ import annotations

__version__ = "0.1.0"
