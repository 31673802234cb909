"""A tiny learnable world for fine-tuning tests, and a tiny random BERT saved as a
sentence-transformers folder (built from a config: no download, seconds to train).

Items belong to one of ``topics`` topics. A source item of topic c reads ``"s<c> n<k> n<j>"``,
a target item ``"t<c> n<k> n<j>"`` (``n`` words are noise shared by everything), so the words
that tie a source item to its target items differ: a random encoder ranks at chance, and
only training on users (who keep to one topic on both platforms) teaches ``s<c> ~ t<c>``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


def words(topics: int, noise: int) -> list[str]:
    return [f"s{c}" for c in range(topics)] + [f"t{c}" for c in range(topics)] + [f"n{k}" for k in range(noise)]


def tiny_encoder(folder: Path, vocabulary: list[str], seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """A random ``layers``-layer BERT (width ``hidden``) with a word-level vocabulary, mean
    pooled and normalised, saved as a sentence-transformers folder at ``folder``."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from transformers import BertConfig, BertModel, BertTokenizer

    hf = folder.with_name(folder.name + "-hf")
    hf.mkdir(parents=True, exist_ok=True)
    (hf / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *vocabulary]) + "\n")
    BertTokenizer(vocab=str(hf / "vocab.txt")).save_pretrained(hf)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=5 + len(vocabulary), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=32)
    BertModel(config).save_pretrained(hf)
    st = SentenceTransformer(modules=[Transformer(str(hf)), Pooling(hidden, "mean"), Normalize()], device="cpu")
    st.save(str(folder), create_model_card=False)
    return folder


def write_world(root: Path, topics: int = 6, per_topic: int = 8, noise: int = 12, n_users: int = 240,
                valid: int = 40, test: int = 40, seed: int = 0, more_noise: int = 0, image=None) -> Path:
    """The world as a dataset folder (platforms ``src`` and ``tgt``, split ``published``): each
    user keeps to one topic, with 4 of its source items and 3 of its target items.
    ``more_noise``: up to that many more noise words per item (items then differ in length).
    ``image(root, platform, item, topic)``: writes an item's image and returns its path relative
    to ``root``; the catalogs then have an ``image`` column."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "items").mkdir(exist_ok=True)
    (root / "splits").mkdir(exist_ok=True)
    for p, letter in (("src", "s"), ("tgt", "t")):
        ids = [f"{p}{i}" for i in range(topics * per_topic)]
        texts = [f"{letter}{i // per_topic} n{rng.integers(noise)} n{rng.integers(noise)}" for i in range(len(ids))]
        if more_noise:
            texts = [t + "".join(f" n{k}" for k in rng.integers(noise, size=rng.integers(more_noise + 1)))
                     for t in texts]
        columns = {"item_id": ids, "title": texts}
        if image is not None:
            columns["image"] = [image(root, p, i, i // per_topic) for i in range(len(ids))]
        pd.DataFrame(columns).to_csv(root / "items" / f"{p}.csv", index=False)
    rows = []
    for u in range(n_users):
        c = rng.integers(topics)
        for p, k in (("src", 4), ("tgt", 3)):
            for t, i in enumerate(rng.choice(per_topic, size=k, replace=False)):
                rows.append((f"u{u}", p, f"{p}{c * per_topic + i}", float(t)))
    pd.DataFrame(rows, columns=["user_id", "platform", "item_id", "timestamp"]).to_csv(
        root / "interactions.csv", index=False)
    held = rng.permutation(n_users)[:valid + test]
    pd.DataFrame({"user_id": [f"u{u}" for u in held], "role": ["valid"] * valid + ["test"] * test,
                  "target": "*"}).to_csv(root / "splits" / "published.csv", index=False)
    (root / "splits" / "published.json").write_text(json.dumps({"name": "published", "kind": "published",
                                                                "rule": "tests/finetune_world.py"}))
    (root / "dataset.yaml").write_text(
        "name: topics\nsynthetic: true\ndescription: a learnable topic world for fine-tuning tests\n"
        "provenance: tests/finetune_world.py\nlicence: CC0\ninteractions: interactions.csv\nplatforms:\n"
        + "".join(f"  {p}:\n    items: items/{p}.csv\n    text: [title]\n" + ("    image: image\n" if image else "")
                  for p in ("src", "tgt")))
    return root
