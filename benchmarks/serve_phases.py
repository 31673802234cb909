"""Where a served request's CPU goes: one ``mmi serve`` worker under ``benchmarks/http_load.py``,
its thread CPU split by phase, its batch sizes and its garbage collections, with and without
``gc.freeze`` (``multimodal_interest.serve_workers.freeze_loaded_objects``) in the same run.

    PYTHONPATH=. python benchmarks/serve_phases.py [--kind linear] [--items 20000] [--seconds 6]

The bundle is ``bench_serving.py``'s (random weights, synthetic items, flat index); requests
are 50-item histories, top-10, explanations off and on. The server is this script again in a
child process (``--serve``): the app of ``create_app`` with ``Recommender.prepare`` /
``score`` (and within it the encode, the search and the explanations) wrapped in CPU-time
counters, and a ``gc.callbacks`` hook timing each collection; counted from a signal sent
after 2 s of warm-up, printed as JSON when it stops. ``rest`` is the process CPU outside
``prepare`` and ``score``: HTTP, FastAPI's validation, the answer's JSON, the event loop.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import REPO, machine, markdown_table  # noqa: E402

PHASES = ("prepare", "score", "_encode_histories", "_explain")


def serve(folder: Path, port: int, freeze: bool) -> None:
    """The instrumented server (a child process); its counters as JSON on stdout at SIGTERM."""
    import faiss
    import torch
    import uvicorn

    from multimodal_interest.bundle import Bundle
    from multimodal_interest.recommend import Recommender
    from multimodal_interest.server import create_app
    from multimodal_interest.serve_workers import freeze_loaded_objects, uvicorn_config

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    rec = Recommender(Bundle.load(folder), "flat")
    cpu = dict.fromkeys((*PHASES, "search"), 0.0)

    def timed(name, call):
        def wrapper(*args, **kwargs):
            t = time.thread_time()
            try:
                return call(*args, **kwargs)
            finally:
                cpu[name] += time.thread_time() - t
        return wrapper

    for name in PHASES:
        setattr(rec, name, timed(name, getattr(rec, name)))
    rec.retrievers["b"].search = timed("search", rec.retrievers["b"].search)
    app = create_app(rec)
    if freeze:
        freeze_loaded_objects()
    pauses: list[tuple[int, float]] = []
    started = [0.0]

    def collected(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append((info["generation"], time.perf_counter() - started[0]))

    gc.callbacks.append(collected)
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    mark = {}

    def count(*_) -> None:
        mark.update(t=time.process_time(), items=app.state.batcher.items, batches=app.state.batcher.batches)
        cpu.update(dict.fromkeys(cpu, 0.0))
        pauses.clear()

    signal.signal(signal.SIGUSR1, count)
    signal.signal(signal.SIGTERM, lambda *_: setattr(server, "should_exit", True))
    server.run()
    n = max(app.state.batcher.items - mark["items"], 1)
    print(json.dumps({"requests": n, "batches": app.state.batcher.batches - mark["batches"],
                      "process_ms": (time.process_time() - mark["t"]) * 1e3 / n,
                      **{k: v * 1e3 / n for k, v in cpu.items()},
                      "gc": [[g, round(d * 1e3, 2)] for g, d in pauses]}))


def run(folder: Path, bodies: Path, freeze: bool, args) -> dict:
    from benchmarks.bench_serving import free_port

    port = free_port()
    cmd = [sys.executable, __file__, "--serve", str(folder), "--port", str(port)] + (["--freeze"] if freeze else [])
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    load = [sys.executable, str(REPO / "benchmarks" / "http_load.py"), "--url", f"http://127.0.0.1:{port}/recommend",
            "--bodies", str(bodies), "--concurrency", str(args.concurrency), "--warmup", "0"]
    try:
        for _ in range(120):  # up to a minute to start
            if subprocess.run(load + ["--seconds", "0.2"], capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
        subprocess.run(load + ["--seconds", "2"], capture_output=True, check=True)  # warm-up
        server.send_signal(signal.SIGUSR1)
        result = json.loads(subprocess.run(load + ["--seconds", str(args.seconds)], capture_output=True,
                                           text=True, check=True).stdout)
    finally:
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=60)
    return {**result, **json.loads(out.strip().splitlines()[-1])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", default="linear", choices=("transformer", "linear"))
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--freeze", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, args.freeze)
        return 0
    import numpy as np
    import torch

    from benchmarks.bench_serving import HISTORY, N_SOURCE, make_bundle

    torch.set_num_threads(1)  # as the server runs

    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at start\n")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bundle, _ = make_bundle(Path(tmp) / "src", args.items, args.kind)
        bundle.save(Path(tmp) / "bundle", indexes=("flat",))
        rng = np.random.default_rng(0)
        for explain in (0, 3):
            bodies = Path(tmp) / f"bodies-{explain}.json"
            bodies.write_text(json.dumps([{"platform": "b", "k": 10, "source": "a", "explain": explain,
                                           "history": [f"a{i}" for i in rng.choice(N_SOURCE, HISTORY, replace=False)]}
                                          for _ in range(256)]))
            for freeze in (False, True):
                r = run(Path(tmp) / "bundle", bodies, freeze, args)
                full = [d for g, d in r["gc"] if g == 2]
                rest = r["process_ms"] - r["prepare"] - r["score"]
                rows.append([explain, "yes" if freeze else "no", f"{r['req_per_s']:.0f}", r["p99_ms"], r["errors"],
                             f"{r['requests'] / max(r['batches'], 1):.1f}", f"{r['process_ms']:.3f}",
                             f"{r['prepare']:.3f}", f"{r['score']:.3f}", f"{r['_encode_histories']:.3f}",
                             f"{r['search']:.3f}", f"{r['_explain']:.3f}", f"{rest:.3f}",
                             f"{len(r['gc'])} ({sum(d for _, d in r['gc']):.0f} ms)",
                             f"{len(full)}, longest {max(full, default=0):.1f} ms"])
    print(f"## One worker, {args.kind} model, {args.items:,} items, {args.concurrency} connections, "
          f"{args.seconds:g} s per row: CPU ms per request by phase\n")
    print(markdown_table(["explain", "gc.freeze", "req/s", "p99 ms", "errors", "avg batch", "process", "prepare",
                          "score", "of which encode", "search", "explanations", "rest (HTTP, app)",
                          "collections (time)", "full collections"], rows))
    print(f"\ncommand: PYTHONPATH=. python benchmarks/serve_phases.py {' '.join(argv or sys.argv[1:])}; "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
