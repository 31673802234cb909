"""The one loader rule (fusion/files.py), case by case: every file the toolkit reads stays
inside its folder, is bounded in size and depth, has its tensor shapes checked against its
safetensors header before anything of that size is allocated, and anything wrong with it is
one error naming the file (and the field) -- never a library's traceback, never gigabytes.
Each case is one an outside probe found (issue 31, "Hardening round two")."""
from __future__ import annotations

import json
import re
import struct
import time
from pathlib import Path

import pytest

from file_world import copy, rehash, world as build_world
from fusion import InterestModel
from fusion.files import FileRefused
from multimodal_interest.bundle import Bundle
from multimodal_interest.cli import main

HISTORY = ["a3", "a17", "a42", "a5", "a88"]
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory)


def recommend(bundle: Path, tmp_path: Path, capsys) -> str:
    """`mmi recommend` on ``bundle`` must fail with one error line (no traceback): returned."""
    (tmp_path / "history.txt").write_text("\n".join(HISTORY))
    code = main(["-q", "recommend", "--model", str(bundle), "--platform", "b", "--source", "a",
                 "--history", str(tmp_path / "history.txt")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err
    return err


def edit_json(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    doc = change(doc) or doc
    path.write_text(json.dumps(doc))


# ------------------------------------------------------------------ sizes in a config
@pytest.mark.parametrize("n_items", [40_000_000, 10**12])
def test_a_size_in_a_config_is_checked_against_the_weights_before_allocating(world, tmp_path, capsys, n_items):
    """The probe's case: the item count of target b raised in the model's configs (its head
    and its id embedding), hashes recomputed. 40M once took 5.6 GB and 15 s, 10^12 a
    `can't allocate` traceback."""
    bundle = copy(world, "bundle", tmp_path)
    edit_json(bundle / "model/targets/b/config.json", lambda c: c.update(n_items=n_items))
    edit_json(bundle / "model/fusion/config.json", lambda c: c["id_items"].update(b=n_items))
    rehash(bundle)
    start = time.perf_counter()
    err = recommend(bundle, tmp_path, capsys)
    assert time.perf_counter() - start < 10
    assert re.search(rf"model/fusion/model.safetensors: tensor '[\w.]+': shape \[105(, 32)?\] on disk, "
                     rf"but fusion/config.json makes it \[{n_items}(, 32)?\]", err), err


def test_a_model_manifest_without_a_fusion_part_is_named(world, tmp_path):
    run = copy(world, "run", tmp_path)
    edit_json(run / "model/manifest.json", lambda m: m.update(parts=[p for p in m["parts"] if p["role"] != "fusion"]))
    with pytest.raises(FileRefused, match=r"model/manifest.json: parts: 0 fusion parts; a saved model has exactly one"):
        InterestModel.from_pretrained(run / "model")


# ------------------------------------------------------------------ malformed bundle manifests
@pytest.mark.parametrize("change, field", [
    (lambda m: m.update(platforms=list(m["platforms"])), "platforms"),
    (lambda m: m["platforms"]["b"].update(n_items="many"), "platforms.b"),
    (lambda m: m.update(indexes={"flat": 1}), "indexes"),
])
def test_a_bundle_manifest_of_the_wrong_shape_is_named(world, tmp_path, capsys, change, field):
    bundle = copy(world, "bundle", tmp_path)
    edit_json(bundle / "manifest.json", change)
    assert f"manifest.json: {field}: expected " in recommend(bundle, tmp_path, capsys)


def test_a_bundle_manifest_that_is_an_array_is_named(world, tmp_path, capsys):
    bundle = copy(world, "bundle", tmp_path)
    (bundle / "manifest.json").write_text("[1, 2]")
    with pytest.raises(FileRefused, match=r"manifest.json: expected a JSON object, found an array"):
        Bundle.load(bundle)
    assert "bundle" in recommend(bundle, tmp_path, capsys)


# ------------------------------------------------------------------ JSON nested 100,000 deep
@pytest.mark.parametrize("file", ["manifest.json", "items/b.json", "model/manifest.json",
                                  "model/targets/b/config.json"])
def test_json_nested_deep_in_a_bundle_is_named(world, tmp_path, capsys, file):
    bundle = copy(world, "bundle", tmp_path)
    (bundle / file).write_text(DEEP)
    rehash(bundle)
    assert f"{file}: JSON nested 100000 deep, more than the 64 allowed" in recommend(bundle, tmp_path, capsys)


# ------------------------------------------------------------------ safetensors headers
def header_file(path: Path, header: bytes, length: int | None = None, data: bytes = b"") -> None:
    path.write_bytes(struct.pack("<Q", len(header) if length is None else length) + header + data)


@pytest.mark.parametrize("write, why", [
    (lambda p: header_file(p, b"{}", length=2**62), r"safetensors header length 4611686018427387904"),
    (lambda p: header_file(p, json.dumps({"vectors": {"dtype": "F32", "shape": [10**12, 10**6],
                                                       "data_offsets": [0, 16]}}).encode(), data=bytes(16)),
     r"tensor 'vectors': shape \[1000000000000, 1000000\] of F32 needs 4000000000000000000 bytes"),
    (lambda p: p.write_bytes(p.read_bytes()[:-7]), r"tensor 'vectors': data offsets .* not within"),
])
def test_a_malformed_safetensors_file_is_named(world, tmp_path, capsys, write, why):
    bundle = copy(world, "bundle", tmp_path)
    write(bundle / "targets/b.safetensors")
    rehash(bundle)
    with pytest.raises(FileRefused, match=rf"targets/b.safetensors: {why}"):
        Bundle.load(bundle)
    assert "targets/b.safetensors: " in recommend(bundle, tmp_path, capsys)


def test_a_malformed_weights_header_in_a_model_is_named(world, tmp_path):
    run = copy(world, "run", tmp_path)
    header_file(run / "model/fusion/model.safetensors", b"{}", length=2**62)
    rehash(run)
    with pytest.raises(FileRefused, match=r"fusion/model.safetensors: safetensors header length"):
        InterestModel.from_pretrained(run / "model")
