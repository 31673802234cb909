"""Checkpoints hold only safetensors and JSON, are verified before use, and a bad or partial
one never costs the last good one: a planted pickle is never opened, a damaged newest
checkpoint falls back to the one before, a half-written one is removed, a full disk keeps
the earlier ones, and an old accelerate-format checkpoint is refused."""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import pathlib
import pickle
import shutil
import textwrap
from pathlib import Path

import pytest
import torch

from multimodal_interest.training import TrainConfig, train
from launch import accelerate_launch
from synthetic import synthetic_task
from test_training import world  # noqa: F401  (the same synthetic world, built once for this module)

SMALL = dict(kind="transformer", dim=32, n_heads=2, n_layers=1, batch_size=64, lr=5e-3, dropout=0.1, min_epoch_steps=1,
             checkpoint_every=3)
CONFIG = TrainConfig(**SMALL, epochs=2, patience=2)
PICKLE_NAMES = ("custom_checkpoint_0.pkl", "random_states_0.pkl")


class Touch:
    """Unpickling this creates ``marker``: what a crafted pickle could do (harmlessly)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    """A finished two-epoch run with checkpoints every 3 steps, and its result (do not change it)."""
    task, features = world
    out = tmp_path_factory.mktemp("trained") / "run"
    return out, train(task, features, CONFIG, out, progress_bar=False)


def steps(run: Path) -> list[Path]:
    """The run's complete checkpoints, oldest first."""
    return sorted((run / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))


def copy_run(trained, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained[0], tmp_path / "run"))


def test_a_planted_pickle_in_a_checkpoint_is_never_unpickled(world, trained, tmp_path):
    task, features = world
    run, marker = copy_run(trained, tmp_path), tmp_path / "unpickled"
    for name in PICKLE_NAMES:  # where accelerate's load_state would unpickle them
        (steps(run)[-1] / name).write_bytes(pickle.dumps(Touch(marker)))
    try:
        longer = train(task, features, TrainConfig(**SMALL, epochs=3, patience=3), run, progress_bar=False)
    finally:
        assert not marker.exists(), "resuming unpickled a file planted in the checkpoint"
    assert longer.epochs_run == 3 and longer.history[:2] == trained[1].history  # it did resume


def test_checkpoint_folders_hold_only_safetensors_and_json(trained):
    run = trained[0]
    assert len(steps(run)) == 2  # the newest and one to fall back to
    assert not list((run / "checkpoints").glob("tmp-*"))
    for folder in steps(run):
        names = sorted(p.name for p in folder.iterdir())
        assert all(n.endswith((".json", ".safetensors")) for n in names), names
        assert not [n for n in names if (folder / n).read_bytes()[:1] == b"\x80"]  # pickle's protocol byte
        manifest = json.loads((folder / "manifest.json").read_text())
        assert sorted(manifest["files"]) == [n for n in names if n != "manifest.json"]
        assert {"weights.safetensors", "optimizer.safetensors", "rng-r0.json", "trained_with.json"} <= set(names)


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(world, trained, tmp_path, caplog):
    task, features = world
    run = copy_run(trained, tmp_path)
    previous, newest = steps(run)
    weights = newest / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # one byte of a weight
    weights.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        resumed = train(task, features, CONFIG, run, progress_bar=False)
    said = caplog.text
    assert str(weights) in said and "sha256" in said and f"falling back to {previous}" in said
    assert (run / "checkpoints" / f"rejected-{newest.name}").is_dir()  # kept aside, not read again
    # resumed from the earlier checkpoint, the run ends exactly as it did uninterrupted
    assert resumed.history == [{**h, "seconds": r["seconds"]} for h, r in zip(trained[1].history, resumed.history)]
    for (name, a), b in zip(trained[1].model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_with_no_good_checkpoint_left_the_error_names_the_file_and_how_to_start_afresh(world, trained, tmp_path):
    task, features = world
    run = copy_run(trained, tmp_path)
    for folder in steps(run):
        (folder / "optimizer.json").write_text("{}")
    with pytest.raises(ValueError, match=r"no checkpoint .* can be resumed: .*step-\d+/optimizer\.json: altered "
                                         r"or damaged.*resume=False"):
        train(task, features, CONFIG, run, progress_bar=False)
    assert len(steps(run)) == 2  # nothing moved or deleted: the user decides
    afresh = train(task, features, TrainConfig(**SMALL, epochs=1, patience=1), run, resume=False,
                   progress_bar=False)
    assert afresh.epochs_run == 1


def test_rng_state_that_is_not_one_is_refused_even_with_a_matching_hash(world, trained, tmp_path, caplog):
    task, features = world
    run = copy_run(trained, tmp_path)
    newest = steps(run)[-1]
    rng = json.loads((newest / "rng-r0.json").read_text())
    rng["numpy"]["keys"] = rng["numpy"]["keys"][:10]  # well-formed JSON, not an RNG state
    rewrite(newest, "rng-r0.json", json.dumps(rng).encode())
    with caplog.at_level(logging.WARNING):
        train(task, features, CONFIG, run, progress_bar=False)
    assert f"{newest / 'rng-r0.json'}: not a valid RNG state" in caplog.text


def rewrite(folder: Path, name: str, data: bytes) -> None:
    """Replace a checkpoint file and its manifest entry, as a writer with a bug would."""
    (folder / name).write_bytes(data)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_a_partly_written_checkpoint_is_removed_at_start(world, trained, tmp_path, caplog):
    task, features = world
    run = copy_run(trained, tmp_path)
    partial = run / "checkpoints" / "tmp-99"
    partial.mkdir()
    (partial / "weights.safetensors").write_bytes(b"\x00" * 10)  # killed mid-write
    with caplog.at_level(logging.WARNING):
        again = train(task, features, CONFIG, run, progress_bar=False)
    assert not partial.exists() and f"{partial}: removing a partly written checkpoint" in caplog.text
    assert again.history == trained[1].history  # the finished run resumed, nothing retrained


def test_a_full_disk_while_checkpointing_keeps_the_earlier_checkpoints(world, trained, tmp_path, monkeypatch):
    import multimodal_interest.training.checkpoint as checkpoint

    task, features = world
    run = copy_run(trained, tmp_path)
    before = {p.name: (p / "manifest.json").read_bytes() for p in steps(run)}

    def disk_full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoint, "_write", disk_full)
    with pytest.raises(OSError, match=r"tmp-\d+: the checkpoint could not be written .*No space left.*kept step-"):
        train(task, features, TrainConfig(**SMALL, epochs=3, patience=3), run, progress_bar=False)
    assert not list((run / "checkpoints").glob("tmp-*"))
    assert {p.name: (p / "manifest.json").read_bytes() for p in steps(run)} == before


def test_an_old_accelerate_format_checkpoint_is_refused_not_unpickled(world, trained, tmp_path):
    from multimodal_interest.commands.demo import _drop_stale_run

    task, features = world
    run, marker = copy_run(trained, tmp_path), tmp_path / "unpickled"
    old = steps(run)[-1]
    for p in old.iterdir():
        if p.name != "trained_with.json":
            p.unlink()
    for name in (*PICKLE_NAMES, "model.safetensors"):
        (old / name).write_bytes(pickle.dumps(Touch(marker)))
    with pytest.raises(ValueError, match=r"accelerate's pickle format.*not loaded.*resume=False"):
        train(task, features, CONFIG, run, progress_bar=False)
    assert not marker.exists()
    said = []
    _drop_stale_run(run, task, features, CONFIG, said.append)  # the demo's own run: trained afresh
    assert not run.exists() and "training afresh" in said[0] and not marker.exists()


SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    sys.path.insert(0, {tests!r})
    from synthetic import synthetic_task
    from multimodal_interest.training import TrainConfig, train
    torch.set_num_threads(1)
    task, features = synthetic_task(n_users=600, latent=4)
    config = TrainConfig(kind="transformer", dim=32, n_heads=2, n_layers=1, batch_size=96, lr=5e-3, dropout=0.1,
                         min_epoch_steps=1, checkpoint_every=3, grad_accum=2, epochs=int(sys.argv[2]),
                         patience=int(sys.argv[2]))
    result = train(task, features, config, sys.argv[1], progress_bar=False)
    from accelerate import PartialState
    if PartialState().is_main_process:
        json.dump(result.history, open(sys.argv[1] + "/history.json", "w"))
""")


def test_two_processes_save_their_own_rng_states_and_gradients_and_resume(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    accelerate_launch(str(script), str(tmp_path / "run"), "1")
    names = {p.name for p in steps(tmp_path / "run")[-1].iterdir()}
    assert {"rng-r0.json", "rng-r1.json"} <= names  # each process's own RNG states
    assert {"grads-r0.safetensors", "grads-r1.safetensors"} <= names  # saved halfway through an accumulation
    first = json.loads((tmp_path / "run" / "history.json").read_text())
    accelerate_launch(str(script), str(tmp_path / "run"), "2")  # resumes, one epoch more
    longer = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(longer) == 2 and longer[0] == first[0]
    accelerate_launch(str(script), str(tmp_path / "full"), "2")  # the same two epochs uninterrupted
    full = json.loads((tmp_path / "full" / "history.json").read_text())
    assert [{**r, "seconds": 0} for r in longer] == [{**r, "seconds": 0} for r in full]


def test_resume_in_the_middle_of_gradient_accumulation_gives_the_same_model(world, tmp_path, monkeypatch):
    """Checkpoints every 3 steps, an optimizer step every 2: the checkpoint of step 3 is taken
    halfway through an accumulation, so accelerate's step counter and the gradients
    accumulated so far must come back with it."""
    from multimodal_interest.training.objective import Objective

    task, features = world
    config = TrainConfig(**SMALL, epochs=1, patience=1, grad_accum=2)
    full = train(task, features, config, tmp_path / "full", progress_bar=False)
    forward, calls = Objective.forward, []

    def dies_at_step_5(self, batch):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return forward(self, batch)

    monkeypatch.setattr(Objective, "forward", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train(task, features, config, tmp_path / "resumed", progress_bar=False)
    halfway = steps(tmp_path / "resumed")[-1]
    assert json.loads((halfway / "accelerator.json").read_text())["step"] == 3
    assert (halfway / "grads-r0.safetensors").is_file()  # the accumulated micro-batch, kept
    monkeypatch.setattr(Objective, "forward", forward)
    resumed = train(task, features, config, tmp_path / "resumed", progress_bar=False)
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_an_fp16_grad_scaler_state_is_saved_as_json_and_restored(tmp_path):
    """accelerate uses a GradScaler only for fp16 on a GPU; its state goes through JSON."""
    from types import SimpleNamespace

    from multimodal_interest.training.checkpoint import read_checkpoint, restore, save_checkpoint

    def accelerator(scaler):
        return SimpleNamespace(num_processes=1, process_index=0, is_main_process=True, step=5, scaler=scaler,
                               sync_gradients=True,
                               get_state_dict=lambda m: m.state_dict(), unwrap_model=lambda m: m)

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=7)
    folder = save_checkpoint(accelerator(scaler), tmp_path, 5, model, optimizer, {"epoch": 0}, {})
    assert json.loads((folder / "accelerator.json").read_text())["scaler"]["scale"] == 1024.0
    again = accelerator(torch.amp.GradScaler("cpu"))
    restore(again, read_checkpoint(folder, 0), model, optimizer)
    assert again.scaler.state_dict() == scaler.state_dict() and again.step == 5
    with pytest.raises(ValueError, match=r"accelerator\.json: has a GradScaler state, and this run does not use"):
        restore(accelerator(None), read_checkpoint(folder, 0), model, optimizer)
