"""Image encoders on the real photos of media_samples; ResNet from a saved state dict."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from encoders import EncoderInputError, create_encoder
from encoders.weights import MissingWeightsError


@pytest.fixture(scope="module")
def effnet():
    return create_encoder("efficientnet-lite0", device="cpu")


@pytest.fixture(scope="module")
def images(media_samples):
    return {p.stem: p for p in sorted((media_samples / "images").iterdir())}


def _cos(a, b) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_efficientnet_packaged_weights_recognise_the_photos(effnet, images):
    vec = effnet.encode([str(images["chelsea"]), images["coffee"]], convert_to_tensor=True)
    assert vec.shape == (2, 1280) and effnet.dim == 1280
    top = effnet.net.classifier(vec).argmax(1).tolist()  # ImageNet logits of the pooled features
    assert 281 <= top[0] <= 285, "the cat photo must be an ImageNet cat (281-285)"
    assert top[1] == 967, "the coffee photo must be an espresso"


def test_efficientnet_cat_is_closer_to_its_mirror_than_to_coffee(effnet, images):
    cat = Image.open(images["chelsea"])
    vec = effnet.encode([cat, cat.transpose(Image.Transpose.FLIP_LEFT_RIGHT), str(images["coffee"])])
    assert _cos(vec[0], vec[1]) > 0.8 > _cos(vec[0], vec[2]) + 0.3
    np.testing.assert_allclose(vec[0], effnet.encode(str(images["chelsea"])), atol=1e-5)  # PIL == path


def test_exif_orientation_is_applied(effnet, images, tmp_path):
    cat = Image.open(images["chelsea"]).convert("RGB")
    cat.save(tmp_path / "upright.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 3  # orientation: rotate 180 to display
    cat.rotate(180).save(tmp_path / "tagged.jpg", quality=95, exif=exif)
    cat.rotate(180).save(tmp_path / "rotated.jpg", quality=95)
    upright, tagged, rotated = effnet.encode([tmp_path / "upright.jpg", tmp_path / "tagged.jpg",
                                              tmp_path / "rotated.jpg"])
    assert _cos(upright, tagged) > 0.99 > _cos(upright, rotated)


def test_bad_image_files_are_named_or_recorded(effnet, images, tmp_path):
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (tmp_path / "notes.jpg").write_text("hello")
    good = str(images["rocket"])
    with pytest.raises(EncoderInputError, match=r"input 1 .*corrupt.png.*unreadable image"):
        effnet.encode([good, str(tmp_path / "corrupt.png")])
    with pytest.raises(EncoderInputError, match="no such image file"):
        effnet.encode(str(tmp_path / "missing.png"))
    inputs = [good, tmp_path / "corrupt.png", tmp_path / "missing.png", tmp_path / "notes.jpg", 42, good]
    result = effnet.encode_with_errors(inputs, batch_size=2)
    assert result.ok == [0, 5] and sorted(result.errors) == [1, 2, 3, 4]
    assert "unreadable image" in result.errors[1] and "no such image file" in result.errors[2]
    assert result.errors[4] == "expected an image path or PIL.Image, got int"
    np.testing.assert_allclose(result.vectors[0].numpy(), effnet.encode(good), atol=1e-5)


def test_worker_processes_give_the_same_vectors(effnet, images):
    paths = [str(p) for p in images.values()][:4]
    serial = effnet.encode(paths, batch_size=2, num_workers=0)
    np.testing.assert_allclose(effnet.encode(paths, batch_size=2, num_workers=2), serial, atol=1e-6)
    np.testing.assert_allclose(effnet.encode(paths, batch_size=2), serial, atol=1e-6)  # chosen by encoder


# -------------------------------------------------------------------------------- ResNet
@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A ResNet-18 state dict saved as torchvision publishes it (random weights: no package
    ships them), under torchvision's own file name."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    path = tmp_path_factory.mktemp("resnet") / "resnet18-f37072fd.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_resnet_loads_a_torchvision_state_dict(resnet18_file, images):
    model, path = resnet18_file
    enc = create_encoder("resnet", arch="resnet18", weights=str(path), device="cpu")
    assert enc.dim == 512
    got = enc.encode([images["chelsea"], images["camera"]], convert_to_tensor=True)
    x = (enc.collate([enc.load_item(images["chelsea"]), enc.load_item(images["camera"])])
         .permute(0, 3, 1, 2).float() / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) \
        / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.inference_mode():
        want = torch.flatten(model.avgpool(torch.nn.Sequential(*list(model.children())[:-2])(x)), 1)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(enc.encode([images["chelsea"], images["camera"]], convert_to_tensor=True), got)


def test_resnet_finds_the_torch_hub_cache_and_names_what_is_missing(resnet18_file, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match=r"resnet18-f37072fd.pth.*weights=<its path>"):
        create_encoder("resnet", arch="resnet18")
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth").symlink_to(resnet18_file[1])
    enc = create_encoder("resnet", arch="resnet18")
    assert enc.get_config() == {"arch": "resnet18", "weights": None}
    with pytest.raises(ValueError, match="not a ResNet state dict: .*missing keys"):
        create_encoder("resnet", arch="resnet34", weights=resnet18_file[1])
