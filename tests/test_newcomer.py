"""README's "Your own data" walk, as a newcomer runs it: plain CSVs of a real Amazon Art/Office
sample -> mmi import csv -> validate -> embed (the packaged MiniLM) -> train -> evaluate ->
export-index -> serve, each command as README shows it (tiny training settings)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd

from launch import free_port
from multimodal_interest.cli import main
from newcomer_sample import write_sample

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "epochs=2", "--set", "dim=32", "--set", "n_heads=2", "--set", "min_epoch_steps=4",
        "--set", "batch_size=32"]


def mmi(capsys, *args: str) -> str:
    assert main(list(args)) == 0, capsys.readouterr()
    return capsys.readouterr().out


def test_newcomer_walk(shared_data: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_sample(shared_data, tmp_path, n_train=30, n_valid=8, n_test=8, max_items=6)
    out = mmi(capsys, "-q", "import", "csv", "interactions.csv", "data/mine", "--items", "art=items_art.csv",
              "--items", "office=items_office.csv", "--split-column", "split")
    assert "text column(s) title, attributes" in out and "column(s) split kept" in out
    assert "mmi train data/mine --source art --target office --split given" in out  # what to run next
    rows = pd.read_csv("interactions.csv", dtype=str)
    first = rows[rows["user"] == rows["user"].iloc[0]].astype({"position": int}).sort_values("position")

    out = mmi(capsys, "-q", "validate", "data/mine")
    assert "| given | 30 | 8 | 8 |" in out  # the split as handed over: 30 train, 8 valid, 8 test users

    mmi(capsys, "-q", "embed", "data/mine", "--store", "store/")
    mmi(capsys, "-q", "train", "data/mine", "--source", "art", "--target", "office", "--split", "given",
        "--store", "store/", "--output", "runs/art-office", *TINY)
    assert (tmp_path / "runs/art-office/model/manifest.json").is_file()
    out = mmi(capsys, "-q", "evaluate", "data/mine", "--source", "art", "--target", "office", "--split",
              "given", "--store", "store/", "--model", "runs/art-office", "--methods",
              "interest-model,popularity,item-knn", "--output", "results/")
    assert "| interest-model |" in out and "| item-knn |" in out
    report = json.loads((tmp_path / "results/art-office.json").read_text())
    test_users = report["test_users"]
    assert 0 < test_users <= 8  # the given test users who have art and office items

    mmi(capsys, "-q", "export-index", "--model", "runs/art-office", "--dataset", "data/mine",
        "--store", "store/", "--output", "bundles/art-office")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen([sys.executable, "-m", "multimodal_interest.cli", "-q", "serve", "--model",
                               "bundles/art-office", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
                time.sleep(0.2)
        history = first.loc[first["platform"] == "art", "item"].tolist()
        body = json.dumps({"history": history, "source": "art", "platform": "office", "k": 5}).encode()
        request = urllib.request.Request(f"{url}/recommend", body, {"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert len(answer["items"]) == 5
    office = set(pd.read_csv("items_office.csv", dtype=str)["item"])
    assert all(item["item_id"] in office for item in answer["items"])
