"""Fine-tuning the text encoder (``mmi finetune``): it learns the interest objective, the
starting encoder is validated first and kept when tuning does not beat it, its result is an
encoder like any other (plain sentence-transformers folder, its own fingerprint, re-encoded
by ``mmi embed``), it resumes exactly after a kill -9, two processes validate as one, and
LoRA is merged into a plain folder. On a tiny random BERT
and a learnable topic world (tests/finetune_world.py)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from finetune_world import tiny_encoder, words, write_world
from launch import accelerate_launch

SETTINGS = dict(epochs=3, patience=3, batch_size=16, lr=1e-3, negatives=8, max_seq_length=16)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(dataset folder, base encoder folder, task, texts)."""
    from multimodal_interest.data.dataset import CrossPlatformDataset
    from multimodal_interest.training.finetune import item_texts

    tmp = tmp_path_factory.mktemp("ft-world")
    base = tiny_encoder(tmp / "base", words(6, 12))
    data = write_world(tmp / "data")
    dataset = CrossPlatformDataset.load(data)
    task = dataset.cold_start("src", "tgt", "published")
    return data, base, task, {p: item_texts(dataset, p) for p in task.platforms}


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory):
    """One uninterrupted run of SETTINGS (tests must not change it)."""
    from multimodal_interest.training.finetune import FinetuneConfig, finetune

    _, base, task, texts = world
    out = tmp_path_factory.mktemp("ft-ref") / "run"
    return finetune(task, texts, f"finetuned:{base}", FinetuneConfig(**SETTINGS), out, progress_bar=False)


def content_ndcg10(folder: Path, task, texts, users) -> np.ndarray:
    """Per-user NDCG@10 of the content nearest neighbour (normalised mean of the user's last 20
    source items, cosine) with vectors from plain sentence-transformers."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    vec = {p: torch.from_numpy(st.encode(texts[p], normalize_embeddings=True)) for p in task.platforms}
    return vectors_ndcg10(vec, task, users)


def vectors_ndcg10(vec: dict[str, torch.Tensor], task, users) -> np.ndarray:
    """Per-user NDCG@10 of the content nearest neighbour on normalised item vectors ``vec[p]``."""
    from multimodal_interest.evaluate import evaluate

    h = task.source_histories(users, 20)
    m = h.mask.unsqueeze(-1).float()
    u = torch.nn.functional.normalize((vec[task.source][h.items] * m).sum(1) / m.sum(1), dim=-1)
    row = {int(x): i for i, x in enumerate(users)}
    return evaluate(lambda chunk: u[[row[int(x)] for x in chunk]] @ vec[task.target].T, task, users,
                    ks=(10,)).values["ndcg@10"]


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_finetuning_learns_and_its_folder_scores_as_logged(world, reference):
    _, base, task, texts = world
    log = [json.loads(line) for line in (reference.encoder_dir.parent / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1, 2, 3] and log == reference.history
    assert "loss" not in log[0] and log[0]["step"] == 0  # epoch 0: the starting encoder, before any step
    assert log[-1]["loss"] < 0.8 * log[1]["loss"]
    before = content_ndcg10(base, task, texts, task.valid_users).mean()
    after = content_ndcg10(reference.encoder_dir, task, texts, task.valid_users)
    assert log[0]["valid_ndcg10"] == pytest.approx(before, abs=1e-4) == reference.start_valid
    assert after.mean() > before + 0.2  # from chance to the topics
    assert after.mean() == pytest.approx(reference.best_valid, abs=1e-4)  # the folder is the model validated
    assert reference.best_epoch == log[-1]["best_epoch"] == 3


def test_when_tuning_does_not_beat_the_starting_encoder_the_starting_one_is_saved(world, reference, tmp_path,
                                                                                   capsys):
    """Starting from the reference's good encoder, lr 1 wrecks it in one epoch: epoch 0 wins,
    patience (1) counts from it, and encoder/ encodes as the starting encoder does."""
    from sentence_transformers import SentenceTransformer

    from multimodal_interest.cli import main

    data, _, task, texts = world
    start = reference.encoder_dir
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**SETTINGS, "lr": 1.0, "patience": 1}.items()]
    assert main(["-q", "finetune", str(data), "--source", "src", "--target", "tgt", "--encoder",
                 f"text=finetuned:{start}", "--output", str(tmp_path), *flags]) == 0
    out = capsys.readouterr().out
    assert "at epoch 0 of 1" in out and "did not beat the starting encoder" in out
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["best_epoch"]) for r in log] == [(0, 0), (1, 0)]  # stopped: patience 1 from epoch 0
    assert log[1]["valid_ndcg10"] < log[0]["valid_ndcg10"] - 0.3  # the tuned encoder was wrecked
    assert log[0]["valid_ndcg10"] == pytest.approx(reference.best_valid, abs=1e-4)
    was, now = tensors(start), tensors(tmp_path / "encoder")
    assert was.keys() == now.keys() and all(torch.equal(was[k], now[k]) for k in was)
    encode = {f: SentenceTransformer(str(f), device="cpu", local_files_only=True).encode(texts["tgt"])
              for f in (start, tmp_path / "encoder")}
    np.testing.assert_array_equal(*encode.values())


def test_the_folder_is_an_encoder_like_any_other(world, reference, tmp_path):
    from sentence_transformers import SentenceTransformer

    from encoders import Encoder, create_encoder
    from multimodal_interest.embed import load_encoders

    _, base, _, texts = world
    folder = reference.encoder_dir
    plain = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    ours = load_encoders({"text": f"finetuned:{folder}"}, device="cpu")["text"]
    assert isinstance(ours, Encoder) and ours.registry_name == "finetuned"
    np.testing.assert_allclose(ours.encode(texts["tgt"], batch_size=7), plain.encode(texts["tgt"]), atol=1e-6)

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert create_encoder("finetuned", model=copy).fingerprint == ours.fingerprint  # weights, not the path
    assert create_encoder("finetuned", model=base).fingerprint != ours.fingerprint
    weights = tensors(copy)
    name = next(k for k in weights if k.endswith("query.weight"))
    weights[name] = weights[name] + 1e-3
    save_file(weights, str(copy / "model.safetensors"), metadata={"format": "pt"})
    assert create_encoder("finetuned", model=copy).fingerprint != ours.fingerprint
    with pytest.raises(FileNotFoundError, match="encoder is the encoder of that fine-tuning run"):
        create_encoder("finetuned", model=folder.parent)


def test_mmi_embed_stores_the_finetuned_vectors_beside_the_base_ones_incrementally(world, reference, tmp_path,
                                                                                   capsys):
    from multimodal_interest.cli import main
    from multimodal_interest.store import EmbeddingStore

    data, base, _, _ = world
    store = tmp_path / "store"
    for spec in (f"finetuned:{base}", f"finetuned:{reference.encoder_dir}", f"finetuned:{reference.encoder_dir}"):
        assert main(["-q", "embed", str(data), "--store", str(store), "--encoder", f"text={spec}"]) == 0
    out = capsys.readouterr().out.splitlines()
    counts = [line.split()[2:5] for line in out if line.strip().startswith("text")]  # items, encoded, reused
    assert counts == [["48", "48", "0"]] * 4 + [["48", "0", "48"]] * 2  # src, tgt per run; the third reuses
    assert len(EmbeddingStore(store).fingerprints("tgt", "text")) == 2


KILLED = textwrap.dedent("""
    import json, os, signal, sys
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from multimodal_interest.data.dataset import CrossPlatformDataset
    from multimodal_interest.training.finetune import FinetuneConfig, finetune, item_texts
    from multimodal_interest.training.finetune.image import item_images
    from multimodal_interest.training.finetune.model import InterestTowers
    dataset = CrossPlatformDataset.load({data!r})
    task = dataset.cold_start("src", "tgt", "published")
    texts = {{p: {contents} for p in task.platforms}}
    forward, calls = InterestTowers.forward, [0]
    def dies(self, batch):
        calls[0] += 1
        if calls[0] == 14:  # epoch 2 (10 steps an epoch), after the checkpoint of step 12
            os.kill(os.getpid(), signal.SIGKILL)
        return forward(self, batch)
    InterestTowers.forward = dies
    finetune(task, texts, {base!r}, FinetuneConfig(**json.loads(sys.argv[2])), sys.argv[1],
             progress_bar=False)
""")


def killed_run(world, settings: dict, tmp_path: Path, base: str | None = None,
               contents: str = "item_texts(dataset, p)") -> Path:
    """The run folder of a fine-tuning with ``settings`` (checkpoints every 4 steps) killed
    with SIGKILL at step 14, after the checkpoint of step 12. ``base``: the encoder spec (the
    world's text encoder folder by default); ``contents``: what gives platform ``p``'s items."""
    data = world[0]
    script = tmp_path / "killed.py"
    script.write_text(KILLED.format(tests=str(Path(__file__).parent), data=str(data), contents=contents,
                                    base=base or f"finetuned:{world[1]}"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(script), str(out), json.dumps(settings)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-10", "step-12"]
    return out


def assert_same_run(resumed, reference) -> None:
    """Two runs logged the same epochs (timings aside) and saved bit-identical encoders."""
    timing = ("seconds", "train_items_per_s", "valid_seconds")
    assert [{k: v for k, v in r.items() if k not in timing} for r in resumed.history] == \
           [{k: v for k, v in r.items() if k not in timing} for r in reference.history]
    want, got = tensors(reference.encoder_dir), tensors(resumed.encoder_dir)
    assert want.keys() == got.keys()
    assert not [name for name in want if not torch.equal(want[name], got[name])]


def test_a_run_killed_mid_epoch_resumes_to_the_weights_of_an_uninterrupted_one(world, reference, tmp_path,
                                                                               monkeypatch):
    from multimodal_interest.training.finetune import FinetuneConfig, finetune
    from multimodal_interest.training.finetune.validation import Validation

    _, base, task, texts = world
    settings = {**SETTINGS, "checkpoint_every": 4}
    out = killed_run(world, settings, tmp_path)
    scored, score = [], Validation.score

    def counted(self, *args, **kwargs):
        scored.append(1)
        return score(self, *args, **kwargs)

    monkeypatch.setattr(Validation, "score", counted)
    resumed = finetune(task, texts, f"finetuned:{base}", FinetuneConfig(**settings), out, progress_bar=False)
    assert len(scored) == 2  # epochs 2 and 3; epoch 0 (the starting encoder) comes from the checkpoint
    timing = ("seconds", "train_items_per_s", "valid_seconds")
    assert [{k: v for k, v in r.items() if k not in timing} for r in resumed.history] == \
           [{k: v for k, v in r.items() if k not in timing} for r in reference.history]
    want, got = tensors(reference.encoder_dir), tensors(resumed.encoder_dir)
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name


def test_resuming_with_other_settings_is_refused_naming_them(world, reference):
    from multimodal_interest.training.finetune import FinetuneConfig, finetune
    from multimodal_interest.training.record import NotResumable

    _, base, task, texts = world
    with pytest.raises(NotResumable, match=r"lr 0\.001 \(now 0\.01\)"):
        finetune(task, texts, f"finetuned:{base}", FinetuneConfig(**{**SETTINGS, "lr": 1e-2}),
                 reference.encoder_dir.parent, progress_bar=False)


def test_two_processes_validate_as_well_as_one(world, reference, tmp_path):
    """Launched in two processes (the CLI, as a user would), each takes half of every step's
    users, so its in-batch negatives differ: the runs differ by training noise. The tolerance
    is two standard errors of the one-process encoder's mean validation NDCG@10."""
    data, base, task, texts = world
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in SETTINGS.items()]
    out = accelerate_launch("scripts/finetune.py", str(data), "--source", "src", "--target", "tgt",
                            "--encoder", f"text=finetuned:{base}", "--output", str(tmp_path / "two"), *flags)
    assert "best validation NDCG@10" in out.stdout
    one = content_ndcg10(reference.encoder_dir, task, texts, task.valid_users)
    two = content_ndcg10(tmp_path / "two" / "encoder", task, texts, task.valid_users)
    log = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert two.mean() == pytest.approx(max(r["valid_ndcg10"] for r in log), abs=1e-4)
    assert abs(two.mean() - one.mean()) <= 2 * one.std(ddof=1) / np.sqrt(len(one))


def test_lora_on_the_top_layer_saves_a_plain_folder_where_only_that_layer_changed(world, tmp_path, capsys):
    from multimodal_interest.cli import main

    data, base, _, _ = world
    assert main(["-q", "finetune", str(data), "--source", "src", "--target", "tgt", "--encoder",
                 f"text=finetuned:{base}", "--output", str(tmp_path), "--lora-rank", "4", "--train-layers", "1",
                 "--epochs", "1", "--lr", "5e-2", "--batch-size", "16", "--cold-items", "0.3"]) == 0
    assert "best validation NDCG@10 of the cold items among the cold items" in capsys.readouterr().out
    folder = tmp_path / "encoder"
    assert not list(folder.rglob("adapter_*")) and not list(folder.rglob("*.bin"))
    was, now = tensors(base), tensors(folder)
    assert was.keys() == now.keys()  # no LoRA tensors: merged
    changed = {k for k in was if not torch.equal(was[k], now[k])}
    assert changed and all(".layer.1." in k for k in changed)  # the top layer only
    assert {k.rsplit(".", 2)[-2] for k in changed} <= {"query", "value"}  # peft's LoRA targets in BERT
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert log[-1]["best_epoch"] == 1  # it beat the starting encoder (else encoder/ would be that one)
    assert all(0 <= r["valid_cold_ndcg10"] <= r["valid_cold_among_cold_ndcg10"] <= 1 for r in log)


def test_an_encoder_other_than_text_is_a_clear_error(world, tmp_path, capsys):
    from multimodal_interest.cli import main

    data, _, _, _ = world
    assert main(["finetune", str(data), "--source", "src", "--target", "tgt", "--encoder", "image=resnet",
                 "--output", str(tmp_path)]) == 2
    assert "expected text=NAME" in capsys.readouterr().err
