"""Store integrity: every shard checked where it is read, bad ones quarantined by `mmi embed`,
two jobs on one store encode each item once."""
from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from multimodal_interest.cli import main
from multimodal_interest.store import EmbeddingStore, StoreError, VectorSet, shard_checksum
from multimodal_interest.training.features import ItemFeatures

from test_embed import CharHashEncoder, run_job, write_catalog
from test_store import FakeEncoder, vecs

WIDTH = 256  # 8 rows of 256 floats: 8 KB of vectors per shard, room to overwrite 4 KB inside


def overwrite_4kb(shard: Path) -> None:
    """Overwrite 4 KB of a shard's vector bytes with other finite floats (1,024 of them)."""
    data = bytearray(shard.read_bytes())
    first = pq.read_table(shard).column("vector")[0].values.to_numpy().tobytes()
    at = bytes(data).index(first)
    data[at:at + 4096] = np.full(1024, 0.5, dtype=np.float32).tobytes()
    shard.write_bytes(bytes(data))
    pq.read_table(shard)  # still a readable parquet file: only the checksum can tell


def truncate(shard: Path) -> None:
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])


def write_raw_shard(vs: VectorSet, ids: list[str], vectors: np.ndarray, name: str | None = None) -> Path:
    """A shard as another program might write it: any width, any values; named with its
    checksum unless ``name`` is given (a legacy name, say)."""
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    table = pa.table({"item_id": ids, "content_hash": ["h"] * len(ids),
                      "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])})
    tmp = vs.folder / "tmp.parquet"
    pq.write_table(table, tmp)
    sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
    return tmp.rename(vs.folder / (name or f"shard-{10**19:020d}-r000-{sha}.parquet"))


@pytest.mark.parametrize("damage", [overwrite_4kb, truncate])
def test_a_damaged_shard_is_named_by_every_reader(tmp_path, damage):
    vs = EmbeddingStore(tmp_path).open("art", "text", FakeEncoder(dim=64))
    vs.write_shard([f"a{i}" for i in range(8)], ["h"] * 8, vecs(8, dim=64))
    shard = vs.write_shard([f"b{i}" for i in range(40)], ["h"] * 40, vecs(40, dim=64, seed=1))
    damage(shard)

    def features():  # what `mmi train` and `mmi evaluate` read
        return ItemFeatures.from_store(EmbeddingStore(tmp_path), {"art": ["a0"]})

    for read in (lambda: vs.load(), lambda: vs.lookup(["a0"]), vs.content_hashes, features,
                 lambda: EmbeddingStore(tmp_path).load("art", "text", ids=["a0"])):
        with pytest.raises(StoreError, match=f"{shard.name}: bad shard: .*run `mmi embed` on the "
                                             f"catalog to re-encode the affected items"):
            read()


def test_a_shard_of_another_width_or_with_nan_is_named_not_a_reshape_error(tmp_path):
    vs = EmbeddingStore(tmp_path).open("art", "text", FakeEncoder(dim=4))
    vs.write_shard(["x"], ["h"], vecs(1))
    narrow = write_raw_shard(vs, ["y"], vecs(1, dim=3))
    with pytest.raises(StoreError, match=f"{narrow.name}: bad shard: vectors of width 3, .* dim 4"):
        vs.load()
    narrow.unlink()
    bad = vecs(2)
    bad[1, 2] = np.inf
    nan = write_raw_shard(vs, ["y", "z"], bad)
    with pytest.raises(StoreError, match=rf"{nan.name}: bad shard: non-finite vectors for items \['z'\]"):
        vs.lookup(["x"])


def test_a_legacy_shard_without_checksum_loads_and_embed_records_one(tmp_path, caplog):
    path = write_catalog(tmp_path, 10)
    run_job(path, tmp_path / "store", CharHashEncoder(), shard_size=4)
    vs = EmbeddingStore(tmp_path / "store").get("shop", "text")
    want = vs.load()
    for i, shard in enumerate(vs.shards()):  # as the code before checksums named them
        shard.rename(shard.with_name(f"{shard.name.rsplit('-', 1)[0]}-{i:08x}.parquet"))
    assert [shard_checksum(s) for s in vs.shards()] == [None] * 3
    with caplog.at_level(logging.WARNING, logger="multimodal_interest.store"):
        got = vs.load()
    assert got.ids == want.ids and torch.equal(got.vectors, want.vectors)
    assert "read unverified" in caplog.text
    enc = CharHashEncoder()
    summary = run_job(path, tmp_path / "store", enc, shard_size=4)
    assert enc.seen == [] and summary.modalities[0].quarantined == []
    assert all(shard_checksum(s) for s in vs.shards()) and len(vs.shards()) == 3
    assert torch.equal(vs.load(want.ids).vectors, want.vectors)


@pytest.mark.parametrize("damage", [overwrite_4kb, truncate])
def test_embed_quarantines_a_damaged_shard_and_encodes_exactly_its_items(tmp_path, damage):
    path = write_catalog(tmp_path, 30)
    run_job(path, tmp_path / "store", CharHashEncoder(width=WIDTH))
    vs = EmbeddingStore(tmp_path / "store").get("shop", "text")
    shard = vs.shards()[1]
    held = set(pd.read_parquet(shard)["item_id"])
    assert len(held) == 8
    damage(shard)
    enc = CharHashEncoder(width=WIDTH)
    summary = run_job(path, tmp_path / "store", enc)
    text = summary.modalities[0]
    assert (text.encoded, text.reused) == (8, 22) and len(enc.seen) == 8
    assert len(text.quarantined) == 1 and shard.name in text.quarantined[0]
    assert "1 bad shard(s) quarantined" in summary.format()
    assert [p.name for p in (vs.folder / "quarantine").iterdir()] == [shard.name]
    rows = pd.concat([pd.read_parquet(s) for s in vs.shards()])
    assert set(rows["item_id"].iloc[-8:]) == held and rows["item_id"].is_unique
    run_job(path, tmp_path / "clean", CharHashEncoder(width=WIDTH))
    ids = [f"i{i}" for i in range(30)]
    clean = EmbeddingStore(tmp_path / "clean").load("shop", "text", ids=ids)
    assert torch.equal(vs.load(ids).vectors, clean.vectors)


def test_cli_embed_says_how_many_shards_it_quarantined(tmp_path, capsys):
    path = write_catalog(tmp_path, 12)
    store = tmp_path / "store"
    args = ["-q", "embed", str(path), "--store", str(store), "--platform", "shop",
            "--encoder", f"text=test-char-hash:width={WIDTH}", "--shard-size", "4"]
    assert main(args) == 0
    vs = EmbeddingStore(store).get("shop", "text")
    truncate(vs.shards()[0])
    overwrite_4kb(vs.shards()[2])
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "text: 2 bad shard(s) quarantined" in out
    assert len(EmbeddingStore(store).load("shop", "text").ids) == 12


def test_a_shard_moved_while_a_reader_lists_the_folder_is_listed_again(tmp_path, monkeypatch):
    vs = EmbeddingStore(tmp_path).open("art", "text", FakeEncoder())
    a = vs.write_shard(["x"], ["h"], vecs(1))
    stale = [a.with_name(a.name.replace("shard-", "shard-0")), a]  # a shard that has gone
    listings = iter([stale])
    real = VectorSet.shards
    monkeypatch.setattr(VectorSet, "shards", lambda self: next(listings, None) or real(self))
    assert vs.load().ids == ["x"]


class GatedEncoder(CharHashEncoder):
    """The first job's encoder: once encoding (lock held), it waits until the second job has
    said it is waiting for the lock (or 3 s), so that both jobs overlap."""

    def __init__(self, started: threading.Event, go: threading.Event):
        super().__init__()
        self.started, self.go = started, go

    def forward(self, batch):
        self.started.set()
        self.go.wait(3)
        return super().forward(batch)


class Notice(logging.Handler):
    def __init__(self, event: threading.Event):
        super().__init__()
        self.event, self.messages = event, []

    def emit(self, record):
        self.messages.append(record.getMessage())
        if "waiting for it" in record.getMessage():
            self.event.set()


def test_two_concurrent_jobs_encode_every_item_once(tmp_path):
    from accelerate import PartialState

    from multimodal_interest.parallel import cpu_only

    PartialState(cpu=cpu_only())  # the process's state, set up once before the threads share it
    path = write_catalog(tmp_path, 20)
    started, go = threading.Event(), threading.Event()
    first, second = GatedEncoder(started, go), CharHashEncoder()
    notice = Notice(go)
    logging.getLogger("multimodal_interest.store").addHandler(notice)
    summaries, errors = {}, []

    def job(name, encoder):
        try:
            summaries[name] = run_job(path, tmp_path / "store", encoder)
        except BaseException as e:  # noqa: BLE001 - reported by the test below
            errors.append(e)

    try:
        a = threading.Thread(target=job, args=("a", first))
        a.start()
        assert started.wait(10)
        b = threading.Thread(target=job, args=("b", second))
        b.start()
        a.join(30)
        b.join(30)
    finally:
        logging.getLogger("multimodal_interest.store").removeHandler(notice)
    assert not errors
    assert len(first.seen) + len(second.seen) == 20
    assert summaries["a"].modalities[0].encoded + summaries["b"].modalities[0].encoded == 20
    vs = EmbeddingStore(tmp_path / "store").get("shop", "text")
    rows = pd.concat([pd.read_parquet(s) for s in vs.shards()])
    assert len(rows) == 20 and rows["item_id"].is_unique
    assert any("another `mmi embed` job (pid " in m for m in notice.messages)


@pytest.mark.parametrize("text", ["{not json", '["a list"]', '{"dim": "4"}', "\udcff"])
def test_a_damaged_manifest_is_named(tmp_path, text):
    vs = EmbeddingStore(tmp_path).open("art", "text", FakeEncoder(dim=4))
    vs.write_shard(["x"], ["h"], vecs(1))
    (vs.folder / "manifest.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    for read in (vs.load, lambda: EmbeddingStore(tmp_path).open("art", "text", FakeEncoder(dim=4))):
        with pytest.raises(StoreError, match=r"manifest.json: not a valid manifest"):
            read()
