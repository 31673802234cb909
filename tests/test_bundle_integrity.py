"""Integrity of what serving reads: every file of a bundle and of a saved model is checked
against the sha256 its manifest records, weights and item vectors must be finite, and a
corrupt FAISS index is named. Each refusal names the file (and the tensor)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from fusion.files import sha256_file
from multimodal_interest.bundle import Bundle
from multimodal_interest.cli import main
from multimodal_interest.recommend import Recommender
from serving_world import train_model, write_world

HISTORY = ["a3", "a17", "a42", "a5", "a88"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A trained run and its bundle (flat and HNSW indexes)."""
    root = tmp_path_factory.mktemp("integrity")
    dataset, store = write_world(root)
    run = train_model(dataset, store, root / "run", epochs=1)
    Bundle.build(run, dataset, store).save(root / "bundle", ("flat", "hnsw"))
    return {"root": root, "run": run, "bundle": root / "bundle"}


@pytest.fixture
def bundle(world, tmp_path) -> Path:
    """A copy of the world's bundle, to tamper with."""
    return Path(shutil.copytree(world["bundle"], tmp_path / "bundle"))


@pytest.fixture
def run(world, tmp_path) -> Path:
    """A copy of the world's training run folder, to tamper with."""
    return Path(shutil.copytree(world["run"], tmp_path / "run"))


@pytest.fixture
def no_server(monkeypatch) -> list:
    """`mmi serve` never starts a server here: uvicorn.run only records its call."""
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    return calls


def rewrite(path: Path, change) -> None:
    """Load a safetensors file, ``change(tensors)`` in place, save it again (a valid file)."""
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path)


def rehash(folder: Path, *files: str) -> None:
    """Record ``files``' current sha256 in ``folder``'s manifest, as a tamperer who also edits
    the manifest would: what is behind the hash check is then tested on its own."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for f in files:
        manifest["sha256"][f] = sha256_file(folder / f)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def serve(folder: Path, capsys, index: str = "flat") -> str:
    """`mmi serve`'s exit status must be 2; its one error line (no traceback) is returned."""
    assert main(["-q", "serve", "--model", str(folder), "--index", index]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


# ------------------------------------------------------------------ the bundle's files
def test_the_manifest_records_every_file_of_the_bundle(world):
    folder = world["bundle"]
    manifest = json.loads((folder / "manifest.json").read_text())
    files = {f.relative_to(folder).as_posix() for f in folder.rglob("*") if f.is_file()} - {"manifest.json"}
    assert set(manifest["sha256"]) == files
    assert {"model/manifest.json", "targets/b.safetensors", "features/a.safetensors", "items/b.json",
            "index/b.flat.faiss", "index/b.hnsw.faiss", "model/fusion/model.safetensors"} <= files
    assert all(manifest["sha256"][f] == sha256_file(folder / f) for f in files)


def test_a_bias_changed_in_the_targets_is_refused(bundle, no_server, capsys, tmp_path):
    """+100 on one item's bias would make it every user's top item: refused before use."""
    assert Recommender.load(bundle).recommend(HISTORY, source="a", platform="b", k=1).items[0].item_id != "b7"

    def boost(t):
        t["bias"][7] += 100
    rewrite(bundle / "targets/b.safetensors", boost)
    with pytest.raises(ValueError, match=r"targets/b.safetensors: sha256 \w+ but the bundle's manifest records "
                                         r"\w+: its bytes do not match the bundle's manifest"):
        Bundle.load(bundle)
    assert "targets/b.safetensors: sha256" in serve(bundle, capsys) and no_server == []
    (tmp_path / "history.txt").write_text("\n".join(HISTORY))
    assert main(["-q", "recommend", "--model", str(bundle), "--platform", "b", "--source", "a",
                 "--history", str(tmp_path / "history.txt")]) == 2
    assert "re-export it with `mmi export-index`" in capsys.readouterr().err


def test_an_edited_item_list_is_refused(bundle, no_server, capsys):
    ids = json.loads((bundle / "items/b.json").read_text())
    ids[0] = "injected"
    (bundle / "items/b.json").write_text(json.dumps(ids))
    with pytest.raises(ValueError, match=r"items/b.json: sha256 .* do not match the bundle's manifest"):
        Bundle.load(bundle)
    assert "items/b.json: sha256" in serve(bundle, capsys) and no_server == []


@pytest.mark.parametrize("file, tensor", [("targets/b.safetensors", "bias"), ("targets/b.safetensors", "vectors"),
                                          ("targets/b.safetensors", "scale"), ("features/a.safetensors", "x.text")])
def test_non_finite_vectors_are_refused_naming_file_and_tensor(bundle, file, tensor):
    """Even with the manifest's hash updated: NaN or inf is never served (it ranks nowhere)."""
    def poison(t):
        t[tensor].view(-1)[0] = float("inf")
    rewrite(bundle / file, poison)
    rehash(bundle, file)
    with pytest.raises(ValueError, match=rf"{file}: tensor '{tensor}' has 1 non-finite value\(s\) \(\+inf\)"):
        Bundle.load(bundle)


def test_a_flipped_byte_in_the_bundled_model_is_refused(bundle):
    weights = bundle / "model/targets/b/model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x40
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model/targets/b/model.safetensors: sha256 .* do not match"):
        Bundle.load(bundle)


def test_a_missing_or_unrecorded_or_outside_file_is_refused(bundle):
    (bundle / "features/b.safetensors").rename(bundle / "elsewhere")
    with pytest.raises(FileNotFoundError, match=r"features/b.safetensors: missing \(recorded in"):
        Bundle.load(bundle)
    (bundle / "elsewhere").rename(bundle / "features/b.safetensors")
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["sha256"]["index/b.flat.faiss"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"index/b.flat.faiss: not recorded in .*manifest.json"):
        Bundle.load(bundle)
    manifest["sha256"]["index/b.flat.faiss"] = sha256_file(bundle / "index/b.flat.faiss")
    manifest["sha256"]["../outside.json"] = "0" * 64
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"path '../outside.json' leads out of the bundle"):
        Bundle.load(bundle)


def test_a_file_the_bundle_does_not_read_is_left_alone(bundle):
    (bundle / "NOTES.txt").write_text("deployed on Tuesday\n")
    assert len(Bundle.load(bundle).item_ids["b"]) > 0


def test_a_bundle_of_the_old_format_is_refused_with_the_command_that_remakes_it(bundle, no_server, capsys):
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["sha256"]
    (bundle / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    with pytest.raises(ValueError, match=r"format version 1, whose manifest records no file hashes, so its "
                                         r"files cannot be verified; re-export it with `mmi export-index`"):
        Bundle.load(bundle)
    assert "re-export it with `mmi export-index`" in serve(bundle, capsys)


# ------------------------------------------------------------------ FAISS indexes
@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_a_corrupt_faiss_index_is_named_not_a_traceback(bundle, no_server, capsys, kind):
    path = bundle / f"index/b.{kind}.faiss"
    path.write_bytes(b"XXXX" + path.read_bytes()[4:])
    with pytest.raises(ValueError, match=rf"index/b.{kind}.faiss: sha256 .* do not match"):
        Bundle.load(bundle)
    rehash(bundle, f"index/b.{kind}.faiss")  # written corrupt: the hash agrees, FAISS cannot read it
    err = serve(bundle, capsys, kind)
    assert f"index/b.{kind}.faiss: not a readable FAISS index (Index type 0x58585858" in err, err
    assert no_server == []
    path.write_bytes(path.read_bytes()[:4] + b"")  # cut short
    rehash(bundle, f"index/b.{kind}.faiss")
    assert f"index/b.{kind}.faiss: not a readable FAISS index" in serve(bundle, capsys, kind)


def test_an_index_of_another_kind_is_refused(bundle):
    shutil.copy(bundle / "index/b.flat.faiss", bundle / "index/b.hnsw.faiss")
    rehash(bundle, "index/b.hnsw.faiss")
    with pytest.raises(ValueError, match=r"index/b.hnsw.faiss: a FAISS IndexFlatIP, not a hnsw index"):
        Recommender.load(bundle, "hnsw")


# ------------------------------------------------------------------ a training run's model
def export(run: Path, world, out: Path) -> int:
    root = world["root"]
    return main(["-q", "export-index", "--model", str(run), "--dataset", str(root / "data"),
                 "--store", str(root / "store"), "--output", str(out)])


def test_an_infinite_weight_in_a_run_is_refused_by_export_index(run, world, tmp_path, capsys):
    """The probe's case: +inf in fusion/model.safetensors (a valid file, its hash re-recorded)."""
    poisoned = []

    def poison(t):
        poisoned.append(next(k for k, v in sorted(t.items()) if v.is_floating_point()))
        t[poisoned[0]].view(-1)[0] = float("inf")
    rewrite(run / "model/fusion/model.safetensors", poison)
    rehash(run / "model", "fusion/model.safetensors")
    assert export(run, world, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"fusion/model.safetensors: tensor '{poisoned[0]}' has 1 non-finite value(s) (+inf)" in err, err
    assert not (tmp_path / "out").exists()


def test_a_flipped_byte_in_a_runs_model_is_refused_by_export_index(run, world, tmp_path, capsys):
    weights = run / "model/fusion/model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 1
    weights.write_bytes(bytes(data))
    assert export(run, world, tmp_path / "out") == 2
    assert "fusion/model.safetensors: sha256" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_run_saved_before_hashes_exports_with_a_warning(run, world, tmp_path, capsys):
    manifest = json.loads((run / "model/manifest.json").read_text())
    del manifest["sha256"]
    (run / "model/manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="records no file hashes .* loaded unverified"):
        assert export(run, world, tmp_path / "out") == 0
    assert Recommender.load(tmp_path / "out").recommend(HISTORY, source="a", platform="b", k=3).items



def test_a_non_finite_interest_vector_is_an_error_never_an_empty_answer(world):
    """Behind the file checks: should a model still make NaN (weights changed in memory here),
    the answer is an error, never 200 with no items or a vector of nulls."""
    from fastapi.testclient import TestClient

    from multimodal_interest.server import create_app

    rec = Recommender.load(world["bundle"])
    for weight in rec.model.fusion.parameters():
        weight.data.fill_(float("inf"))
    with pytest.raises(RuntimeError, match="non-finite interest vector from 5 history item"):
        rec.recommend(HISTORY, source="a", platform="b")
    client = TestClient(create_app(rec), raise_server_exceptions=False)
    assert client.post("/users/embed", json={"history": HISTORY, "source": "a"}).status_code == 500
    assert client.post("/recommend", json={"platform": "b", "history": HISTORY, "source": "a"}).status_code == 500
