"""clip-text and clip-image through the real loading path, from a checkpoint saved as open_clip
saves them (random weights: no package ships CLIP's), and the offline tag lookup."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from encoders import create_encoder
from encoders.clip import open_clip_weights
from encoders.weights import MissingWeightsError

TEXTS = ["a photo of a cat", "a rocket launch at night"]


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory):
    """ViT-S-32 (the small sibling of ViT-B-32, same code path) saved as a plain state dict."""
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-S-32").eval()
    path = tmp_path_factory.mktemp("clip") / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), path)
    return model, path


def test_clip_text_matches_open_clip(clip_checkpoint):
    import open_clip

    model, path = clip_checkpoint
    enc = create_encoder("clip-text", model_name="ViT-S-32", pretrained=str(path), device="cpu")
    assert enc.dim == 384 and enc.get_config()["quick_gelu"] is False
    got = enc.encode(TEXTS, convert_to_tensor=True)
    with torch.inference_mode():
        want = model.encode_text(open_clip.get_tokenizer("ViT-S-32")(TEXTS))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(enc.encode(TEXTS, convert_to_tensor=True), got)


def test_clip_image_matches_open_clip_and_its_preprocessing(clip_checkpoint, media_samples):
    import open_clip

    model, path = clip_checkpoint
    enc = create_encoder("clip-image", model_name="ViT-S-32", pretrained=str(path), device="cpu")
    assert enc.dim == 384
    files = [media_samples / "images" / f for f in ("astronaut.png", "rocket.jpg")]
    got = enc.encode(files, convert_to_tensor=True)
    preprocess = open_clip.image_transform(224, is_train=False)  # open_clip's own pipeline
    with torch.inference_mode():
        want = model.encode_image(torch.stack([preprocess(Image.open(f)) for f in files]))
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="not an open_clip ViT-B-32 checkpoint"):
        create_encoder("clip-image", model_name="ViT-B-32", pretrained=str(path))


def test_missing_weights_say_what_to_pass(tmp_path):
    with pytest.raises(MissingWeightsError, match="no weights given.*pass pretrained="):
        create_encoder("clip-text")
    with pytest.raises(MissingWeightsError, match="nope.bin does not exist"):
        create_encoder("clip-image", pretrained=str(tmp_path / "nope.bin"))


def test_tags_resolve_only_from_the_local_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="timm/vit_base_patch32_clip_224.openai is not in the local"):
        open_clip_weights("ViT-B-32", "openai")
    repo = tmp_path / "models--timm--vit_base_patch32_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "open_clip_pytorch_model.bin").write_bytes(b"x")
    path, cfg = open_clip_weights("ViT-B-32", "openai")
    assert path.name == "open_clip_pytorch_model.bin" and cfg["quick_gelu"] is True
