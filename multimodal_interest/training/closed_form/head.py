"""The target's content map as a :class:`~fusion.content.ContentHead` saved with the model, so
that items a catalog gains after training are scored as the fit scored the items it never
touched: ``rho * c_j M`` in the fit's columns and, with a content blend (:mod:`.blend`), ``c_j``
in its columns and 0 popularity; ``c_j`` read from the item's text and vectors by the same
tf-idf vocabulary and idf, LSA basis, whitening and block scales as in the fit
(:class:`~.items.ContentSpace`)."""
from __future__ import annotations

import numpy as np
import torch

from fusion import InterestModel
from fusion.content import TOKEN_PATTERN, TOKENS, ContentHead, ContentHeadConfig, catalog_fingerprint
from multimodal_interest.training.closed_form.blend import ContentColumns
from multimodal_interest.training.closed_form.items import ContentMap, ContentSpace


# the vectorizer's settings the head's text rule (:mod:`fusion.content`) reproduces
TEXT_RULE = {"analyzer": "word", "lowercase": True, "token_pattern": TOKEN_PATTERN.pattern, "ngram_range": (1, 1),
             "strip_accents": None, "stop_words": None, "preprocessor": None, "tokenizer": None,
             "sublinear_tf": True, "use_idf": True, "norm": "l2", "binary": False}


def check_text_rule(vectorizer) -> None:
    """Refuse a tf-idf vectorizer the head would read text differently from."""
    params = vectorizer.get_params()
    differ = {k: params.get(k) for k, want in TEXT_RULE.items() if params.get(k) != want}
    if differ:
        raise ValueError(f"the content head reads text as scikit-learn's TfidfVectorizer with {TEXT_RULE}; "
                         f"the fit's vectorizer differs in {differ}: change fusion.content with it")


def content_head(space: ContentSpace, pieces: list[tuple[tuple[str, ...], np.ndarray, int]], width: int,
                 n_items: int, item_ids: list[str] | None) -> ContentHead:
    """The head whose vectors are the sum of ``pieces``: each ``(blocks, A [F_blocks, k], first)``
    puts ``c_blocks A`` in columns ``first .. first + k`` of ``width``; ``item_ids``: the
    target's training catalog (None: not known, not recorded)."""
    blocks = list(dict.fromkeys(b for p in pieces for b in p[0]))  # every piece's, in first-seen order
    modalities = {b: int(space.whitening[b][0].shape[0]) for b in blocks if b != TOKENS}
    vocabulary: list[str] = []
    lsa_dims = 0
    if TOKENS in blocks:
        check_text_rule(space.vectorizer)
        vocab = space.vectorizer.vocabulary_
        vocabulary = sorted(vocab, key=vocab.get)
        lsa_dims = space.lsa.shape[0]
    config = ContentHeadConfig(blocks, width, {b: space.scale[b] for b in blocks}, modalities, vocabulary,
                               lsa_dims, n_items, catalog_fingerprint(item_ids) if item_ids is not None else None)
    rows, at = {}, 0  # block -> its rows of c
    for b in blocks:
        d = lsa_dims if b == TOKENS else modalities[b]
        rows[b], at = np.arange(at, at + d), at + d
    full = np.zeros((config.features, width))
    for names, a, first in pieces:
        full[np.concatenate([rows[b] for b in names]), first:first + a.shape[1]] += a
    head = ContentHead(config)
    with torch.no_grad():
        head.map.copy_(torch.from_numpy(full))
        if TOKENS in blocks:
            head.idf.copy_(torch.from_numpy(space.vectorizer.idf_))
            head.lsa.copy_(torch.from_numpy(space.lsa.T))
        for m in modalities:
            mu, w = space.whitening[m]
            getattr(head, f"mu_{m}").copy_(torch.from_numpy(mu))
            getattr(head, f"whiten_{m}").copy_(torch.from_numpy(w))
    return head


def attach_head(model: InterestModel, target: str, space: ContentSpace, cmap: ContentMap | None,
                blend: ContentColumns | None, item_ids: list[str] | None) -> dict:
    """Give ``model``'s ``target`` the head that computes its learned vectors from content:
    ``rho c M`` in the fit's columns (``cmap``; None: those columns are 0 for a new item) and
    the content blend's columns (``blend``: the blocks' content, 0 popularity); no head when
    there is neither. Returns what it is, for the run's log (``info["fit"]["content"]["head"]``)."""
    width = model.fusion.config.dim
    pieces = []
    if cmap is not None:
        pieces.append((cmap.blocks, cmap.rho * cmap.m, 0))
    if blend is not None:
        f = blend.target.shape[1] - 1  # the blocks' columns, then popularity
        pieces.append((tuple(blend.blocks), np.eye(f), width - blend.target.shape[1]))
    if not pieces:
        return {"head": "none: no content map (no content, or fewer than two touched items) and no blend"}
    n = model.config.targets[target].n_items
    model.set_content_head(target, content_head(space, pieces, width, n, item_ids))
    return {"head": {"map": cmap.info() if cmap is not None else None,
                     "blend_blocks": list(blend.blocks) if blend is not None else None}}
