"""Fine-tuning the image encoder's last blocks (``mmi finetune --encoder image=efficientnet-lite0``,
training/finetune/image.py): only the last stage and the head learn, the frozen part's output
is cached and encodes as the whole encoder does, the result is a ``finetuned-image`` encoder
that ``mmi embed`` stores beside the packaged one's vectors, and a bad image is reported by
name. On a tiny catalog of crops, flips and turns of the shared media samples (no real image
+ interaction data exists here: tested, not benchmarked)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from finetune_world import write_world
from launch import accelerate_launch
from test_finetune import assert_same_run, killed_run, vectors_ndcg10

SETTINGS = dict(epochs=2, patience=2, batch_size=8, epoch_steps=10, lr=3e-3, negatives=4, max_len=4)
# fp16 storage of the frozen part's feature maps: item vectors within this of the whole
# encoder's, relative to the largest feature (1.1e-4 measured on the media samples, 1 to 3
# stages tuned; float32 storage gives the whole encoder's very bits there)
EMBED_RTOL = 5e-4
# per platform, the two topics' photos: a user keeps to one topic, a cat goes with the astronaut
PHOTOS = {"src": ("chelsea.png", "coffee.png"), "tgt": ("astronaut.png", "rocket.jpg")}


def variant(photo: Image.Image, k: int) -> Image.Image:
    """The ``k``-th of six views of a photo: crops of its corners and centre, a mirror, a turn."""
    w, h = photo.size
    boxes = [(0, 0, w * 3 // 4, h * 3 // 4), (w // 4, h // 4, w, h), (w // 8, h // 8, w * 7 // 8, h * 7 // 8)]
    view = photo.crop(boxes[k % 3])
    if k >= 3:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT if k == 3 else Image.Transpose.ROTATE_90 if k == 4
                              else Image.Transpose.ROTATE_270)
    return view


@pytest.fixture(scope="module")
def world(tmp_path_factory, media_samples):
    """(dataset folder, task, images): 2 topics of 6 items a platform, each item a view of one photo."""
    from multimodal_interest.data.dataset import CrossPlatformDataset
    from multimodal_interest.training.finetune.image import item_images

    photos = {p: [Image.open(media_samples / "images" / name).convert("RGB") for name in names]
              for p, names in PHOTOS.items()}

    def image(root: Path, platform: str, item: int, topic: int) -> str:
        path = Path("images") / platform / f"{item}.png"
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        view = variant(photos[platform][topic], item % 6)
        view.resize((view.width * 256 // min(view.size), view.height * 256 // min(view.size))).save(root / path)
        return str(path)

    data = write_world(tmp_path_factory.mktemp("ft-image-world") / "data", topics=2, per_topic=6, n_users=48,
                       valid=12, test=8, image=image)
    dataset = CrossPlatformDataset.load(data)
    task = dataset.cold_start("src", "tgt", "published")
    images = {p: item_images(dataset, p) for p in task.platforms}
    assert all(not errors for _, errors in images.values())
    return data, task, {p: paths for p, (paths, _) in images.items()}


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory):
    """One run of SETTINGS, a checkpoint every 4 steps (tests must not change it)."""
    from multimodal_interest.training.finetune import FinetuneConfig, finetune

    _, task, images = world
    out = tmp_path_factory.mktemp("ft-image-ref") / "run"
    return finetune(task, images, "efficientnet-lite0", FinetuneConfig(**SETTINGS, checkpoint_every=4), out,
                    progress_bar=False)


@pytest.fixture(scope="module")
def packaged():
    from encoders import create_encoder

    return create_encoder("efficientnet-lite0", device="cpu")


def test_only_the_last_stage_and_the_head_learn(reference, packaged):
    """After a few steps, the weights of the last step (the newest checkpoint): blocks.6,
    conv_head and bn2's scale and shift changed; the stem and blocks 0-5 are bit-identical,
    and so is every BatchNorm's running statistics (BatchNorm runs in eval mode)."""
    step = max((reference.encoder_dir.parent / "checkpoints").iterdir(), key=lambda p: int(p.name.split("-")[1]))
    tuned = {k.removeprefix("encoder.net."): v for k, v in load_file(str(step / "weights.safetensors")).items()}
    was = packaged.net.state_dict()
    assert tuned.keys() == was.keys()
    changed = {k for k in was if not torch.equal(was[k], tuned[k])}
    assert changed and all(k.startswith(("blocks.6.", "conv_head.", "bn2.")) for k in changed)
    assert {"conv_head.weight", "bn2.weight", "bn2.bias"} <= changed
    assert any(k.startswith("blocks.6.") for k in changed)
    assert not any(k.endswith(("running_mean", "running_var")) for k in changed)
    log = reference.history
    assert [r["epoch"] for r in log] == [0, 1, 2] and log[-1]["step"] == 20 and "loss" in log[1]


def test_the_cached_path_encodes_every_item_as_the_whole_encoder_does(world, packaged, monkeypatch):
    from multimodal_interest.training.finetune import image
    from multimodal_interest.training.finetune.image import ImageLowerCache

    _, task, images = world
    whole = {p: packaged.encode(images[p], batch_size=4, convert_to_tensor=True) for p in task.platforms}

    def cached(train_layers: int) -> tuple[ImageLowerCache, dict[str, torch.Tensor]]:
        cache = ImageLowerCache(packaged, train_layers, images, task.platforms, block=5)
        with torch.no_grad():
            return cache, {p: cache.embed([(p, i) for i in range(len(images[p]))], chunk_size=7)
                           for p in task.platforms}

    for train_layers in (1, 3):
        cache, got = cached(train_layers)
        for p in task.platforms:
            assert got[p].shape == whole[p].shape == (12, 1280)
            torch.testing.assert_close(got[p], whole[p], atol=EMBED_RTOL * float(whole[p].abs().max()), rtol=0)
        assert cache.computed == 24  # each item's frozen part once (blocks of 5)
        assert all(s.dtype == torch.float16 for block in cache.entries.values() for s in block)
    monkeypatch.setattr(image, "STORAGE", torch.float32)  # unrounded: the split is the whole network
    _, got = cached(1)
    for p in task.platforms:
        torch.testing.assert_close(got[p], whole[p], atol=1e-5, rtol=0)


def test_the_saved_encoder_loads_through_the_registry_and_scores_as_validated(world, reference, packaged):
    from multimodal_interest.embed import load_encoders

    _, task, images = world
    assert reference.best_epoch > 0  # the tuned encoder beat the packaged one on validation
    manifest = json.loads((reference.encoder_dir / "image_encoder.json").read_text())
    assert manifest["base"] == "efficientnet-lite0" and manifest["base_fingerprint"] == packaged.fingerprint
    tuned = load_encoders({"image": f"finetuned-image:{reference.encoder_dir}"}, device="cpu")["image"]
    assert tuned.registry_name == "finetuned-image" and tuned.dim == 1280
    assert tuned.fingerprint != packaged.fingerprint
    vec = {p: torch.nn.functional.normalize(tuned.encode(images[p], convert_to_tensor=True), dim=-1)
           for p in task.platforms}
    # the folder is the encoder validated (fp16 cached maps in validation: near ties may move)
    assert vectors_ndcg10(vec, task, task.valid_users).mean() == pytest.approx(reference.best_valid, abs=1e-3)
    assert not np.allclose(tuned.encode(images["tgt"]), packaged.encode(images["tgt"]), atol=1e-3)


def test_mmi_embed_stores_the_tuned_vectors_beside_the_packaged_ones_incrementally(world, reference, tmp_path,
                                                                                  capsys):
    from multimodal_interest.cli import main
    from multimodal_interest.store import EmbeddingStore

    data, _, _ = world
    store = tmp_path / "store"
    for spec in ("efficientnet-lite0", f"finetuned-image:{reference.encoder_dir}",
                 f"finetuned-image:{reference.encoder_dir}"):
        assert main(["-q", "embed", str(data), "--store", str(store), "--encoder", f"image={spec}"]) == 0
    out = capsys.readouterr().out.splitlines()
    counts = [line.split()[2:5] for line in out if line.strip().startswith("image")]  # items, encoded, reused
    assert counts == [["12", "12", "0"]] * 4 + [["12", "0", "12"]] * 2  # src, tgt per run; the third reuses
    assert len(EmbeddingStore(store).fingerprints("tgt", "image")) == 2


def test_a_run_killed_mid_epoch_resumes_to_the_weights_of_an_uninterrupted_one(world, reference, tmp_path):
    """The resumed run starts with an empty cache: the feature maps it recomputes are the bits
    the uninterrupted run had cached."""
    from multimodal_interest.training.finetune import FinetuneConfig, finetune

    _, task, images = world
    settings = {**SETTINGS, "checkpoint_every": 4}
    out = killed_run(world, settings, tmp_path, base="efficientnet-lite0", contents="item_images(dataset, p)[0]")
    resumed = finetune(task, images, "efficientnet-lite0", FinetuneConfig(**settings), out, progress_bar=False)
    assert_same_run(resumed, reference)


def test_two_processes_each_with_its_own_cache_run_as_one_job(world, reference, tmp_path):
    """Launched in two processes (the CLI), each caches the feature maps of its share of the
    steps and of validation in 0.1 MB (less than a block: every block is dropped after use);
    they are one job: one summary, and the saved encoder scores as logged."""
    from encoders import create_encoder

    data, task, images = world
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**SETTINGS, "lower_cache_mb": 0.1}.items()]
    out = accelerate_launch("scripts/finetune.py", str(data), "--source", "src", "--target", "tgt",
                            "--encoder", "image=efficientnet-lite0", "--output", str(tmp_path / "two"), *flags)
    assert out.stdout.count("best validation NDCG@10") == 1  # the main process reports; not two lone runs
    log = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1, 2] and log[0]["valid_ndcg10"] == reference.history[0]["valid_ndcg10"]
    tuned = create_encoder("finetuned-image", model=tmp_path / "two" / "encoder", device="cpu")
    vec = {p: torch.nn.functional.normalize(tuned.encode(images[p], convert_to_tensor=True), dim=-1)
           for p in task.platforms}
    best = max(r["valid_ndcg10"] for r in log)
    assert best > log[0]["valid_ndcg10"]
    assert vectors_ndcg10(vec, task, task.valid_users).mean() == pytest.approx(best, abs=1e-3)


def test_bad_images_are_named_before_training_and_encoded_blank(world, tmp_path, capsys, caplog):
    """A missing file stops the dataset from loading, naming it; a file that is not an image
    is found before training and listed with its item; a JPEG cut short passes that check, is
    found when decoded, and named in a warning. Both unreadable ones are encoded blank."""
    import shutil

    import pandas as pd

    from multimodal_interest.cli import main

    data, _, _ = world
    bad = tmp_path / "data"
    shutil.copytree(data, bad)
    args = ["finetune", str(bad), "--source", "src", "--target", "tgt", "--encoder", "image=efficientnet-lite0",
            "--output", str(tmp_path / "run"),
            *[f"--{k.replace('_', '-')}={v}" for k, v in {**SETTINGS, "epochs": 1, "epoch_steps": 1}.items()]]
    (bad / "images" / "src" / "2.png").rename(tmp_path / "2.png")
    assert main(args) == 2
    assert "items/src.csv:4: column 'image': media file 'images/src/2.png' not found" in capsys.readouterr().err
    (tmp_path / "2.png").rename(bad / "images" / "src" / "2.png")

    (bad / "images" / "tgt" / "3.png").write_text("not an image")
    Image.open(bad / "images" / "tgt" / "5.png").save(bad / "images" / "tgt" / "5.jpg")
    (bad / "images" / "tgt" / "5.jpg").write_bytes((bad / "images" / "tgt" / "5.jpg").read_bytes()[:2000])
    items = pd.read_csv(bad / "items" / "tgt.csv")
    items.loc[5, "image"] = "images/tgt/5.jpg"
    items.to_csv(bad / "items" / "tgt.csv", index=False)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "1 item(s) without a usable image, encoded as a blank image:" in out
    assert "tgt.csv row 4 (item 'tgt3', image): unreadable image" in out
    assert "--encoder image=finetuned-image:" in out
    warned = [r.getMessage() for r in caplog.records if "blank image" in r.getMessage()]
    assert len(warned) == 1 and "images/tgt/5.jpg" in warned[0] and "tgt item 5" in warned[0]


def test_an_image_encoder_other_than_efficientnet_is_a_clear_error(world, tmp_path, capsys):
    from multimodal_interest.cli import main

    data, _, _ = world
    for spec in ("image=resnet", "text=efficientnet-lite0"):
        assert main(["finetune", str(data), "--source", "src", "--target", "tgt", "--encoder", spec,
                     "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "expected text=NAME" in err and "image=efficientnet-lite0" in err
    assert "efficientnet-lite0 is an encoder of image, not text" in err
