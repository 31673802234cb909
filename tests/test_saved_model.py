"""A saved model is self-sufficient: its folder copied alone to an empty directory scores
exactly as the run that saved it, through ``InterestModel.from_pretrained``, a bundle built
from it (``Bundle.build`` and ``mmi export-index``) and the HTTP service. One type (``Run``)
owns the run folder's layout, and serving imports nothing from ``training/``."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save_file

from fusion import InterestModel
from fusion.files import sha256_file
from multimodal_interest.bundle import Bundle
from multimodal_interest.cli import main
from multimodal_interest.features import ItemFeatures
from multimodal_interest.recommend import Recommender
from multimodal_interest.run import Run
from multimodal_interest.server import create_app
from multimodal_interest.training import TrainConfig, load_run
from multimodal_interest.training.model import set_id_presence
from serving_world import NEW_ITEMS, train_model, write_world

HISTORY = ["a3", "a17", "a42", "a5", "a88"]
N_B = 100 + NEW_ITEMS
MIN_USERS = 2  # items of fewer training users keep an untrusted id row


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A run trained with item ids for items of 2+ users, whose untrusted id rows are then set
    to nonzero values (so a copy that ignored which rows are trusted would score otherwise),
    and its model folder copied alone into an empty directory."""
    root = tmp_path_factory.mktemp("saved-model")
    dataset, store = write_world(root)
    run = Run(train_model(dataset, store, root / "run", epochs=1, item_ids=True, id_min_users=MIN_USERS))
    model = run.load_model()
    assert not model.id_presence("b").all()  # b's new items (no training user): untrusted rows
    for p in ("a", "b"):
        trusted = model.id_presence(p)
        rows = model.fusion.items.ids[p].weight.data
        rows[~trusted] = torch.randn(int((~trusted).sum()), rows.shape[1],
                                     generator=torch.Generator().manual_seed(7))
    run.save_model(model)
    lone = root / "elsewhere" / "my-model"
    lone.parent.mkdir()
    shutil.copytree(run.model_dir, lone)
    ids = {p: dataset.items[p]["item_id"].tolist() for p in ("a", "b")}
    return {"root": root, "dataset": dataset, "store": store, "run": run, "lone": lone,
            "task": dataset.cold_start("a", "b", "s0"), "features": ItemFeatures.from_store(store, ids)}


def logits(model: InterestModel, task, users) -> torch.Tensor:
    """``[U, N_b]`` the model's scores of b's items for ``users``' a histories."""
    h = task.source_histories(users)
    with torch.inference_mode():
        return model.eval().logits(model.encode_users(h.items, h.mask, "a"), "b")


def run_scores(world) -> torch.Tensor:
    """The run's own scores: its model with the id presence training used (from the split
    and the run's id_min_users), not the one the model folder records."""
    run, task = world["run"], world["task"]
    model = run.load_model()
    set_id_presence(model, task, run.config(TrainConfig).id_min_users)
    world["features"].attach(model, task.platforms)
    return logits(model, task, task.test_users)


def test_a_lone_model_folder_scores_bit_identically_to_its_run(world):
    task = world["task"]
    assert sorted(p.name for p in world["lone"].parent.iterdir()) == ["my-model"]
    lone = InterestModel.from_pretrained(world["lone"], encoder_fingerprints=world["features"].fingerprints)
    world["features"].attach(lone, ["a", "b"])  # no task, no split, no run config
    want = run_scores(world)
    assert torch.equal(logits(lone, task, task.test_users), want)
    assert torch.equal(logits(load_run(world["run"].folder, task, world["features"]), task, task.test_users), want)
    for p in ("a", "b"):  # a copy that used every id row would score otherwise
        lone.set_id_presence(p, torch.ones(task.n_items[p], dtype=torch.bool))
    assert not torch.allclose(logits(lone, task, task.test_users), want, atol=1e-3)
    assert lone.info["task"] == {"dataset": "serving-world", "split": "s0", "source": "a", "target": "b"}


def test_a_bundle_of_the_lone_folder_serves_what_the_run_scores(world, tmp_path, capsys):
    dataset, store, task = world["dataset"], world["store"], world["task"]
    from_run = Bundle.build(world["run"].folder, dataset, store)
    from_lone = Bundle.build(world["lone"], dataset, store)  # no task.json, no config.json beside it
    assert from_lone.fingerprint == from_run.fingerprint
    assert from_lone.info["task"] == "a->b" and from_lone.info["split"] == "s0"
    for p in ("a", "b"):
        assert torch.equal(from_lone.model.id_presence(p), from_run.model.id_presence(p))
    assert torch.equal(from_lone.targets["b"].vectors, from_run.targets["b"].vectors)
    assert torch.equal(from_lone.targets["b"].bias, from_run.targets["b"].bias)

    data, out = str(world["root"] / "data"), tmp_path / "bundle"
    assert main(["-q", "export-index", "--model", str(world["lone"]), "--dataset", data,
                 "--store", str(world["root"] / "store"), "--output", str(out)]) == 0
    assert "a->b on serving-world (s0)" in capsys.readouterr().out
    rec = Recommender.load(out, "exact", dataset)
    got = rec.recommend(HISTORY, source="a", platform="b", k=N_B, explain=0)
    ref = Recommender(from_run, "exact").recommend(HISTORY, source="a", platform="b", k=N_B, explain=0)
    assert [(x.item_id, x.score) for x in got.items] == [(x.item_id, x.score) for x in ref.items]

    history = tmp_path / "history.txt"  # mmi recommend straight from the lone folder
    history.write_text("\n".join(HISTORY) + "\n")
    assert main(["-q", "recommend", "--model", str(world["lone"]), "--dataset", data, "--store",
                 str(world["root"] / "store"), "--platform", "b", "--history", str(history), "--source", "a",
                 "-k", str(N_B), "--explain", "0", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)["items"]
    assert [(x["item_id"], x["score"]) for x in printed] == [(x.item_id, x.score) for x in ref.items]

    items = torch.tensor(dataset.item_idx("a", HISTORY))  # and what the run's model scores
    model = world["run"].load_model()
    set_id_presence(model, task, MIN_USERS)
    world["features"].attach(model, task.platforms)
    with torch.inference_mode():
        want = model.eval().logits(model.encode_users(items[None], torch.ones(1, 5, dtype=torch.bool), "a"), "b")[0]
    scores = torch.tensor([x.score for x in got.items], dtype=torch.float32)
    assert torch.allclose(scores, want[dataset.item_idx("b", [x.item_id for x in got.items])], atol=1e-5)

    client = TestClient(create_app(rec))
    body = {"platform": "b", "history": [{"platform": "a", "item_id": x} for x in HISTORY], "k": 20,
            "explain": 0}
    r = client.post("/recommend", json=body)
    assert r.status_code == 200
    served = r.json()["items"]
    assert [x["item_id"] for x in served] == [x.item_id for x in ref.items[:20]]
    assert [x["score"] for x in served] == pytest.approx([x.score for x in ref.items[:20]], abs=1e-5)
    assert client.get("/health").json()["model"] == from_run.fingerprint


def test_a_model_saved_before_id_presence_was_recorded(world, tmp_path):
    """An older version's folder (no id presence): it loads with every id row used and a
    warning, a bundle is refused with how to re-save it, and load_run re-creates the
    presence from the run's settings, so a re-save scores as the run did."""
    run = Run(tmp_path / "old-run")
    shutil.copytree(world["run"].folder, run.folder, ignore=shutil.ignore_patterns("checkpoints"))
    weights = run.model_dir / "fusion" / "model.safetensors"
    tensors = {k: v for k, v in load_file(str(weights)).items() if not k.endswith(".present")}
    save_file(tensors, str(weights))
    manifest = json.loads((run.model_dir / "manifest.json").read_text())
    manifest["sha256"]["fusion/model.safetensors"] = sha256_file(weights)
    (run.model_dir / "manifest.json").write_text(json.dumps(manifest))

    with pytest.warns(UserWarning, match="records no id presence for a, b .*re-save"):
        old = InterestModel.from_pretrained(run.model_dir)
    assert not old.id_presence_recorded and old.id_presence("b") is None
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="did not record which items have a "
                                                                    "trained id embedding.*re-save it"):
        Bundle.build(run.folder, world["dataset"], world["store"])
    task = world["task"]
    with pytest.warns(UserWarning):
        resaved = load_run(run.folder, task, world["features"])
    assert torch.equal(logits(resaved, task, task.test_users), run_scores(world))
    resaved.save_pretrained(tmp_path / "resaved")
    again = InterestModel.from_pretrained(tmp_path / "resaved")
    assert again.id_presence_recorded
    world["features"].attach(again, ["a", "b"])
    assert torch.equal(logits(again, task, task.test_users), run_scores(world))


def test_a_model_saved_with_the_old_id_presence_names_loads_as_it_scored(world, tmp_path):
    """Before one id holder per platform, presence was saved as ``items.id_present_<platform>``:
    such a folder loads (no warning) with the same presence and the same scores."""
    folder = tmp_path / "old-names"
    shutil.copytree(world["lone"], folder)
    weights = folder / "fusion" / "model.safetensors"
    renamed = {k.replace("items.ids.", "items.id_present_").removesuffix(".present") if k.endswith(".present")
               else k: v for k, v in load_file(str(weights)).items()}
    assert {"items.id_present_a", "items.id_present_b"} <= set(renamed)
    save_file(renamed, str(weights))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["sha256"]["fusion/model.safetensors"] = sha256_file(weights)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        old = InterestModel.from_pretrained(folder)
    new = InterestModel.from_pretrained(world["lone"])
    assert old.id_presence_recorded
    for p in ("a", "b"):
        assert torch.equal(old.id_presence(p), new.id_presence(p))
    task = world["task"]
    world["features"].attach(old, ["a", "b"])
    world["features"].attach(new, ["a", "b"])
    assert torch.equal(logits(old, task, task.test_users), logits(new, task, task.test_users))


def test_mmi_train_names_the_flag_where_the_library_names_the_setting(world, tmp_path, capsys):
    """The library says ``kind='transformer'``; ``mmi train`` says the flag that sets it."""
    root = world["root"]
    assert main(["-q", "train", str(root / "data"), "--source", "a", "--target", "b", "--split", "s0",
                 "--store", str(root / "store"), "--output", str(tmp_path / "run"), "--init", str(world["lone"])]) == 2
    err = capsys.readouterr().err
    assert "train the transformer (kind='transformer') (here: --set kind=transformer)" in err, err
    assert not (tmp_path / "run").exists()


def test_the_run_folder_is_written_through_run(world):
    run = world["run"]
    assert run.config(TrainConfig).id_min_users == MIN_USERS
    assert run.task() == {"dataset": "serving-world", "split": "s0", "source": "a", "target": "b"}
    assert [row["epoch"] for row in run.log()] == [1]
    assert run.has_model() and any(run.checkpoints.iterdir())


def test_no_module_but_run_spells_a_run_folder_file_name():
    package = Path(__file__).resolve().parents[1] / "multimodal_interest"
    names = re.compile(r"""["'](config\.json|task\.json|log\.jsonl|checkpoints)["']""")
    spelt = [f"{f.relative_to(package)}: {m.group(0)}" for f in sorted(package.rglob("*.py"))
             if f.name != "run.py" for m in names.finditer(f.read_text())]
    assert spelt == []


def test_serving_imports_nothing_from_training():
    modules = ["multimodal_interest.bundle", "multimodal_interest.server", "multimodal_interest.recommend",
               "multimodal_interest.retrieval", "multimodal_interest.interest", "multimodal_interest.run",
               "multimodal_interest.features", "multimodal_interest.commands.export_index",
               "multimodal_interest.commands.recommend", "multimodal_interest.commands.serve"]
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            "print([m for m in sys.modules if m.startswith('multimodal_interest.training')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
