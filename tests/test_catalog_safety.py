"""Bad catalog input is refused or bounded, the same way by every reader of it.

One path rule for media (``mmi embed CATALOG``, ``mmi embed``/``mmi validate`` of a dataset
folder, the dataset loader): a file is used only if its real path, links followed, lies in
the folder. Text is bounded per item, a catalog that is not UTF-8 is refused at its line,
and a column of numeric vectors is never read as text.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from data_fixtures import write_tiny
from encoders import Encoder, register_encoder
from multimodal_interest.catalog import MAX_TEXT_CHARS, Catalog, CatalogError
from multimodal_interest.cli import main
from multimodal_interest.data import CrossPlatformDataset, DatasetError
from multimodal_interest.embed import embed_catalog
from multimodal_interest.store import EmbeddingStore
from test_embed import PixelEncoder


@register_encoder("test-safety-pixels")
class OpenedPixels(PixelEncoder):
    """test_embed's mean-colour encoder, remembering which files it opened."""

    opened: list[str] = []

    def load_item(self, item):
        OpenedPixels.opened.append(item)
        return super().load_item(item)


@register_encoder("test-safety-length")
class TextLength(Encoder):
    """The length of each text it is given, as a 1-d vector."""

    modality = "text"

    def __init__(self, device=None):
        super().__init__(device="cpu")

    @property
    def dim(self) -> int:
        return 1

    def load_item(self, item):
        return item

    def collate(self, items):
        return torch.tensor([[float(len(t))] for t in items])

    def forward(self, batch):
        return batch


def leaves(value: str, folder: Path, real: Path) -> str:
    """The one message of the path rule (multimodal_interest.data.paths.inside)."""
    return f"path {value!r} leaves {folder} (its real path, links followed, is {os.path.realpath(real)})"


@pytest.fixture
def linked(tmp_path: Path, media_samples: Path) -> Path:
    """A dataset folder whose item a1's image is a link to a real photo outside the folder;
    a catalog.csv beside its manifest names the same paths (relative to the same folder)."""
    root = write_tiny(tmp_path / "ds", media=media_samples / "images" / "chelsea.png")
    shutil.copy(media_samples / "images" / "coffee.png", tmp_path / "secret.png")
    (root / "media/link.png").symlink_to(tmp_path / "secret.png")
    art = pd.read_csv(root / "items/art.csv", dtype=str, keep_default_na=False)
    art.loc[0, "image"] = "media/link.png"
    art.to_csv(root / "items/art.csv", index=False)
    art.to_csv(root / "catalog.csv", index=False)
    return root


def test_link_out_of_the_folder_is_refused_by_mmi_embed_of_a_catalog(linked, tmp_path, capsys):
    OpenedPixels.opened.clear()
    args = ["-q", "embed", str(linked / "catalog.csv"), "--store", str(tmp_path / "store"),
            "--platform", "shop", "--modalities", "image", "--encoder", "image=test-safety-pixels"]
    assert main(args) == 0
    out = capsys.readouterr().out
    message = leaves("media/link.png", linked, tmp_path / "secret.png")
    assert f"catalog.csv row 1 (item 'a1', image): column 'image': {message}" in out
    assert not any("secret" in os.path.realpath(p) for p in OpenedPixels.opened)
    assert EmbeddingStore(tmp_path / "store").load("shop", "image").ids == ["a3"]
    assert main([*args, "--strict"]) == 1


def test_the_same_link_gets_the_same_message_from_validate_and_the_loader(linked, tmp_path, capsys):
    message = leaves("media/link.png", linked, tmp_path / "secret.png")
    with pytest.raises(DatasetError) as info:
        CrossPlatformDataset.load(linked)
    assert [str(p) for p in info.value.problems] == [f"items/art.csv:2: column 'image': {message}"]
    assert main(["validate", str(linked)]) == 1
    assert f"items/art.csv:2: column 'image': {message}" in capsys.readouterr().out
    assert main(["-q", "embed", str(linked), "--store", str(tmp_path / "store")]) == 2
    assert f"items/art.csv:2: column 'image': {message}" in capsys.readouterr().err


def test_mmi_validate_of_a_catalog_file_finds_what_embed_would_skip(linked, tmp_path, capsys):
    message = leaves("media/link.png", linked, tmp_path / "secret.png")
    assert main(["validate", str(linked / "catalog.csv")]) == 1
    out = capsys.readouterr().out
    assert f"catalog.csv row 1 (item 'a1', image): column 'image': {message}" in out
    assert "3 rows, 3 items, 1 problem(s)" in out
    (linked / "media/link.png").unlink()
    (linked / "media/link.png").symlink_to(linked / "media/cat.png")  # now inside the folder
    assert main(["validate", str(linked / "catalog.csv")]) == 0
    assert "0 problem(s)" in capsys.readouterr().out


def test_link_to_etc_passwd_is_refused(tmp_path):
    (tmp_path / "media").mkdir()
    (tmp_path / "media/p.png").symlink_to("/etc/passwd")
    (tmp_path / "items.csv").write_text("item_id,title,image\nx,a title,media/p.png\n")
    cat = Catalog.read(tmp_path / "items.csv")
    with pytest.raises(ValueError, match=r"'media/p.png' leaves .* is /etc/passwd\)"):
        cat.media_path(0, "image")


def test_link_that_stays_inside_the_folder_works(linked, tmp_path):
    (linked / "media/inner.png").symlink_to(linked / "media/cat.png")
    (linked / "catalog.csv").write_text("item_id,title,image\nk,kitten,media/inner.png\n")
    cat = Catalog.read(linked / "catalog.csv")
    assert cat.media_path(0, "image") == Path(os.path.realpath(linked / "media/cat.png"))
    summary = embed_catalog(cat, EmbeddingStore(tmp_path / "store"), "shop",
                            {"image": OpenedPixels()}, show_progress=False)
    assert summary.errors == [] and summary.modalities[0].encoded == 1


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_non_utf8_catalog_is_refused_at_its_line(tmp_path, suffix):
    sep = "\t" if suffix == ".tsv" else ","
    if suffix == ".jsonl":
        lines = [json.dumps({"item_id": f"i{i}", "title": f"item {i}"}).encode() for i in (1, 2, 3)]
    else:
        lines = [f"item_id{sep}title".encode(), f"i1{sep}one".encode(), f"i2{sep}two".encode()]
    lines[2] = lines[2].replace(b"i", b"\xe9", 1)  # Latin-1 e-acute, on line 3
    path = tmp_path / f"items{suffix}"
    path.write_bytes(b"\n".join(lines) + b"\n")
    column = lines[2].index(b"\xe9")  # 0-based in the line
    offset = len(lines[0]) + len(lines[1]) + 2 + column
    with pytest.raises(CatalogError) as info:
        Catalog.read(path)
    assert str(info.value) == (f"{path} line 3: not valid UTF-8 text: byte 0xe9 at byte "
                               f"{column + 1} of the line (byte {offset} of the file); save the "
                               f"file as UTF-8")


def test_a_catalog_is_read_by_the_dataset_reader_and_its_errors_name_the_line(tmp_path):
    """One table reader: a short CSV row is refused at its line, as a dataset's would be."""
    path = tmp_path / "items.csv"
    path.write_text("item_id,title\ni1,one\ni2\n")
    with pytest.raises(CatalogError) as info:
        Catalog.read(path)
    assert str(info.value) == f"{path} line 3: expected 2 fields (as in the header), found 1"
    assert [(p.file, p.line) for p in info.value.problems] == [(str(path), 3)]


@pytest.mark.parametrize("row", ['i2,"two', 'i2,"two" more'])
def test_an_unclosed_or_broken_quote_is_refused_at_its_line_not_read_as_one_long_cell(tmp_path, row):
    """pyarrow reads a quote left open at the end as a cell running to the end of the file:
    the rows after it would silently become part of one title."""
    path = tmp_path / "items.csv"
    path.write_text(f'item_id,title\ni1,"one\nline two"\n{row}\ni3,three\n')
    with pytest.raises(CatalogError) as info:
        Catalog.read(path)
    assert str(info.value).startswith(f"{path} line 4: malformed CSV record: ")
    path.write_text('item_id,title\ni1,"one\nline two"\ni3,three\n')  # a quoted newline is fine
    catalog = Catalog.read(path)
    assert [catalog.item_id(0), catalog.item_id(1)] == ["i1", "i3"] and catalog.text(0) == "one line two"


def test_jsonl_catalog_values_stay_as_written(tmp_path):
    """A year with a null below it stays 2001 (not 2001.0); a byte-order mark is no error."""
    path = tmp_path / "items.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"item_id": "a", "year": 2001}\n{"item_id": "b", "year": null}\n')
    cat = Catalog.read(path)
    assert cat.text(0) == "2001" and cat.text(1) == "" and cat.item_id(0) == "a"


def test_a_10_mb_text_is_cut_and_counted(tmp_path):
    huge = "word " * 2_000_000  # 10 MB
    pd.DataFrame({"item_id": ["big", "small", "big"], "title": [huge, "short", huge]}).to_csv(
        tmp_path / "items.csv", index=False)
    cat = Catalog.read(tmp_path / "items.csv")
    assert len(cat.text(0)) == MAX_TEXT_CHARS and cat.text(0) == huge.strip()[:MAX_TEXT_CHARS]
    assert cat.text(1) == "short"
    assert cat.truncated == [0]  # row 2 repeats the id 'big': skipped, not counted
    summary = embed_catalog(cat, EmbeddingStore(tmp_path / "store"), "shop",
                            {"text": TextLength()}, show_progress=False)
    vectors = EmbeddingStore(tmp_path / "store").load("shop", "text", ids=["big", "small"]).vectors
    assert vectors[:, 0].tolist() == [MAX_TEXT_CHARS, 5]
    assert summary.truncated_texts == 1
    assert f"1 item(s) with text cut to {MAX_TEXT_CHARS:,} characters" in summary.format()


def test_float_list_parquet_column_is_not_text(tmp_path):
    path = tmp_path / "items.parquet"
    table = pa.table({"item_id": ["a", "b"], "title": ["one", "two"],
                      "emb": pa.array([[0.1, float("nan"), 0.3], [0.4, 0.5, 0.6]],
                                      pa.list_(pa.float32()))})
    pq.write_table(table, path)
    for fields in (None, ["title", "emb"]):
        with pytest.raises(CatalogError, match=rf"^{path}: column 'emb' holds lists of numbers "
                                               r"\(vectors\), which are never text"):
            Catalog.read(path, text_fields=fields)
    assert Catalog.read(path, text_fields=["title"]).text(1) == "two"


def test_a_list_of_numbers_in_one_json_cell_is_reported_with_its_nan(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"item_id": "a", "tags": ["red", "blue"]}\n'
                    '{"item_id": "b", "tags": [0.5, NaN]}\n')
    cat = Catalog.read(path)
    assert cat.text(0) == "red, blue"
    with pytest.raises(ValueError, match=r"column 'tags' holds a list of numbers \(\[0.5, nan\]\)"):
        cat.text(1)


def test_dataset_loader_refuses_a_vector_column_declared_as_text(tmp_path):
    root = write_tiny(tmp_path / "ds", "parquet")
    office = pq.read_table(root / "items/office.parquet")
    office = office.set_column(1, "title", pa.array([[1.0, 2.0], [3.0, float("nan")]]))
    pq.write_table(office, root / "items/office.parquet")
    with pytest.raises(DatasetError) as info:
        CrossPlatformDataset.load(root)
    assert [str(p) for p in info.value.problems] == [
        "items/office.parquet: column 'title': a text column holding lists of numbers "
        "(double): vectors are never text; give precomputed vectors as an .npz "
        "file (docs/dataset_format.md, Vectors)"]
