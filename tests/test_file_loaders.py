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
                     rf"but \S*/model/fusion/config.json makes it \[{n_items}(, 32)?\]", err), err


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


# ------------------------------------------------------------------ dataset.yaml
def validate(folder: Path, capsys) -> str:
    """`mmi validate` must refuse ``folder`` (exit 1 or 2) without a traceback: its output."""
    code = main(["-q", "validate", str(folder)])
    out = capsys.readouterr()
    assert code in (1, 2) and "Traceback" not in out.err + out.out, out
    return out.out + out.err


def nested_aliases(levels: int, width: int = 10) -> str:
    """The probe's bomb: mappings nesting ``levels`` levels of ``width`` aliases each."""
    text = "l0: &l0 {x: 1}\n"
    for i in range(1, levels + 1):
        text += f"l{i}: &l{i} {{" + ", ".join(f"k{j}: *l{i - 1}" for j in range(width)) + "}\n"
    return text


@pytest.mark.parametrize("appended, why", [
    (nested_aliases(8), r"dataset.yaml:\d+: its aliases expand to more than 100000 values"),
    ("loop: &loop {self: *loop}\n", r"dataset.yaml:\d+: alias \*loop is used inside its own anchor"),
    ("deep: " + "[" * 100_000 + "]" * 100_000 + "\n", r"dataset.yaml:\d+: nested more than 64 deep"),
    ("name: again\n", r"dataset.yaml:\d+: key 'name' repeated \(first on line 1\)"),
    ("format: " + "9" * 5000 + "\n", r"dataset.yaml:\d+: cannot read this value"),
])
def test_a_hostile_dataset_yaml_is_refused_at_its_line(world, tmp_path, capsys, appended, why):
    """Issue 31, defects 2 and 3 and the weak spots: an alias bomb once drove `mmi validate`
    past 8 GB, a recursive alias and deep nesting gave RecursionError, a repeated key
    silently took the last value, a 5,000-digit number gave an error with no file or line."""
    data = copy(world, "data", tmp_path)
    (data / "dataset.yaml").write_text((data / "dataset.yaml").read_text() + appended)
    start = time.perf_counter()
    assert re.search(why, validate(data, capsys))
    assert time.perf_counter() - start < 10


# ------------------------------------------------------------------ splits
SECRET = "TOP-SECRET-TOKEN-123"


@pytest.mark.parametrize("file", ["s0.csv", "s0.json"])
def test_a_split_file_linked_out_of_the_dataset_is_refused_unread(world, tmp_path, capsys, file):
    """Issue 31, defect 4: splits/cold20_seed900.csv -> /some/secret.csv was read, and its
    content echoed ("user 'TOP-SECRET-TOKEN-123' is not in the dataset")."""
    data = copy(world, "data", tmp_path)
    secret = tmp_path / ("secret" + Path(file).suffix)
    secret.write_text(f"user_id,role,target\n{SECRET},test,b\n" if file.endswith(".csv")
                      else json.dumps({"token": SECRET}))
    (data / "splits" / file).unlink(missing_ok=True)
    (data / "splits" / file).symlink_to(secret)
    out = validate(data, capsys)
    assert f"splits/{file}: path 'splits/{file}' leaves" in out and SECRET not in out, out


def test_split_json_nested_deep_is_named(world, tmp_path, capsys):
    data = copy(world, "data", tmp_path)
    (data / "splits/s0.json").write_text(DEEP)
    assert "splits/s0.json: JSON nested 100000 deep, more than the 64 allowed" in validate(data, capsys)


# ------------------------------------------------------------------ the embedding store
def vector_set(store: Path) -> Path:
    return next(store.glob("b/text/*"))


def test_store_manifest_nested_deep_is_named(world, tmp_path):
    from multimodal_interest.store import EmbeddingStore, StoreError

    store = copy(world, "store", tmp_path)
    (vector_set(store) / "manifest.json").write_text(DEEP)
    with pytest.raises(StoreError, match=r"manifest.json: not a valid manifest \(JSON nested 100000 deep"):
        EmbeddingStore(store).load("b", "text")


def test_store_manifest_with_another_dtype_is_refused(world, tmp_path):
    """A manifest's dtype changed to float64 was ignored; the shards hold float32 only."""
    from multimodal_interest.store import EmbeddingStore, StoreError

    store = copy(world, "store", tmp_path)
    edit_json(vector_set(store) / "manifest.json", lambda m: m.update(dtype="float64"))
    with pytest.raises(StoreError, match=r"manifest.json: dtype: 'float64', but a vector set holds float32"):
        EmbeddingStore(store).load("b", "text")


def test_a_shard_linked_out_of_its_vector_set_is_refused(world, tmp_path):
    """A symlinked shard was followed (its hash checked); now the real path rule applies."""
    from multimodal_interest.store import BadShard, EmbeddingStore

    store = copy(world, "store", tmp_path)
    shard = next(vector_set(store).glob("shard-*.parquet"))
    outside = tmp_path / "elsewhere.parquet"
    shard.rename(outside)
    shard.symlink_to(outside)
    with pytest.raises(BadShard, match=r"a link that leads out of its vector set's folder"):
        EmbeddingStore(store).load("b", "text")


def test_a_training_configuration_goes_through_the_same_yaml_rule(tmp_path):
    from multimodal_interest.training import TrainConfig

    (tmp_path / "train.yaml").write_text("epochs: 3\nlr: 0.01\nepochs: 30\n")
    with pytest.raises(FileRefused, match=r"train.yaml:3: key 'epochs' repeated \(first on line 1\)"):
        TrainConfig.from_file(tmp_path / "train.yaml")


def test_a_jsonl_line_nested_deep_is_named_not_a_crash(tmp_path):
    """pyarrow's JSON reader crashed the process (segmentation fault) on such a line: the
    depth is counted first, and the line-by-line reader names it."""
    from multimodal_interest.data.errors import Problems
    from multimodal_interest.data.tables import read_table

    (tmp_path / "items.jsonl").write_text('{"item_id": "a"}\n{"item_id": ' + DEEP + "}\n")
    problems = Problems()
    assert read_table(tmp_path / "items.jsonl", "items.jsonl", problems) is None
    assert [str(p) for p in problems.items] == ["items.jsonl:2: JSON nested 100001 deep, more than the 64 allowed"]
