"""The embedding job: incremental, resumable, loud about bad items (``mmi embed``)."""
from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from PIL import Image

from encoders import Encoder, register_encoder
from multimodal_interest.catalog import Catalog
from multimodal_interest.cli import main
from multimodal_interest.embed import embed_catalog
from multimodal_interest.store import EmbeddingStore

from launch import REPO, accelerate_launch
from text_hash import HashTextEncoder


@register_encoder("test-char-hash")
class CharHashEncoder(HashTextEncoder):
    """Deterministic text vectors (hashed character trigrams); counts what it encodes and can
    be told to die mid-job, as a killed process would."""

    def __init__(self, width: int = 16, device=None):
        super().__init__(width, device)
        self.seen: list[str] = []
        self.die_after: int | None = None  # raise KeyboardInterrupt after this many batches

    def vector(self, text: str) -> torch.Tensor:
        out = torch.zeros(self.width)
        for i in range(len(text) - 2):
            out[zlib.crc32(text[i:i + 3].encode()) % self.width] += 1.0
        return out

    def collate(self, items):
        self.seen += items
        return super().collate(items)

    def forward(self, batch):
        if self.die_after is not None:
            if self.die_after == 0:
                raise KeyboardInterrupt
            self.die_after -= 1
        return super().forward(batch)


@register_encoder("test-pixels")
class PixelEncoder(Encoder):
    """Mean colour of the image: enough to tell files apart, and it really decodes them."""

    modality = "image"

    def __init__(self, device=None):
        super().__init__(device="cpu")

    @property
    def dim(self) -> int:
        return 3

    def load_item(self, item):
        with Image.open(item) as im:
            return torch.from_numpy(np.asarray(im.convert("RGB").resize((8, 8)), dtype=np.float32))

    def collate(self, items):
        return torch.stack(items)

    def forward(self, batch):
        return batch.mean((1, 2))


def write_catalog(folder: Path, n: int, name: str = "items.csv") -> Path:
    rows = [{"item_id": f"i{i}", "title": f"item number {i} " + "x" * (i % 7),
             "description": f"desc {i * 7}"} for i in range(n)]
    path = folder / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def run_job(catalog_path: Path, store_root: Path, encoder: Encoder, shard_size: int = 8, **kw):
    catalog = Catalog.read(catalog_path, **kw)
    return embed_catalog(catalog, EmbeddingStore(store_root), "shop", {"text": encoder},
                         batch_size=4, shard_size=shard_size, show_progress=False)


def test_rerun_on_unchanged_catalog_encodes_nothing(tmp_path):
    path = write_catalog(tmp_path, 30)
    first = run_job(path, tmp_path / "store", CharHashEncoder())
    assert (first.modalities[0].encoded, first.modalities[0].reused) == (30, 0)
    again = CharHashEncoder()
    second = run_job(path, tmp_path / "store", again)
    assert (second.modalities[0].encoded, second.modalities[0].reused) == (0, 30)
    assert again.seen == []


def test_changed_item_is_encoded_again_and_wins(tmp_path):
    path = write_catalog(tmp_path, 10)
    run_job(path, tmp_path / "store", CharHashEncoder())
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.loc[3, "title"] = "a completely new title"
    df.to_csv(path, index=False)
    enc = CharHashEncoder()
    summary = run_job(path, tmp_path / "store", enc)
    assert summary.modalities[0].encoded == 1 and len(enc.seen) == 1
    stored = EmbeddingStore(tmp_path / "store").load("shop", "text", ids=["i3"])
    expected = CharHashEncoder().encode("a completely new title. desc 21", convert_to_tensor=True)
    assert torch.equal(stored.vectors[0], expected)


def test_killed_job_resumes_without_losing_or_duplicating(tmp_path):
    path = write_catalog(tmp_path, 45)
    dying = CharHashEncoder()
    dying.die_after = 5  # 2 shards of 8 items = 4 batches of 4 are written, then death mid-shard
    with pytest.raises(KeyboardInterrupt):
        run_job(path, tmp_path / "store", dying)
    vs = EmbeddingStore(tmp_path / "store").get("shop", "text")
    assert sum(len(pd.read_parquet(s)) for s in vs.shards()) == 16
    resumed = CharHashEncoder()
    run_job(path, tmp_path / "store", resumed)
    assert len(resumed.seen) == 45 - 16
    rows = pd.concat([pd.read_parquet(s) for s in vs.shards()])
    assert len(rows) == 45 and rows["item_id"].is_unique
    run_job(path, tmp_path / "clean", CharHashEncoder())
    ids = [f"i{i}" for i in range(45)]
    clean = EmbeddingStore(tmp_path / "clean").load("shop", "text", ids=ids)
    assert torch.equal(vs.load(ids).vectors, clean.vectors)
    assert not list(vs.folder.glob(".*tmp"))


def test_bad_items_are_reported_and_the_rest_go_on(tmp_path, media_samples):
    (tmp_path / "img").mkdir()
    shutil.copy(media_samples / "images" / "chelsea.png", tmp_path / "img" / "cat.png")
    (tmp_path / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    rows = [
        ("a", "good item", "img/cat.png"),
        ("b", "", "img/cat.png"),  # empty text
        ("c", "missing picture", "img/nope.png"),
        ("a", "duplicate id", ""),
        ("d", "corrupt picture", "img/broken.png"),
        ("e", "escapes the folder", "../outside.png"),
        ("f", "no picture at all", ""),
    ]
    pd.DataFrame(rows, columns=["item_id", "title", "image"]).to_csv(tmp_path / "items.csv", index=False)
    catalog = Catalog.read(tmp_path / "items.csv")
    summary = embed_catalog(catalog, EmbeddingStore(tmp_path / "store"), "shop",
                            {"text": CharHashEncoder(), "image": PixelEncoder()}, show_progress=False)
    got = {(e.row, e.modality): e.reason for e in summary.errors}
    assert set(got) == {(4, "catalog"), (2, "text"), (3, "image"), (5, "image"), (6, "image")}
    assert "duplicate item_id (first at row 1)" in got[(4, "catalog")]
    assert "empty text" in got[(2, "text")]
    assert "not found" in got[(3, "image")] and "nope.png" in got[(3, "image")]
    assert f"leaves {tmp_path}" in got[(6, "image")]
    text, image = summary.modalities
    assert (text.encoded, image.encoded) == (5, 2)  # a, c, d, e, f; a, b
    lines = [json.loads(x) for x in (tmp_path / "store" / "shop" / "errors.jsonl").read_text().splitlines()]
    assert len(lines) == 5 and all(x["file"].endswith("items.csv") for x in lines)
    text_out = summary.format()
    assert "5 item(s) skipped" in text_out and "row 5" in text_out


def test_cli_summary_strict_and_missing_column(tmp_path, capsys):
    path = write_catalog(tmp_path, 6)
    store = tmp_path / "store"
    args = ["-q", "embed", str(path), "--store", str(store), "--platform", "shop",
            "--encoder", "text=test-char-hash:width=8", "--text-fields", "title"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "test-char-hash" in out and "shop" in out
    assert EmbeddingStore(store).load("shop", "text").vectors.shape == (6, 8)
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.loc[2, "title"] = ""
    df.to_csv(path, index=False)
    assert main(args) == 0
    assert main([*args, "--strict"]) == 1
    assert main([*args[:-1], "nope"]) == 2
    assert "missing column 'nope'" in capsys.readouterr().err
    assert main([*args, "--encoder", "text=test-char-hash:colour=red"]) == 2
    assert "unknown: colour" in capsys.readouterr().err


def test_embed_a_dataset_folder_every_platform_and_its_vector_files(tmp_path, media_samples):
    from data_fixtures import CLIP, write_tiny

    root = write_tiny(tmp_path / "tiny", media=media_samples / "images" / "chelsea.png")
    store = tmp_path / "store"
    args = ["-q", "embed", str(root), "--store", str(store),
            "--encoder", "text=test-char-hash:width=8", "--encoder", "image=test-pixels"]
    assert main(args) == 0
    s = EmbeddingStore(store)
    assert s.modalities("art") == ["image", "text"] and s.modalities("office") == ["clip", "text"]
    assert s.load("art", "text").ids == ["a1", "a2", "a3"]  # a3: empty title, attributes only
    assert sorted(s.load("art", "image").ids) == ["a1", "a3"]  # a2 has no image
    clip = s.load("office", "clip", ids=["o1", "o2"]).vectors
    assert torch.equal(clip, torch.from_numpy(CLIP[[1, 0]]))  # the .npz lists o2 first
    expected = CharHashEncoder(width=8).encode("red paint. paint acrylic", convert_to_tensor=True)
    assert torch.equal(s.load("art", "text", ids=["a1"]).vectors[0], expected)


def test_two_processes_split_the_catalog_and_write_their_own_shards(tmp_path):
    ids = [f"i{i}" for i in range(50)]
    vectors = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    np.savez(tmp_path / "v.npz", item_id=np.array(ids), vectors=vectors)
    pd.DataFrame({"item_id": ids, "title": ids}).to_csv(tmp_path / "items.csv", index=False)
    out = accelerate_launch(str(REPO / "scripts" / "embed_items.py"), str(tmp_path / "items.csv"),
                            "--store", str(tmp_path / "store"), "--platform", "shop", "--modalities", "vec",
                            "--shard-size", "8", "--encoder", f"vec=precomputed:path={tmp_path / 'v.npz'}")
    assert out.stdout.count("platform 'shop'") == 1  # one summary, from the main process
    vs = EmbeddingStore(tmp_path / "store").get("shop", "vec")
    assert {s.name.split("-")[2] for s in vs.shards()} == {"r000", "r001"}
    rows = pd.concat([pd.read_parquet(s) for s in vs.shards()])
    assert len(rows) == 50 and rows["item_id"].is_unique
    assert torch.equal(vs.load(ids).vectors, torch.from_numpy(vectors))


# One small catalog in every format a catalog file may have. CSV and TSV have no lists, so
# their attrs cell holds the text a list is joined to; JSONL has a JSON array, Parquet a list column.
CATALOG = [  # (item_id, title, attrs, year, description)
    ("s1", "Red  stapler", ["office", "red"], 2001, None),
    ("s2", "Blue pen.", ["office"], 1999, "writes well"),
    ("s3", "", [], 2020, "a plain   box"),
]
# combine_text_fields' documented rule: a list joined with ", "; parts with ". ", or a space
# after a part ending in "."; whitespace collapsed; empty values skipped.
COMBINED = {"s1": "Red stapler. office, red. 2001",
            "s2": "Blue pen. office. 1999. writes well",
            "s3": "2020. a plain box"}


def write_any_catalog(folder: Path, suffix: str) -> Path:
    path = folder / f"items{suffix}"
    columns = ["item_id", "title", "attrs", "year", "description"]
    if suffix in (".csv", ".tsv"):
        rows = [(i, t, ", ".join(a), y, d or "") for i, t, a, y, d in CATALOG]
        pd.DataFrame(rows, columns=columns).to_csv(path, sep="," if suffix == ".csv" else "\t", index=False)
    elif suffix == ".parquet":
        df = pd.DataFrame(CATALOG, columns=columns)
        assert str(pa.Table.from_pandas(df).schema.field("attrs").type) == "list<item: string>"
        df.to_parquet(path)
    else:
        path.write_text("".join(json.dumps(dict(zip(columns, r))) + "\n" for r in CATALOG))
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".jsonl"])
def test_every_catalog_format_gives_the_encoder_the_documented_text(tmp_path, suffix):
    path = write_any_catalog(tmp_path, suffix)
    enc = CharHashEncoder()
    summary = run_job(path, tmp_path / "store", enc)
    assert summary.errors == [] and summary.modalities[0].encoded == 3
    assert sorted(enc.seen) == sorted(COMBINED.values())
    stored = EmbeddingStore(tmp_path / "store").load("shop", "text", ids=list(COMBINED))
    expected = CharHashEncoder().encode(list(COMBINED.values()), convert_to_tensor=True)
    assert torch.equal(stored.vectors, expected)


def test_cells_with_no_text_form_are_reported_by_file_row_and_column(tmp_path):
    records = [
        {"item_id": "ok", "title": "fine", "attrs": ["a", None, 3]},  # null element left out
        {"item_id": "obj", "title": "an object", "attrs": {"colour": "red"}},
        {"item_id": "nest", "title": "nested", "attrs": [["a"], "b"]},
        {"item_id": ["x"], "title": "a list as id", "attrs": []},
    ]
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    enc = CharHashEncoder()
    summary = run_job(path, tmp_path / "store", enc)
    assert enc.seen == ["fine. a, 3"]
    got = {(e.row, e.modality): str(e) for e in summary.errors}
    assert set(got) == {(2, "text"), (3, "text"), (4, "catalog")}
    assert f"{path} row 2 (item 'obj', text): column 'attrs' holds a dict ({{'colour': 'red'}})" in got[(2, "text")]
    assert "column 'attrs' holds a list holding a list ([['a'], 'b'])" in got[(3, "text")]
    assert "column 'item_id' holds a list (['x'])" in got[(4, "catalog")]
    lines = [json.loads(x) for x in (tmp_path / "store" / "shop" / "errors.jsonl").read_text().splitlines()]
    assert [x["row"] for x in lines] == [4, 2, 3]


def test_parquet_struct_and_nested_list_cells_are_reported_not_a_crash(tmp_path):
    path = tmp_path / "items.parquet"
    pd.DataFrame({"item_id": ["p1", "p2", "p3"], "title": ["one", "two", "three"],
                  "tags": [["x", "y"], [], None],  # list<string>
                  "parts": [None, [["deep"]], None],  # list<list<string>>
                  "spec": [None, None, {"size": "L"}]}).to_parquet(path)  # struct
    enc = CharHashEncoder()
    summary = run_job(path, tmp_path / "store", enc, text_fields=["title", "tags"])
    assert sorted(enc.seen) == ["one. x, y", "three", "two"] and summary.errors == []
    enc = CharHashEncoder()
    summary = run_job(path, tmp_path / "store2", enc)  # every column is text
    assert enc.seen == ["one. x, y"]
    assert {e.row: e.reason.split(" (")[0] for e in summary.errors} == {
        2: "column 'parts' holds a list holding a list", 3: "column 'spec' holds a dict"}
    assert str(summary.errors[0]).startswith(f"{path} row 2 (item 'p2', text): column 'parts'")
