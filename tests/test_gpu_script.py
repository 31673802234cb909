"""benchmarks/gpu.sh end to end on the CPU (CI-sized), and the tests marked ``gpu``
(they skip, saying why, where there is no CUDA device)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_gpu_script_runs_on_cpu_and_writes_one_table(tmp_path):
    out = tmp_path / "table.md"
    proc = subprocess.run(["bash", "benchmarks/gpu.sh", "--device", "cpu", "--tiny", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = out.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows[0] == "| what | fp32 | bf16 | bf16 / fp32 | notes |"
    body = {r.split(" | ")[0][2:]: r for r in rows[1:]}
    assert "items/s" in body["MiniLM-L6 (sentence-transformer)"] and "TFLOP/s" in body["MiniLM-L6 (sentence-transformer)"]
    assert "items/s" in body["EfficientNet-Lite0"]
    llm = body["SmolLM2-135M (llm-text)"]
    assert "items/s" in llm or "not available" in llm
    assert "steps/s" in body["fusion training (synthetic world)"] and ", match" in body["fusion training (synthetic world)"]
    tuned = body["fine-tuning the text encoder (tiny BERT, topic world)"]
    assert "steps/s" in tuned and "n/a (CUDA only)" in tuned and "frozen encoder NDCG@10" in tuned
    fit = body["closed-form fit (CPU, synthetic ids-only world)"]
    assert " s |" in fit and "nystrom path" in fit
    assert "skipped" in body["tests marked gpu (pytest -m gpu)"]  # no CUDA: they skip, they do not fail
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.gpu
@needs_cuda
def test_encoders_on_gpu_give_the_cpu_vectors(shared_data):
    from encoders import create_encoder

    texts = ["red stapler", "acrylic paint set, 24 colours", "A man is playing a guitar."]
    text = create_encoder("sentence-transformer")
    cpu, gpu = text.encode(texts, device="cpu"), text.encode(texts, device="cuda")
    assert ((cpu * gpu).sum(1) >= 0.9999).all()
    photos = sorted(str(p) for p in (shared_data / "media_samples" / "images").iterdir())
    image = create_encoder("efficientnet-lite0")
    cpu, gpu = image.encode(photos, device="cpu"), image.encode(photos, device="cuda")
    cos = (cpu * gpu).sum(1) / np.linalg.norm(cpu, axis=1) / np.linalg.norm(gpu, axis=1)
    assert (cos >= 0.999).all()


@pytest.mark.gpu
@needs_cuda
def test_bf16_training_on_gpu_follows_fp32(tmp_path):
    sys.path.insert(0, str(REPO / "tests"))
    from synthetic import synthetic_task

    from multimodal_interest.training import TrainConfig, train

    task, features = synthetic_task(n_users=600, latent=4)
    losses = {}
    for precision in ("no", "bf16"):
        config = TrainConfig(kind="transformer", dim=32, n_heads=2, batch_size=64, lr=5e-3, epochs=2, patience=2,
                             min_epoch_steps=20, dropout=0.0, modality_dropout=0.0, mixed_precision=precision)
        result = train(task, features, config, tmp_path / precision, progress_bar=False)
        losses[precision] = [row["loss"] for row in result.history]
    assert losses["no"][-1] < losses["no"][0]
    np.testing.assert_allclose(losses["bf16"], losses["no"], rtol=0.05)
