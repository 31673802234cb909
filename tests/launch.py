"""Run a script under ``accelerate launch`` with two CPU processes, as a user would."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A loopback port nothing listens on now (the rendezvous port of this launch)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch(*args: str, num_processes: int = 2, timeout: int = 600) -> subprocess.CompletedProcess:
    """``accelerate launch --multi_gpu --num_processes N args...``; a failure shows the
    processes' own output, not only their exit status."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1",
           "--num_processes", str(num_processes), "--main_process_port", str(free_port()),
           "--mixed_precision", "no", "--dynamo_backend", "no", *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode:
        raise AssertionError(f"{' '.join(cmd)}\nexited {out.returncode}\n--- stdout\n{out.stdout[-4000:]}"
                             f"\n--- stderr\n{out.stderr[-8000:]}")
    return out
