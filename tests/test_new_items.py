"""Items added to a target's catalog after training, as a deployment meets them: the dataset's
items table gains rows, ``mmi embed`` adds their vectors to the store, and the bundle (built
again, without retraining) scores them from the model's content head, while the items the
model trained on keep their vectors and scores bit for bit. A user whose history matches a new
item's title gets it first: through the bundle, ``mmi recommend``, ``mmi recommend-batch``
and the HTTP service."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import shutil
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient

from encoders import register_encoder
from fusion import InterestModel
from fusion.content import ContentHead
from multimodal_interest.bundle import Bundle
from multimodal_interest.cli import main
from multimodal_interest.data.dataset import CrossPlatformDataset
from multimodal_interest.recommend import Recommender
from multimodal_interest.run import Run
from multimodal_interest.server import create_app
from multimodal_interest.store import EmbeddingStore
from text_hash import HashTextEncoder

WORDS = ["acrylic", "stapler", "canvas", "ledger", "easel", "binder"]  # one topic each
FIT_USERS = 12  # per topic
NOISE = 6  # target items of no topic
ENCODER = "text=test-new-items-words"
MANIFEST = """\
name: new-items-world
synthetic: true
description: six topics named by a word in the items' titles (tests/test_new_items.py)
provenance: tests/test_new_items.py
licence: CC0
interactions: interactions.csv
platforms:
  src: {items: items/src.csv, text: [title]}
  tgt: {items: items/tgt.csv, text: [title]}
"""


@register_encoder("test-new-items-words")
class WordVectors(HashTextEncoder):
    """A text's vector: the sum of a fixed random vector per word (seeded by the word)."""

    def __init__(self, width: int = 12, device=None):
        super().__init__(width, device)

    def vector(self, text: str) -> torch.Tensor:
        out = torch.zeros(self.width)
        for word in text.lower().split():
            out += torch.randn(self.width, generator=torch.Generator().manual_seed(zlib.crc32(word.encode())))
        return out


def new_item(word: str) -> str:
    return f"new-{word}"


NEW_ITEMS = [(new_item(w), f"{w} special edition") for w in WORDS] + [("new-blank", "")]


def write_dataset(root: Path) -> Path:
    """Source item ``s<t><j>`` is ``"<word> x<t><j>"``; target items ``t<t>a`` ``"the <word>
    one"`` and ``t<t>b`` ``"<word> deluxe kit"``, then ``n<k>`` ``"other n<k>"``. A fit user of
    topic ``t`` has two of its three source items, both its target items and a noise item;
    two validation and two test users per topic have its source items and one target item."""
    rng = np.random.default_rng(0)
    data = root / "data"
    (data / "items").mkdir(parents=True)
    (data / "splits").mkdir()
    (data / "dataset.yaml").write_text(MANIFEST)
    src = [(f"s{t}{j}", f"{w} x{t}{j}") for t, w in enumerate(WORDS) for j in range(3)]
    tgt = [x for t, w in enumerate(WORDS) for x in ((f"t{t}a", f"the {w} one"), (f"t{t}b", f"{w} deluxe kit"))]
    tgt += [(f"n{k}", f"other n{k}") for k in range(NOISE)]
    for p, rows in (("src", src), ("tgt", tgt)):
        pd.DataFrame(rows, columns=["item_id", "title"]).to_csv(data / f"items/{p}.csv", index=False)
    rows, split = [], []
    for t in range(len(WORDS)):
        for k in range(FIT_USERS):
            u = f"fit{t}_{k}"
            for step, j in enumerate(rng.choice(3, 2, replace=False)):
                rows.append((u, "src", f"s{t}{j}", step))
            rows += [(u, "tgt", f"t{t}a", 2), (u, "tgt", f"t{t}b", 3), (u, "tgt", f"n{rng.integers(NOISE)}", 4)]
        for role in ("valid", "test"):
            for k in range(2):
                u = f"{role}{t}_{k}"
                rows += [(u, "src", f"s{t}{j}", j) for j in range(3)] + [(u, "tgt", f"t{t}{'ab'[k]}", 5)]
                split.append((u, role, "tgt"))
    pd.DataFrame(rows, columns=["user_id", "platform", "item_id", "timestamp"]).to_csv(data / "interactions.csv",
                                                                                       index=False)
    pd.DataFrame(split, columns=["user_id", "role", "target"]).to_csv(data / "splits/s0.csv", index=False)
    return data


def add_items(data: Path, items: list[tuple[str, str]]) -> None:
    """The catalog gains ``items`` (id, title): appended to the target's items table."""
    table = pd.read_csv(data / "items/tgt.csv", dtype=str, keep_default_na=False)
    pd.concat([table, pd.DataFrame(items, columns=["item_id", "title"])]).to_csv(data / "items/tgt.csv", index=False)


def mmi(*args) -> str:
    """``mmi ARGS`` in-process; what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["-q", *map(str, args)]) == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Train and export on the first catalog; then add the new items, embed, export again."""
    root = tmp_path_factory.mktemp("new-items")
    data = write_dataset(root)
    store, run = root / "store", root / "run"
    mmi("embed", data, "--store", store, "--encoder", ENCODER)
    mmi("train", data, "--source", "src", "--target", "tgt", "--split", "s0", "--store", store,
        "--output", run)
    mmi("export-index", "--model", run, "--dataset", data, "--store", store, "--output", root / "before")
    trained = CrossPlatformDataset.load(data)
    add_items(data, NEW_ITEMS)
    embedded = mmi("embed", data, "--store", store, "--encoder", ENCODER)
    exported = mmi("export-index", "--model", run, "--dataset", data, "--store", store, "--output",
                   root / "after")
    dataset = CrossPlatformDataset.load(data)
    return {"root": root, "data": data, "store": store, "run": run, "dataset": dataset, "trained": trained,
            "embedded": embedded, "exported": exported, "before": Recommender.load(root / "before", "exact", trained),
            "after": Recommender.load(root / "after", "exact", dataset)}


def test_the_new_items_are_embedded_incrementally_and_the_head_is_saved(world):
    assert world["dataset"].n_items["tgt"] == world["trained"].n_items["tgt"] + len(NEW_ITEMS)
    # tgt: 24 items with text, 6 encoded (the new ones), 18 reused, 1 failed (the blank title)
    assert re.search(r"text\s+test-new-items-words\s+24\s+6\s+18\s+1\s", world["embedded"]), world["embedded"]
    assert "tgt: 25 items (target, history), 7 added after training, scored from their content" in world["exported"]
    assert EmbeddingStore(world["store"]).get("tgt", "text").lookup([new_item("easel")])[1].all()
    model = InterestModel.from_pretrained(Run(world["run"]).model_dir)
    head = model.content_head("tgt")
    assert isinstance(head, ContentHead) and head.config.n_items == world["trained"].n_items["tgt"]
    assert set(head.config.blocks) <= {"tokens", "text"} and "easel" in head.config.vocabulary
    content = model.info["fit"]["content"]
    assert set(content["head"]["map"]["blocks"]) | set(content["head"]["blend_blocks"] or []) == set(head.config.blocks)


@pytest.mark.parametrize("t", range(len(WORDS)))
def test_a_user_whose_history_matches_a_new_item_gets_it_first(world, t):
    """A fit user of topic ``t`` (who has its two trained target items: seen, not recommended)
    gets the new item of that topic first; a history of the topic's source items (nothing
    excluded) gets the topic's three items on top, the new one among them."""
    rec, word = world["after"], WORDS[t]
    got = rec.recommend(user_id=f"fit{t}_0", platform="tgt", k=3)
    assert got.items[0].item_id == new_item(word), got.items
    top3 = rec.recommend([f"s{t}0", f"s{t}1"], source="src", platform="tgt", k=3, exclude_seen=False, explain=0)
    assert {x.item_id for x in top3.items} == {f"t{t}a", f"t{t}b", new_item(word)}, top3.items


def test_warm_items_keep_their_vectors_and_scores(world):
    """The trained items' vectors, bias and scale are the same bits; their scores are the same
    but for the last bit of float32 (a matrix product's kernel depends on the catalog's size),
    and they rank in the same order."""
    before, after = world["before"], world["after"]
    n = world["trained"].n_items["tgt"]
    assert torch.equal(before.bundle.targets["tgt"].vectors, after.bundle.targets["tgt"].vectors[:n])
    assert torch.equal(before.bundle.targets["tgt"].bias, after.bundle.targets["tgt"].bias[:n])
    history = ["s00", "s21", "s52"]
    scores = {}
    for name, rec in (("before", before), ("after", after)):
        r = rec.recommend(history, source="src", platform="tgt", k=len(rec.bundle.item_ids["tgt"]), explain=0)
        scores[name] = {x.item_id: x.score for x in r.items}
    assert before.bundle.targets["tgt"].scale == after.bundle.targets["tgt"].scale
    warm = list(scores["before"])  # best first
    np.testing.assert_allclose([scores["after"][i] for i in warm], [scores["before"][i] for i in warm],
                               rtol=1e-6, atol=0)
    assert [i for i in scores["after"] if i in scores["before"]] == warm


def test_a_new_item_with_no_content_is_scored_0_with_a_warning(world, caplog):
    with caplog.at_level(logging.WARNING, logger="multimodal_interest.new_items"):
        built = Bundle.build(world["run"], world["dataset"], EmbeddingStore(world["store"]), map_users=0)
    assert "1 of the 7 item(s) added to 'tgt' after training have no content" in caplog.text
    assert "'new-blank'" in caplog.text
    row = built.item_ids["tgt"].index("new-blank")
    assert torch.equal(built.targets["tgt"].vectors[row], torch.zeros(built.targets["tgt"].dim))
    got = world["after"].recommend(["s00"], source="src", platform="tgt", k=30, explain=0)
    assert {x.item_id: x.score for x in got.items}["new-blank"] == 0.0


def test_mmi_recommend_ranks_the_new_items(world):
    """``mmi recommend`` from the run folder (the bundle built in memory) and from the bundle."""
    for model in (["--model", world["run"], "--store", world["store"]], ["--model", world["root"] / "after"]):
        out = mmi("recommend", *model, "--dataset", world["data"], "--platform", "tgt",
                  "--user", "fit4_1", "-k", "2", "--json")
        assert json.loads(out)["items"][0]["item_id"] == new_item("easel")


def test_mmi_recommend_batch_ranks_the_new_items(world, tmp_path):
    rows = [(f"u{t}", f"s{t}{j}") for t in range(len(WORDS)) for j in range(3)]
    pd.DataFrame(rows, columns=["user_id", "item_id"]).to_csv(tmp_path / "h.csv", index=False)
    mmi("recommend-batch", "--model", world["root"] / "after", "--histories", tmp_path / "h.csv",
        "--source", "src", "--platform", "tgt", "-k", "3", "--output", tmp_path / "out")
    out = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "out").glob("part-*.parquet"))])
    for t, w in enumerate(WORDS):
        items = list(out.loc[out["user_id"] == f"u{t}", "item_ids"].iloc[0])
        assert new_item(w) in items and set(items) == {f"t{t}a", f"t{t}b", new_item(w)}


def test_the_http_service_ranks_the_new_items(world):
    client = TestClient(create_app(world["after"]))
    for t, w in enumerate(WORDS):
        answer = client.post("/recommend", json={"platform": "tgt", "user_id": f"fit{t}_2", "k": 1})
        assert answer.status_code == 200, answer.text
        assert answer.json()["items"][0]["item_id"] == new_item(w)
    platforms = {p["name"]: p["n_items"] for p in client.get("/platforms").json()["platforms"]}
    assert platforms["tgt"] == world["dataset"].n_items["tgt"]


def test_a_model_without_a_content_head_refuses_the_new_items_naming_them(world, tmp_path):
    """A linear model saved before heads were written, and a transformer: the catalog it was
    trained on serves as before; the grown one is refused, naming the new items."""
    model = InterestModel.from_pretrained(Run(world["run"]).model_dir)
    del model.content_heads["tgt"]
    model.save_pretrained(tmp_path / "old")
    data = write_dataset(tmp_path)  # the training catalog again
    mmi("train", data, "--source", "src", "--target", "tgt", "--split", "s0", "--store", world["store"],
        "--output", tmp_path / "transformer", "--set", "kind=transformer", "--set", "epochs=1", "--set", "dim=16",
        "--set", "n_heads=2", "--set", "n_layers=1", "--set", "min_epoch_steps=1")
    store = EmbeddingStore(world["store"])
    for folder in (tmp_path / "old", tmp_path / "transformer"):
        with pytest.raises(ValueError, match=r"'tgt' has 7 item\(s\) the model was not trained on \('new-acrylic', "
                                             r"'new-stapler', .* and 2 more; .* no content head"):
            Bundle.build(folder, world["dataset"], store, map_users=0)
        assert len(Bundle.build(folder, world["trained"], store, map_users=0).targets["tgt"]) == 18  # as before


def test_a_catalog_whose_trained_items_moved_is_refused(world, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(world["data"], data)
    table = pd.read_csv(data / "items/tgt.csv", dtype=str, keep_default_na=False)
    table.iloc[::-1].to_csv(data / "items/tgt.csv", index=False)  # the new items first
    with pytest.raises(ValueError, match="are not the 18 the model was trained on, in that order"):
        Bundle.build(world["run"], CrossPlatformDataset.load(data), EmbeddingStore(world["store"]), map_users=0)


def test_the_head_reads_text_as_the_fits_tfidf_does():
    """The head's tokens are scikit-learn's ``TfidfVectorizer`` (fitted as the closed form fits
    it: sublinear tf, every platform's texts, tokens of two items): the same rows for texts
    with case, accents, punctuation, digits and tokens outside the vocabulary."""
    from fusion.content import ContentHeadConfig
    from multimodal_interest.training.closed_form.features import fit_tfidf

    texts = ["red acrylic paint", "Acrylic PAINT paint set", "blue stapler", "red-stapler, café!", "Café naïve 42",
             "naïve art_work 42 x y", "art_work", "", "unknown words only", "the paint the the"]
    vec = fit_tfidf([texts[:5], texts[5:]])
    vocabulary = sorted(vec.vocabulary_, key=vec.vocabulary_.get)
    v = len(vocabulary)
    head = ContentHead(ContentHeadConfig(["tokens"], v, {"tokens": 1.0}, {}, vocabulary, v, len(texts)))
    head.idf.copy_(torch.from_numpy(vec.idf_))
    head.lsa.copy_(torch.eye(v))
    head.map.copy_(torch.eye(v))
    got, has = head.item_vectors(len(texts), texts)
    want = vec.transform(texts).toarray()
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-7)
    assert has.tolist() == [bool(row.any()) for row in want] and not has[7] and not has[8]


def test_the_head_is_saved_verified_and_loaded_with_the_model(world, tmp_path):
    model = InterestModel.from_pretrained(Run(world["run"]).model_dir)
    model.save_pretrained(tmp_path / "m")
    manifest = json.loads((tmp_path / "m/manifest.json").read_text())
    assert {"name": "content_heads/tgt", "role": "content_head", "type": "ContentHead", "platform": "tgt",
            "path": "content_heads/tgt"} in manifest["parts"]
    assert {"content_heads/tgt/config.json", "content_heads/tgt/model.safetensors"} <= set(manifest["sha256"])
    loaded = InterestModel.from_pretrained(tmp_path / "m").content_head("tgt")
    head = model.content_head("tgt")
    assert loaded.config == head.config
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), head.state_dict().values()))
    texts = ["easel special edition", "ledger"]
    vectors = {"text": torch.randn(2, head.config.modalities["text"])}
    assert torch.equal(loaded.item_vectors(2, texts, vectors)[0], head.item_vectors(2, texts, vectors)[0])
    for name in ("config.json", "model.safetensors"):  # a changed head is refused, naming its file
        shutil.copytree(tmp_path / "m", tmp_path / name)
        path = tmp_path / name / "content_heads/tgt" / name
        data = bytearray(path.read_bytes())
        data[-3] ^= 1
        path.write_bytes(bytes(data))
        with pytest.raises(ValueError, match=rf"content_heads/tgt/{name}: sha256 .* changed after the model was saved"):
            InterestModel.from_pretrained(tmp_path / name)


def test_a_history_platform_that_gained_items_is_refused(world, tmp_path):
    """The model's source item tables are fixed at training: only a target's catalog may grow."""
    data = tmp_path / "data"
    shutil.copytree(world["data"], data)
    table = pd.read_csv(data / "items/src.csv", dtype=str, keep_default_na=False)
    pd.concat([table, pd.DataFrame([("s-new", "easel new")], columns=["item_id", "title"])]).to_csv(
        data / "items/src.csv", index=False)
    with pytest.raises(ValueError, match="platform 'src' has 19 items, the model's item table 18; items a "
                                         "history may hold are fixed at training"):
        Bundle.build(world["run"], CrossPlatformDataset.load(data), EmbeddingStore(world["store"]), map_users=0)
