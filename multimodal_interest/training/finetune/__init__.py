"""Fine-tuning a text encoder end to end on the interest objective, with accelerate
(``mmi finetune``): the result is a sentence-transformers folder, an encoder like any other
(``--encoder text=finetuned:PATH``)."""
from __future__ import annotations

from multimodal_interest.training.finetune.config import FinetuneConfig
from multimodal_interest.training.finetune.loop import FinetuneResult, finetune
from multimodal_interest.training.finetune.texts import item_texts

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune", "item_texts"]
