"""`mmi evaluate` keeps each finished method: killed after its first one and run again on the
same output folder, it reads that method back instead of computing it again."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from multimodal_interest.cli import main
from newcomer_sample import write_sample

REPO = Path(__file__).resolve().parents[1]
SETTINGS = ["--set", "epochs=2", "--set", "dim=16", "--set", "n_heads=2", "--set", "item_ids=true",
            "--set", "min_epoch_steps=2", "--set", "batch_size=32"]


@pytest.fixture(scope="module")
def dataset(shared_data: Path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("resume")
    files = write_sample(shared_data, folder, n_train=60, n_valid=12, n_test=12)
    dst = folder / "data"
    assert main(["-q", "import", "csv", str(files["interactions"]), str(dst),
                 "--split-column", "split"]) == 0
    return dst


def evaluate_args(dataset: Path, out: Path, *extra: str) -> list[str]:
    return ["evaluate", str(dataset), "--source", "art", "--target", "office", "--split", "given",
            "--methods", "popularity,interest-model", "--output", str(out), *SETTINGS, *extra]


def test_killed_evaluate_keeps_its_finished_method(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = out / "art-office.popularity.done.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "multimodal_interest.cli", "-q", *evaluate_args(dataset, out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not done.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert done.is_file(), f"popularity never finished: {proc.poll()}"
        proc.send_signal(signal.SIGKILL)  # in the middle of the interest model's training
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "art-office.interest-model.done.json").exists()
    assert not (out / "art-office.md").exists()  # the report comes at the end
    first = json.loads(done.read_text())

    again = subprocess.run([sys.executable, "-m", "multimodal_interest.cli", *evaluate_args(dataset, out)],
                           env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stderr
    assert "popularity: done in an earlier run" in log
    assert "popularity: fitting" not in log  # not computed again ...
    assert json.loads(done.read_text()) == first  # ... nor saved again
    assert "interest-model: fitting" in log
    assert (out / "art-office.interest-model.done.json").is_file()
    report = json.loads((out / "art-office.json").read_text())
    assert set(report["methods"]) == {"popularity", "interest-model"}
    assert report["methods"]["popularity"]["seconds"] == round(first["seconds"], 1)


def test_other_settings_compute_again(dataset: Path, tmp_path: Path, caplog) -> None:
    out = tmp_path / "results"
    args = ["evaluate", str(dataset), "--source", "art", "--target", "office", "--split", "given",
            "--methods", "item-knn", "--output", str(out)]
    caplog.set_level("INFO")
    assert main([*args, "--tuning-budget", "1"]) == 0
    assert "item-knn: setting 1/1" in caplog.text and "setting 2/" not in caplog.text
    report = json.loads((out / "art-office.json").read_text())
    assert len(report["methods"]["item-knn"]["notes"]["trials"]) == 1
    caplog.clear()
    assert main([*args, "--tuning-budget", "2"]) == 0  # another budget: not the saved result
    assert "item-knn: setting 2/2" in caplog.text and "done in an earlier run" not in caplog.text
    caplog.clear()
    assert main([*args, "--tuning-budget", "2"]) == 0
    assert "item-knn: done in an earlier run" in caplog.text
    assert main([*args, "--tuning-budget", "0"]) == 2  # no setting at all: refused


def test_a_result_of_other_code_computes_again(dataset: Path, tmp_path: Path, caplog, monkeypatch) -> None:
    """A saved row is keyed by the sources that fit it: after the baselines' code changes,
    item kNN is fitted again (a stale row read back would describe code that is gone)."""
    from multimodal_interest import experiment

    args = ["evaluate", str(dataset), "--source", "art", "--target", "office", "--split", "given",
            "--methods", "item-knn", "--output", str(tmp_path / "results"), "--tuning-budget", "1"]
    assert experiment.code_digest("baselines") != experiment.code_digest("training")
    assert main(args) == 0
    real = experiment.code_digest
    monkeypatch.setattr(experiment, "code_digest", lambda *parts: real(*parts) + ("x" if "baselines" in parts else ""))
    caplog.set_level("INFO")
    assert main(args) == 0
    assert "item-knn: saved with other data, settings or code; computed again" in caplog.text
    assert "item-knn: fitting" in caplog.text and "done in an earlier run" not in caplog.text
    caplog.clear()
    assert main(args) == 0  # the same code again: read back
    assert "item-knn: done in an earlier run" in caplog.text
