"""Training with accelerate: it learns, it resumes exactly (and only what it may), a run scores
only its own task, two processes agree with one."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from multimodal_interest.data.task import ColdStartTask
from multimodal_interest.parallel import accelerator_for
from multimodal_interest.training import (ItemFeatures, ModelScorer, TrainConfig, add_platform, attach_features,
                                         build_model, load_run, train, valid_ndcg10)
from multimodal_interest.training.features import parse_item_spaces, read_item_space
from multimodal_interest.training.objective import Objective, multi_positive_softmax_loss
from launch import accelerate_launch
from synthetic import synthetic_task

SMALL = dict(kind="transformer", dim=32, n_heads=2, n_layers=1, batch_size=64, lr=5e-3, dropout=0.0, min_epoch_steps=1)


@pytest.fixture(scope="module")
def world():
    return synthetic_task(n_users=600, latent=4)


@pytest.fixture(scope="module")
def finished_run(world, tmp_path_factory):
    """A run folder of one epoch on the world's a -> b task (tests must not change it)."""
    task, features = world
    out = tmp_path_factory.mktemp("finished") / "run"
    train(task, features, TrainConfig(**SMALL, epochs=1, patience=1), out, progress_bar=False)
    return out


def test_multi_positive_loss_is_mean_cross_entropy_over_positives():
    logits = torch.randn(2, 5)
    rows, cols = torch.tensor([0, 0, 1]), torch.tensor([1, 3, 4])
    ce = torch.nn.functional.cross_entropy
    expected = ((ce(logits[:1], torch.tensor([1])) + ce(logits[:1], torch.tensor([3]))) / 2
                + ce(logits[1:], torch.tensor([4]))) / 2
    assert torch.allclose(multi_positive_softmax_loss(logits, rows, cols), expected)


def test_sampled_softmax_scores_positives_and_negatives_only(world):
    task, features = world
    model = build_model(task, features, TrainConfig(**SMALL))
    batch = {"src_items": torch.tensor([[0, 1]]), "src_mask": torch.ones(1, 2, dtype=torch.bool),
             "pos_rows": torch.tensor([0, 0]), "pos_items": torch.tensor([7, 3]), "within_platform": None}
    full = Objective(model, "a", "b", 0.0, None)(batch)["loss"]
    torch.manual_seed(0)
    sampled = Objective(model, "a", "b", 0.0, 5)(batch)["loss"]
    assert torch.isfinite(sampled) and sampled < full  # fewer competitors, smaller loss


def test_training_beats_the_untrained_model(world, tmp_path):
    task, features = world
    config = TrainConfig(**SMALL, epochs=6, patience=6, within_weight=0.5)
    before = valid_ndcg10(build_model(task, features, config), task, task.valid_users)
    result = train(task, features, config, tmp_path, progress_bar=False)
    assert result.best_valid_ndcg10 > before + 0.1
    assert valid_ndcg10(result.model, task, task.valid_users) == pytest.approx(result.best_valid_ndcg10)
    log = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, len(log) + 1))
    assert max(r["valid_ndcg10"] for r in log) == pytest.approx(result.best_valid_ndcg10)
    assert json.loads((tmp_path / "config.json").read_text())["epochs"] == 6


def test_bf16_mixed_precision_learns_keeps_float32_weights_and_one_process_can_switch_back(world, tmp_path):
    task, features = world
    runs = {}
    for precision in ("bf16", "no"):  # one process, one precision after another (as in a notebook)
        config = TrainConfig(**SMALL, epochs=6, patience=6, mixed_precision=precision)
        runs[precision] = train(task, features, config, tmp_path / precision, progress_bar=False)
    before = valid_ndcg10(build_model(task, features, config), task, task.valid_users)
    assert runs["bf16"].best_valid_ndcg10 > before + 0.1
    assert runs["bf16"].best_valid_ndcg10 == pytest.approx(runs["no"].best_valid_ndcg10, abs=0.05)
    assert runs["bf16"].best_valid_ndcg10 != runs["no"].best_valid_ndcg10  # bf16 did run in bf16
    assert {p.dtype for p in load_run(tmp_path / "bf16", task, features).parameters()} == {torch.float32}


def test_a_launched_run_asked_for_another_precision_is_a_clear_error(monkeypatch):
    from accelerate.state import AcceleratorState, PartialState

    # the state a process of `accelerate launch --num_processes 2` holds after a bf16 run
    monkeypatch.setattr(AcceleratorState, "_shared_state", {"_mixed_precision": "bf16"})
    monkeypatch.setattr(PartialState, "_shared_state", {"num_processes": 2})
    with pytest.raises(ValueError, match="mixed_precision='no'.*'bf16'.*within a launch"):
        accelerator_for("no")


def test_resume_mid_epoch_gives_the_same_model(world, tmp_path, monkeypatch):
    task, features = world
    config = TrainConfig(**{**SMALL, "dropout": 0.1}, epochs=2, patience=2, checkpoint_every=3)
    full = train(task, features, config, tmp_path / "full", progress_bar=False)

    calls = {"n": 0}
    forward = Objective.forward

    def dies_at_step_8(self, batch):
        calls["n"] += 1
        if calls["n"] == 8:  # epoch 2, after the checkpoint of step 6
            raise KeyboardInterrupt
        return forward(self, batch)

    monkeypatch.setattr(Objective, "forward", dies_at_step_8)
    with pytest.raises(KeyboardInterrupt):
        train(task, features, config, tmp_path / "resumed", progress_bar=False)
    monkeypatch.setattr(Objective, "forward", forward)
    resumed = train(task, features, config, tmp_path / "resumed", progress_bar=False)
    assert resumed.history == [{**h, "seconds": r["seconds"]} for h, r in zip(full.history, resumed.history)]
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    sys.path.insert(0, {tests!r})
    from synthetic import synthetic_task
    from multimodal_interest.training import TrainConfig, train
    torch.set_num_threads(1)
    task, features = synthetic_task(n_users=600, latent=4)
    config = TrainConfig(kind="transformer", dim=32, n_heads=2, n_layers=1, batch_size=96, lr=5e-3, dropout=0.0,
                         modality_dropout=0.0, within_weight=0.0, epochs=2, patience=2, min_epoch_steps=1)
    result = train(task, features, config, sys.argv[1], progress_bar=False)
    from accelerate import PartialState
    state = PartialState()
    print(f"process {{state.process_index}} of {{state.num_processes}}", flush=True)
    if state.is_main_process:
        torch.save(result.model.state_dict(), sys.argv[1] + "/final.pt")
        json.dump(result.history, open(sys.argv[1] + "/history.json", "w"))
""")


def test_two_processes_match_one(tmp_path):
    """480 overlapping users in global batches of 96: each process takes half of every batch,
    so with no dropout the two runs see the same batches and must agree."""
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(script), str(tmp_path / "one")], env=env, check=True,
                   capture_output=True, timeout=600)
    out = accelerate_launch(str(script), str(tmp_path / "two"))
    assert out.stdout.count("process 1 of 2") == 1  # two processes really ran
    one = torch.load(tmp_path / "one" / "final.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "final.pt", weights_only=True)
    for name in one:  # same global batches, gradients averaged by DDP: equal up to float error
        a, b = one[name], two[name]
        if name.endswith("attn.qkv.bias"):  # the key third has no true gradient (softmax ignores
            d = len(a) // 3                  # it): Adam turns its rounding noise into lr-sized steps
            assert torch.allclose(a[d:2 * d], b[d:2 * d], atol=1e-3, rtol=1e-3), f"{name} (keys)"
            a, b = torch.cat([a[:d], a[2 * d:]]), torch.cat([b[:d], b[2 * d:]])
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-3), name
    h1 = json.loads((tmp_path / "one" / "history.json").read_text())
    h2 = json.loads((tmp_path / "two" / "history.json").read_text())
    assert [r["valid_ndcg10"] for r in h1] == pytest.approx([r["valid_ndcg10"] for r in h2], abs=1e-3)


VALIDATE_AND_TRAIN = textwrap.dedent("""
    import json, sys
    from functools import partial
    import torch
    sys.path.insert(0, {tests!r})
    from synthetic import synthetic_task
    from multimodal_interest.parallel import accelerator_for
    from multimodal_interest.training import TrainConfig, build_model, train, valid_ndcg10
    from multimodal_interest.training.scoring import UserNdcg10
    from multimodal_interest.training.trainer import validate, validation_loader
    torch.set_num_threads(1)
    task, features = synthetic_task(n_users=600, latent=4)
    config = TrainConfig(kind="transformer", dim=32, n_heads=2, n_layers=1, batch_size=64, lr=5e-3, dropout=0.1,
                         min_epoch_steps=1, epochs=4, patience=4)
    torch.manual_seed(0)
    model = build_model(task, features, config)  # the same weights in every process
    acc = accelerator_for("no")
    out = {{"processes": acc.num_processes}}
    for n, size in ((60, 7), (5, 7)):  # 60 = 4 rounds of 2 x 7 users and 4 more; 5 < one batch
        users = task.valid_users[:n]
        loader = acc.prepare(validation_loader(users, size))
        values = validate(acc, loader, partial(UserNdcg10, batch_size=size), model, task)
        out[f"{{n}}/{{size}}"] = {{"values": values.tolist(), "mean": float(values.mean()),
                                 "one_process": valid_ndcg10(model, task, users, size)}}
    out["untrained"] = valid_ndcg10(model, task, task.valid_users)
    result = train(task, features, config, sys.argv[1], progress_bar=False)
    out["best"] = result.best_valid_ndcg10
    out["best_values"] = UserNdcg10(result.model, task)(task.valid_users).tolist()
    if acc.is_main_process:
        json.dump(out, open(sys.argv[1] + "/result.json", "w"))
""")


@pytest.fixture(scope="module")
def one_and_two_processes(tmp_path_factory):
    """VALIDATE_AND_TRAIN's results in one process and launched in two."""
    tmp = tmp_path_factory.mktemp("one-and-two")
    script = tmp / "run.py"
    script.write_text(VALIDATE_AND_TRAIN.format(tests=str(Path(__file__).parent)))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(script), str(tmp / "one")], env=env, check=True, capture_output=True,
                   timeout=600)
    accelerate_launch(str(script), str(tmp / "two"))
    return [json.loads((tmp / run / "result.json").read_text()) for run in ("one", "two")]


def test_two_processes_validating_the_same_weights_give_the_one_process_ndcg10(one_and_two_processes):
    """Each process scores its share of the validation users, accelerate padding the last round
    with repeated users; gather_for_metrics drops the repeats, so every user counts once."""
    one, two = one_and_two_processes
    assert (one["processes"], two["processes"]) == (1, 2)
    for n in ("60/7", "5/7"):
        assert len(two[n]["values"]) == len(one[n]["values"]) == int(n.split("/")[0])
        assert two[n]["values"] == pytest.approx(one[n]["values"], abs=1e-6)  # same users, same order
        assert two[n]["mean"] == pytest.approx(two[n]["one_process"], abs=1e-6)
        assert one[n]["mean"] == one[n]["one_process"]


def test_two_processes_train_as_well_as_one(one_and_two_processes):
    """Dropout masks differ between one process and two (each process draws its own for its
    half of the batch), so the two runs differ by training noise. The tolerance is two standard
    errors of the one-process model's mean validation NDCG@10 over its 60 users: a gap below it
    cannot be told from which validation users happened to be drawn."""
    one, two = one_and_two_processes
    values = np.asarray(one["best_values"])
    assert values.mean() == pytest.approx(one["best"])
    tolerance = 2 * values.std(ddof=1) / np.sqrt(len(values))
    assert abs(two["best"] - one["best"]) <= tolerance
    assert two["best"] > two["untrained"] + 0.1  # and it did learn


def test_a_new_platform_is_scored_zero_shot_then_only_its_head_is_fine_tuned(tmp_path):
    world = dict(n_users=600, latent=4, n_items=(120, 100, 80), platforms=("a", "b", "c"))
    task_ab, features = synthetic_task(**world)
    model = train(task_ab, features, TrainConfig(**SMALL, epochs=2, patience=2), tmp_path / "ab",
                  progress_bar=False).model
    task_ac, _ = synthetic_task(**world, target="c")
    with pytest.raises(ValueError, match="no target head for platform 'c'"):
        ModelScorer(model, task_ac)
    add_platform(model, task_ac, features)  # zero-shot: from c's catalog alone, no training
    zero_shot = valid_ndcg10(model, task_ac, task_ac.valid_users)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tuned = train(task_ac, features, TrainConfig(**SMALL, epochs=4, patience=4, trainable="target-head"),
                  tmp_path / "ac", progress_bar=False, init=model).model
    assert valid_ndcg10(tuned, task_ac, task_ac.valid_users) > zero_shot + 0.05
    changed = {k for k, v in tuned.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.split(".")[1] == "c" for k in changed), changed
    attach_features(tuned, task_ab, features)  # item features are data: attached per task
    assert ModelScorer(tuned, task_ab)(task_ab.test_users[:4]).shape == (4, 100)  # b still served


def test_resume_refuses_a_checkpoint_trained_otherwise_and_names_what_differs(world, finished_run):
    task, features = world
    config = TrainConfig(**SMALL, epochs=1, patience=1)
    with pytest.raises(ValueError, match=r"lr 0\.005 \(now 0\.001\).*new output folder.*resume=False"):
        train(task, features, dataclasses.replace(config, lr=1e-3), finished_run, progress_bar=False)
    assert json.loads((finished_run / "config.json").read_text())["lr"] == 5e-3  # still its model's
    other_encoder = dataclasses.replace(features, fingerprints={"text": "f" * 16})
    with pytest.raises(ValueError, match=r"text encoder '0{16}' \(now 'f{16}'\)"):
        train(task, other_encoder, config, finished_run, progress_bar=False)
    other_direction, _ = synthetic_task(n_users=600, latent=4, source="b", target="a")
    with pytest.raises(ValueError, match=r"source 'a' \(now 'b'\); target 'b' \(now 'a'\)"):
        train(other_direction, features, config, finished_run, progress_bar=False)


def test_a_finished_run_resumes_to_train_longer_and_no_resume_starts_afresh(world, finished_run, tmp_path,
                                                                          monkeypatch):
    task, features = world
    run = shutil.copytree(finished_run, tmp_path / "run")
    first = json.loads((run / "log.jsonl").read_text().splitlines()[0])
    sizes, init = [], ModelScorer.__init__

    def recording_init(self, *args):
        init(self, *args)
        sizes.append(self.batch_size)

    monkeypatch.setattr(ModelScorer, "__init__", recording_init)
    longer = train(task, features, TrainConfig(**SMALL, epochs=2, patience=2, eval_batch_size=7), run,
                   progress_bar=False)
    assert longer.epochs_run == 2 and longer.history[0] == first  # epoch 1 resumed, not redone
    assert sizes == [7]  # validation scored eval_batch_size users at a time
    afresh = train(task, features, TrainConfig(**{**SMALL, "lr": 1e-3}, epochs=1, patience=1), run,
                   resume=False, progress_bar=False)
    assert afresh.epochs_run == 1 and json.loads((run / "config.json").read_text())["lr"] == 1e-3


def test_a_run_scores_only_the_task_it_was_trained_on(world, finished_run):
    task, features = world
    model = load_run(finished_run, task, features)
    assert ModelScorer(model, task)(task.test_users[:3]).shape == (3, 100)
    other_direction, _ = synthetic_task(n_users=600, latent=4, source="b", target="a")
    with pytest.raises(ValueError, match=r"source 'a' \(now 'b'\); target 'b' \(now 'a'\).*--both"):
        load_run(finished_run, other_direction, features)
    with pytest.raises(ValueError, match=r"split 's0' \(now 'other'\)"):
        load_run(finished_run, dataclasses.replace(task, split="other"), features)


@pytest.mark.filterwarnings("ignore:.*no supported trackers")  # accelerate's own, when it has none
def test_log_with_a_tracker_that_is_not_installed_is_an_error(world, tmp_path, monkeypatch):
    import accelerate.tracking

    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [])  # as without tensorboard
    task, features = world
    with pytest.raises(ValueError, match=r"log_with='tensorboard'.*pip install tensorboard"):
        train(task, features, TrainConfig(**SMALL, log_with="tensorboard"), tmp_path / "run", progress_bar=False)
    assert not (tmp_path / "run").exists()


def within_platform_task(n_users: int = 600, n_clusters: int = 20, per_cluster: int = 10,
                         seed: int = 0) -> tuple[ColdStartTask, ItemFeatures]:
    """One platform (the shape of ``CrossPlatformDataset.within_platform``): each user likes
    one cluster of items and has 9 of its items, the first 7 their history; valid and test
    users' last 2 are hidden. Item features are noise: only what items are bought together
    can teach the model, so an untrained one ranks at random."""
    rng = np.random.default_rng(seed)
    n = n_clusters * per_cluster
    rows = [(u, "a", int(i), float(t), 1.0) for u in range(n_users)
            for t, i in enumerate(rng.integers(n_clusters) * per_cluster + rng.permutation(per_cluster)[:9])]
    df = pd.DataFrame(rows, columns=["user_idx", "platform", "item_idx", "timestamp", "weight"])
    valid, test = np.arange(n_users - 120, n_users - 60), np.arange(n_users - 60, n_users)
    held = (df["timestamp"] >= 7) & (df["user_idx"] >= n_users - 120)
    task = ColdStartTask("synthetic", "within", "a", "a", {"a": n}, n_users, df[~held].reset_index(drop=True),
                         df[held].reset_index(drop=True), valid, test)
    noise = torch.randn(n, 16, generator=torch.Generator().manual_seed(seed))
    return task, ItemFeatures({"a": {"text": noise}}, {"a": {"text": torch.ones(n, dtype=torch.bool)}},
                              {"text": "0" * 16})


def test_within_one_platform_the_model_learns_from_each_history_itself(tmp_path):
    """Source = target: the cross objective asks each training history to rank its own items
    first (a reconstruction, as the evaluation removes a user's history items from the
    ranking), which teaches what goes with what."""
    task, features = within_platform_task()
    config = TrainConfig(**SMALL, epochs=4, patience=4, item_ids=True)
    before = valid_ndcg10(build_model(task, features, config), task, task.valid_users)
    result = train(task, features, config, tmp_path, progress_bar=False)
    assert result.best_valid_ndcg10 > before + 0.3


def _own_vectors_file(path: Path, vectors: torch.Tensor, ids: list[str], order: np.ndarray) -> Path:
    """A platform's own item vectors as its recommender might export them: rows in any order,
    ids of items the catalog no longer has among them."""
    frame = pd.DataFrame({"item_id": [ids[i] for i in order] + ["retired-item"],
                          "vector": [vectors[i].tolist() for i in order] + [[0.0] * vectors.shape[1]]})
    frame.to_parquet(path)
    return path


def test_a_platforms_own_item_vectors_from_a_file_are_its_item_space(world, finished_run, tmp_path):
    """Target b brings 24-wide vectors of its own (from a file of id -> vector, any order);
    the adapter learns to map interests into that space; the run reloads only with the file."""
    task, features = world
    ids = [f"b{i}" for i in range(task.n_items["b"])]
    own = features.vectors["b"]["text"] @ torch.randn(16, 24, generator=torch.Generator().manual_seed(1))
    order = np.random.default_rng(0).permutation(len(ids))
    path = _own_vectors_file(tmp_path / "own.parquet", own, ids, order)
    vectors, fingerprint = read_item_space(path, ids, "b")
    assert torch.allclose(vectors, own)  # back in item order; the retired item left out
    with_own = ItemFeatures(features.vectors, features.present, dict(features.fingerprints))
    with_own.add_item_space("b", vectors, fingerprint)

    config = TrainConfig(**SMALL, epochs=4, patience=4, within_weight=0.0)
    torch.manual_seed(0)
    untrained = build_model(task, with_own, config)
    assert untrained.config.targets["b"].space == "external" and untrained.config.targets["b"].external_dim == 24
    before = valid_ndcg10(untrained, task, task.valid_users)
    result = train(task, with_own, config, tmp_path / "run", progress_bar=False)
    assert result.best_valid_ndcg10 > before + 0.1

    users = task.test_users[:8]
    loaded = load_run(tmp_path / "run", task, with_own)
    assert torch.equal(ModelScorer(loaded, task)(users), ModelScorer(result.model, task)(users))
    with pytest.raises(ValueError, match=r"own item space: give its item vectors \(`--item-space b=FILE`"):
        load_run(tmp_path / "run", task, features)
    other = ItemFeatures(features.vectors, features.present, dict(features.fingerprints))
    changed = _own_vectors_file(tmp_path / "changed.parquet", own + 1.0, ids, order)
    other.add_item_space("b", *read_item_space(changed, ids, "b"))
    with pytest.raises(ValueError, match="item-space:b: model"):
        load_run(tmp_path / "run", task, other)
    with pytest.raises(ValueError, match="given for 'b', but the model scores 'b' from item content"):
        load_run(finished_run, task, with_own)  # a content model is not given vectors it ignores


def test_bad_item_vector_files_are_errors_naming_file_and_items(tmp_path):
    ids = ["x", "y", "z"]
    np.savez(tmp_path / "some.npz", item_id=np.array(["x", "z"]), vectors=np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"platform 'b' \(.*some.npz\): 1 of the platform's 3 items "
                                         r"have no vector in the file \(first: 'y'\)"):
        read_item_space(tmp_path / "some.npz", ids, "b")
    nan = np.ones((3, 3), np.float32)
    nan[2, 1] = np.nan
    np.savez(tmp_path / "nan.npz", item_id=np.array(ids), vectors=nan)
    with pytest.raises(ValueError, match=r"1 of the platform's 3 items have NaN .* \(first: 'z'\)"):
        read_item_space(tmp_path / "nan.npz", ids, "b")
    np.save(tmp_path / "v.npy", np.ones((3, 2), np.float32))
    (tmp_path / "ids.txt").write_text("x\ny\nx\n")
    with pytest.raises(ValueError, match=r"ids.txt: item id 'x' appears twice"):
        read_item_space(f"{tmp_path / 'v.npy'}:{tmp_path / 'ids.txt'}", ids, "b")
    (tmp_path / "ids.txt").write_text("x\ny\nz\n")
    got, _ = read_item_space(f"{tmp_path / 'v.npy'}:{tmp_path / 'ids.txt'}", ids, "b")
    assert got.shape == (3, 2)
    with pytest.raises(ValueError, match="needs ids="):
        read_item_space(tmp_path / "v.npy", ids, "b")
    with pytest.raises(ValueError, match="expected PLATFORM=FILE"):
        parse_item_spaces(["office"])


def test_a_short_run_on_the_demo_dataset_beats_the_untrained_model(shared_data, tmp_path):
    """The README's demo split (movielens-100k comedy -> drama, real ratings), item ids only:
    five short epochs lift validation NDCG@10 far above the untrained model's."""
    from multimodal_interest.data.dataset import CrossPlatformDataset
    from multimodal_interest.data.registry import get_dataset

    dataset = CrossPlatformDataset.load(get_dataset("movielens-100k", root=tmp_path, from_dir=shared_data))
    task = dataset.cold_start("comedy", "drama", "cold20_seed900")
    config = TrainConfig(kind="transformer", dim=32, n_heads=2, epochs=5, patience=5, min_epoch_steps=1, batch_size=128,
                         lr=3e-3, item_ids=True)
    torch.manual_seed(0)
    before = valid_ndcg10(build_model(task, ItemFeatures(), config), task, task.valid_users)
    result = train(task, ItemFeatures(), config, tmp_path / "run", progress_bar=False)
    assert result.best_valid_ndcg10 > before + 0.15


def test_the_demo_trains_afresh_over_its_own_run_trained_otherwise(world, finished_run, tmp_path):
    from multimodal_interest.commands.demo import _drop_stale_run

    task, features = world
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    said = []
    _drop_stale_run(run, task, features, TrainConfig(**SMALL, epochs=1, patience=1), said.append)
    assert run.is_dir() and not said  # same settings: it resumes
    _drop_stale_run(run, task, features, TrainConfig(**{**SMALL, "lr": 1e-4}, epochs=1, patience=1), said.append)
    assert not run.exists() and "training afresh" in said[0] and "lr" in said[0]
