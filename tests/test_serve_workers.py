"""``mmi serve --workers 2``: two forked processes share one listening socket and the bundle
loaded before the fork, both answer as the recommender does in-process, and SIGTERM stops
them all."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from multimodal_interest.bundle import Bundle
from multimodal_interest.recommend import Recommender
from serving_world import train_model, write_world

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("workers")
    dataset, store = write_world(root)
    Bundle.build(train_model(dataset, store, root / "run", epochs=1), dataset, store).save(root / "bundle", ("flat",))
    return root / "bundle"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_answer_as_in_process_and_stop_on_sigterm(bundle):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    server = subprocess.Popen([sys.executable, "-m", "multimodal_interest.cli", "-q", "serve", "--model", str(bundle),
                               "--port", str(port), "--workers", "2"], env=env, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(240):
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.25)
        workers = psutil.Process(server.pid).children()
        assert len(workers) == 2
        rec = Recommender.load(bundle, "flat")
        histories = [[f"a{(7 * i + j) % 100}" for j in range(1 + i % 9)] for i in range(24)]
        for history in histories:  # a fresh connection each: the kernel spreads them
            got = httpx.post(url + "/recommend", json={"platform": "b", "source": "a", "history": history, "k": 5},
                             timeout=30).json()
            want = rec.recommend(history, source="a", platform="b", k=5)
            assert [x["item_id"] for x in got["items"]] == [x.item_id for x in want.items]
            assert [x["score"] for x in got["items"]] == pytest.approx([x.score for x in want.items], abs=1e-5)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    finally:
        if server.poll() is None:
            server.kill()
