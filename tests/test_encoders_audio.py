"""Audio encoders: packaged CREPE on tones and real clips; PANNs CNN14 from a checkpoint in the
published format."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from encoders import EncoderInputError, create_encoder
from encoders.weights import MissingWeightsError

RATE = 16000


def _tone(freq: float, seconds: float = 1.0, rate: int = RATE) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def _cos(a, b) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def crepe_tiny():
    return create_encoder("crepe", capacity="tiny", device="cpu")


@pytest.mark.parametrize("capacity", ["tiny", "full"])
def test_crepe_hears_pitch(capacity, crepe_tiny, tmp_path):
    enc = crepe_tiny if capacity == "tiny" else create_encoder("crepe", device="cpu")
    assert enc.dim == {"tiny": 256, "full": 2048}[capacity]
    noise = np.random.default_rng(0).normal(0, 0.3, RATE).astype(np.float32)
    soundfile.write(tmp_path / "a440.wav", _tone(440), RATE)  # a file, and in-memory clips
    a440, a445, hiss = enc.encode([tmp_path / "a440.wav", (_tone(445), RATE), (noise, RATE)])
    assert _cos(a440, a445) > 0.8 > _cos(a440, hiss) + 0.5


def test_crepe_real_clips_speech_is_closer_to_speech_than_to_piano(crepe_tiny, media_samples):
    wav = media_samples / "audio" / "wav16k_mono"
    speech1, speech2, piano = crepe_tiny.encode([wav / "Front_Center.wav", wav / "hello-world.wav",
                                                 wav / "piano02.wav"])
    assert _cos(speech1, speech2) > max(_cos(speech1, piano), _cos(speech2, piano)) + 0.2


def test_reading_resampling_and_mixing_to_mono(crepe_tiny, media_samples):
    audio = media_samples / "audio"
    # 44.1 kHz Vorbis stereo and 48 kHz WAV, resampled here, against sox's 16 kHz mono copies
    ours = crepe_tiny.encode([audio / "applause01.ogg", audio / "Front_Center.wav"])
    sox = crepe_tiny.encode([audio / "wav16k_mono" / "applause01.wav", audio / "wav16k_mono" / "Front_Center.wav"])
    assert _cos(ours[0], sox[0]) > 0.95 and _cos(ours[1], sox[1]) > 0.95
    wave, rate = soundfile.read(audio / "wav16k_mono" / "hello-world.wav", dtype="float32")
    from_file = crepe_tiny.encode(audio / "wav16k_mono" / "hello-world.wav")
    np.testing.assert_allclose(crepe_tiny.encode((wave, rate)), from_file, atol=1e-6)
    np.testing.assert_allclose(crepe_tiny.encode((np.stack([wave, wave]), rate)), from_file, atol=1e-6)
    np.testing.assert_allclose(crepe_tiny.encode((torch.from_numpy(wave), rate)), from_file, atol=1e-6)


def test_clips_in_one_batch_do_not_mix(crepe_tiny):
    clips = [(_tone(220, 0.4), RATE), (_tone(880, 2.5), RATE), (_tone(330, 1.0), RATE)]
    batch = crepe_tiny.encode(clips, batch_size=3)
    for i, clip in enumerate(clips):
        np.testing.assert_allclose(batch[i], crepe_tiny.encode(clip), rtol=1e-4, atol=1e-5)


def test_bad_clips_are_named_or_recorded(crepe_tiny, tmp_path):
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    soundfile.write(tmp_path / "empty.wav", np.zeros(0, np.float32), RATE)
    with pytest.raises(EncoderInputError, match=r"input 0 .*corrupt.wav.*unreadable audio"):
        crepe_tiny.encode([tmp_path / "corrupt.wav"])
    inputs = [(_tone(440), RATE), tmp_path / "corrupt.wav", tmp_path / "empty.wav", tmp_path / "missing.ogg",
              (np.zeros((2, 2, 2)), RATE), (_tone(440), 0), (np.array([np.nan, 0.0]), RATE)]
    result = crepe_tiny.encode_with_errors(inputs)
    assert result.ok == [0] and sorted(result.errors) == [1, 2, 3, 4, 5, 6]
    assert result.errors[2] == "empty audio (0 samples)"
    assert result.errors[3].startswith("no such audio file")
    assert "[samples] or [channels, samples]" in result.errors[4]
    assert "sample rate" in result.errors[5] and "NaN" in result.errors[6]


# ------------------------------------------------------------------------------------- PANNs
def _published_cnn14_state(n_fft: int = 1024, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the key names and shapes of the published PANNs CNN14 checkpoints
    (audioset_tagging_cnn's Cnn14 with torchlibrosa's Spectrogram and LogmelFilterBank)."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=g) * 0.05  # noqa: E731
    state = {"spectrogram_extractor.stft.conv_real.weight": rand(n_fft // 2 + 1, 1, n_fft),
             "spectrogram_extractor.stft.conv_imag.weight": rand(n_fft // 2 + 1, 1, n_fft),
             "logmel_extractor.melW": rand(n_fft // 2 + 1, 64).abs()}

    def bn(prefix: str, n: int) -> None:
        state.update({f"{prefix}.weight": 1 + rand(n), f"{prefix}.bias": rand(n),
                      f"{prefix}.running_mean": rand(n), f"{prefix}.running_var": 1 + rand(n).abs(),
                      f"{prefix}.num_batches_tracked": torch.tensor(1000)})

    bn("bn0", 64)
    widths = [1, 64, 128, 256, 512, 1024, 2048]
    for i in range(1, 7):
        cin, cout = widths[i - 1], widths[i]
        state[f"conv_block{i}.conv1.weight"] = rand(cout, cin, 3, 3) * (2 / cin) ** 0.5 * 20
        state[f"conv_block{i}.conv2.weight"] = rand(cout, cout, 3, 3) * (2 / cout) ** 0.5 * 20
        bn(f"conv_block{i}.bn1", cout)
        bn(f"conv_block{i}.bn2", cout)
    state.update({"fc1.weight": rand(2048, 2048), "fc1.bias": rand(2048),
                  "fc_audioset.weight": rand(527, 2048), "fc_audioset.bias": rand(527)})
    return state


@pytest.fixture(scope="module")
def cnn14_file(tmp_path_factory):
    """Saved the way PANNs' training script saves: the state dict under "model", next to the
    iteration and the sampler's numpy state."""
    path = tmp_path_factory.mktemp("panns") / "Cnn14_mAP=0.431.pth"
    torch.save({"iteration": 1000, "model": _published_cnn14_state(),
                "sampler": {"indexes_per_class": [np.arange(5)], "random_state": np.random.RandomState(0).get_state()}},
               path)
    return path


def test_panns_cnn14_loads_the_published_format(cnn14_file, media_samples, tmp_path, monkeypatch):
    enc = create_encoder("panns-cnn14", weights=str(cnn14_file), device="cpu")
    assert enc.dim == 2048
    clips = [media_samples / "audio" / "hello-world.wav", (_tone(440, 0.2, 32000), 32000)]  # short: padded to 1 s
    first = enc.encode(clips, convert_to_tensor=True)
    assert first.shape == (2, 2048) and torch.isfinite(first).all() and (first[0] != first[1]).any()
    torch.testing.assert_close(enc.encode(clips, convert_to_tensor=True), first)
    torch.testing.assert_close(enc.net.logmel_extractor.melW, torch.load(cnn14_file, weights_only=False)
                               ["model"]["logmel_extractor.melW"])  # the file's filter bank is used
    # found by its published name where panns_inference keeps it
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match=r"Cnn14_mAP=0.431.pth.*weights=<its path>"):
        create_encoder("panns-cnn14")
    (tmp_path / "panns_data").mkdir()
    (tmp_path / "panns_data" / "Cnn14_mAP=0.431.pth").symlink_to(cnn14_file)
    assert create_encoder("panns-cnn14").fingerprint == enc.fingerprint


def test_panns_cnn14_refuses_other_checkpoints(tmp_path):
    torch.save({"model": {"spectrogram_extractor.stft.conv_real.weight": torch.zeros(257, 1, 512)}},
               tmp_path / "16k.pth")
    with pytest.raises(ValueError, match="512-sample window.*pass the matching sample_rate"):
        create_encoder("panns-cnn14", weights=tmp_path / "16k.pth")
    torch.save({"model": {"fc1.weight": torch.zeros(2048, 2048)}}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="not a Cnn14 state dict: .*missing keys"):
        create_encoder("panns-cnn14", weights=tmp_path / "partial.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        create_encoder("panns-cnn14", weights=tmp_path / "junk.pth")
