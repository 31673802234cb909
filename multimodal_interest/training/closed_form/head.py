"""The target's content map as a :class:`~fusion.content.ContentHead` saved with the model, so
that items a catalog gains after training are scored as the fit scored the items it never
touched: ``rho * c_j M``, ``c_j`` read from the item's text and vectors by the same tf-idf
vocabulary and idf, LSA basis, whitening and block scales as in the fit
(:class:`~.items.ContentSpace`)."""
from __future__ import annotations

import numpy as np
import torch

from fusion import InterestModel
from fusion.content import TOKEN_PATTERN, TOKENS, ContentHead, ContentHeadConfig, catalog_fingerprint
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


def content_head(space: ContentSpace, cmap: ContentMap, width: int, n_items: int,
                 item_ids: list[str] | None) -> ContentHead:
    """The head computing ``cmap`` in ``space``, its vectors zero-padded to ``width``;
    ``item_ids``: the target's training catalog (None: not known, not recorded)."""
    modalities = {b: int(space.whitening[b][0].shape[0]) for b in cmap.blocks if b != TOKENS}
    vocabulary: list[str] = []
    lsa_dims = 0
    if TOKENS in cmap.blocks:
        check_text_rule(space.vectorizer)
        vocab = space.vectorizer.vocabulary_
        vocabulary = sorted(vocab, key=vocab.get)
        lsa_dims = space.lsa.shape[0]
    config = ContentHeadConfig(list(cmap.blocks), width, float(cmap.rho), {b: space.scale[b] for b in cmap.blocks},
                               modalities, vocabulary, lsa_dims, n_items,
                               catalog_fingerprint(item_ids) if item_ids is not None else None)
    head = ContentHead(config)
    r = cmap.m.shape[1]
    with torch.no_grad():
        head.map.copy_(torch.from_numpy(np.pad(cmap.m, ((0, 0), (0, width - r)))))
        if TOKENS in cmap.blocks:
            head.idf.copy_(torch.from_numpy(space.vectorizer.idf_))
            head.lsa.copy_(torch.from_numpy(space.lsa.T))
        for m in modalities:
            mu, w = space.whitening[m]
            getattr(head, f"mu_{m}").copy_(torch.from_numpy(mu))
            getattr(head, f"whiten_{m}").copy_(torch.from_numpy(w))
    return head


def attach_head(model: InterestModel, target: str, space: ContentSpace, cmap: ContentMap | None,
                item_ids: list[str] | None) -> dict:
    """Give ``model``'s ``target`` the head of ``cmap`` (None: no head); what it is, for the
    run's log (``info["fit"]["content"]["head"]``)."""
    if cmap is None:
        return {"head": "none: no content, or fewer than two touched items"}
    n = model.config.targets[target].n_items
    model.set_content_head(target, content_head(space, cmap, model.fusion.config.dim, n, item_ids))
    return {"head": cmap.info()}
