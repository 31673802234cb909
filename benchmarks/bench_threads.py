"""Two `mmi train` processes at once: torch's default threads vs the new default.

A: each process with torch's default, one thread per core (``--threads <cores>``, what
   torch did before threads.py). B: each process with the new default for two processes
   launched together (``LOCAL_WORLD_SIZE=2``, as ``accelerate launch`` / ``torchrun`` set it):
   cores // 2 threads. Both processes of a pair start together on the same data (a real
   Amazon Art/Office sample, ids only); steps/s per process = steps / training seconds from
   its run's log.jsonl (validation included). Other jobs share this machine, so A and B run
   as interleaved pairs (A, B, A, B, ...) and the ratio B/A is taken per pair.

    .venv/bin/python benchmarks/bench_threads.py --workdir /tmp/bench_threads --pairs 2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, SHARED_DATA, machine, markdown_table

sys.path.insert(0, str(REPO / "tests"))
from newcomer_sample import write_sample  # noqa: E402

from multimodal_interest.threads import available_cores  # noqa: E402

SETTINGS = ["--set", "item_ids=true", "--set", "epochs=1", "--set", "min_epoch_steps=30",
            "--set", "patience=1"]


def dataset(work: Path) -> Path:
    data = work / "data"
    if not data.is_dir():
        files = write_sample(SHARED_DATA, work / "csv", n_train=800, n_valid=100, n_test=100)
        subprocess.run([sys.executable, "-m", "multimodal_interest.cli", "-q", "import", "csv",
                        str(files["interactions"]), str(data), "--split-column", "split"],
                       check=True, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL)
    return data


def pair(data: Path, out: Path, variant: str) -> list[float]:
    """Steps/s of each of two `mmi train` processes started together."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "LOCAL_WORLD_SIZE")}
    env["PYTHONPATH"] = str(REPO)
    extra = ["--threads", str(available_cores())] if variant == "A" else []
    if variant == "B":
        env["LOCAL_WORLD_SIZE"] = "2"
    procs = []
    for i in range(2):
        run = out / f"{variant}{i}"
        cmd = [sys.executable, "-m", "multimodal_interest.cli", "-q", "train", str(data), "--source", "art",
               "--target", "office", "--split", "given", "--output", str(run), "--no-resume", *SETTINGS, *extra]
        procs.append((run, subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))
    rates = []
    for run, proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(err.decode()[-3000:])
        last = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
        rates.append(last["step"] / last["seconds"])
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--pairs", type=int, default=2, help="A/B pairs (default 2)")
    args = ap.parse_args()
    data = dataset(args.workdir)
    rows, ratios = [], []
    for k in range(args.pairs):
        a = pair(data, args.workdir / f"runs{k}", "A")
        b = pair(data, args.workdir / f"runs{k}", "B")
        ratios.append(sum(b) / sum(a))
        rows.append([k + 1, " / ".join(f"{r:.2f}" for r in a), " / ".join(f"{r:.2f}" for r in b),
                     f"{ratios[-1]:.2f}x"])
        print(rows[-1], flush=True)
    print(f"\n{machine()}; {available_cores()} cores available; {time.strftime('%Y-%m-%d')}\n")
    print(markdown_table(["pair", f"A: {available_cores()} threads each, steps/s (2 processes)",
                          f"B: new default ({max(1, available_cores() // 2)} each), steps/s",
                          "B/A (summed steps/s)"], rows))
    print(f"\nmedian B/A: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
