"""Serving: latency of one user's recommendations over 20k and 1M items, in-process and over
HTTP; requests/s; memory of a 1M-item index; recall@10 of IVF and HNSW against exact.

    PYTHONPATH=. python benchmarks/bench_serving.py [--sizes 20000,1000000] [--seconds 20]
    PYTHONPATH=. python benchmarks/bench_serving.py --http-only --sizes 20000 --kind linear --baseline ../main
    PYTHONPATH=. python benchmarks/bench_serving.py --http-only --no-http --sizes 20000 --kind linear --soak 100000

What runs: a bundle of a model (dim 128, 2 layers, 4 heads, attention pooling, window 50,
384-d text features for the 20,000 history-platform items) with **random weights** -- latency
depends on the architecture, not on the values -- and **synthetic target item vectors** of the
model's width: a mixture of 1,000 Gaussian clusters, unit length, biases ~ N(0, 0.5^2),
scale 20. One request = a 50-item history -> interest vector -> query -> top-10
(``Recommender.recommend``), with and without explanations (leave-one-out, 3 per item).
Recall@10 is measured on 500 queries drawn like the items (a cluster centre plus noise), and
on isotropic random vectors and queries (no structure: the worst case for IVF and HNSW);
recall depends on the data, so ``mmi export-index --index ivf,hnsw`` measures it again on a
real bundle with real users' queries and records it in the manifest.

HTTP (``--http-only``: only this): ``mmi serve`` started by this script on 127.0.0.1 (a
separate process; ``--workers`` 1 and N), then ``benchmarks/http_load.py`` -- a process of
its own, ``--concurrency`` keep-alive connections on raw asyncio sockets -- posting for
``--seconds`` after 2 s of warm-up, with and without explanations. Client and server share
this machine's cores, so each row also gives the CPU each side spent per request (the
server's, summed over its processes, is the figure the load of other jobs disturbs least)
and the server's memory before and after (RSS summed over processes counts the pages the
workers share in each of them; PSS splits them). ``--baseline DIR``: a checkout of the code
to compare with (e.g. ``main``), served with the same number of workers just before this
code, row by row under the same load. ``--soak N``: this code's server (``--workers``, no
explanations) under load until it has answered ``N`` requests, its memory after each round
of ``--seconds`` (a leak shows as a climb). ``--kind linear`` serves the linear model (``mmi train``'s default) of the same width
instead of the transformer. Every request runs on one thread (torch and FAISS
single-threaded, as ``mmi serve`` runs them). Exact torch is the reference for every ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import psutil
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import REPO, machine, markdown_table  # noqa: E402
from fusion import FusionConfig, InterestConfig, InterestModel, TargetConfig  # noqa: E402
from multimodal_interest.bundle import Bundle, model_fingerprint  # noqa: E402
from multimodal_interest.recommend import Ask, Recommender  # noqa: E402
from multimodal_interest.retrieval import ExactRetriever, FaissRetriever, TargetItems  # noqa: E402

HISTORY, N_SOURCE, TEXT, DIM, CLUSTERS = 50, 20_000, 384, 128, 1000


def clustered(n: int, centres: torch.Tensor, noise: float, seed: int) -> torch.Tensor:
    """``[n, D]`` unit vectors: a random centre each, plus Gaussian noise (in chunks)."""
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(n, centres.shape[1])
    for lo in range(0, n, 1 << 17):
        m = min(1 << 17, n - lo)
        c = centres[torch.randint(len(centres), (m,), generator=g)]
        out[lo:lo + m] = F.normalize(c + noise * torch.randn(m, centres.shape[1], generator=g), dim=1)
    return out


def make_bundle(folder: Path, n_items: int, kind: str = "transformer") -> tuple[Bundle, torch.Tensor]:
    """A model of the measured size (random weights) a -> b, and ``n_items`` synthetic b items:
    the transformer as measured in BENCHMARKS.md, or the linear model (``mmi train``'s default)."""
    torch.manual_seed(0)
    shape = dict(n_layers=2, pooling="attention") if kind == "transformer" else {}
    fusion = FusionConfig(modalities={"text": TEXT}, platforms=["a"], kind=kind, dim=DIM, max_len=HISTORY, **shape)
    model = InterestModel(InterestConfig(fusion, {"b": TargetConfig(n_items)}), {"text": "synthetic"})
    model.save_pretrained(folder / "model")
    model.set_item_features("a", {"text": torch.randn(N_SOURCE, TEXT)})
    model.eval().requires_grad_(False)
    centres = torch.randn(CLUSTERS, DIM, generator=torch.Generator().manual_seed(1))
    items = TargetItems(clustered(n_items, centres, 0.8, seed=2),
                        0.5 * torch.randn(n_items, generator=torch.Generator().manual_seed(3)), 20.0)
    ids = {"a": [f"a{i}" for i in range(N_SOURCE)], "b": [f"b{i}" for i in range(n_items)]}
    bundle = Bundle(model, folder / "model", model_fingerprint(folder / "model"), ids, {"b": items},
                    {"dataset": "synthetic (bench_serving.py)"})
    return bundle, clustered(500, centres, 0.8, seed=4)


def percentiles(ms: list[float]) -> tuple[str, str]:
    return f"{np.percentile(ms, 50):.2f}", f"{np.percentile(ms, 99):.2f}"


def in_process(bundle: Bundle, indexes: dict, n_requests: int, rng: np.random.Generator) -> list[list]:
    """p50/p99 of ``recommend`` per index, explanations off and on; ratio vs exact."""
    rows, reference = [], None
    for kind, retriever in indexes.items():
        rec = Recommender(bundle, "exact")
        rec.retrievers["b"], rec.index = retriever, kind  # the index under test
        for explain in (0, 3):
            ms = []
            for r in range(n_requests + 3):
                history = [f"a{i}" for i in rng.choice(N_SOURCE, HISTORY, replace=False)]
                t = time.perf_counter()
                rec.recommend(history, source="a", platform="b", k=10, explain=explain)
                if r >= 3:  # warm-up left out
                    ms.append((time.perf_counter() - t) * 1e3)
            p50, p99 = percentiles(ms)
            if kind == "exact" and explain == 0:
                reference = float(p50)
            ratio = f"{reference / float(p50):.2f}x" if explain == 0 else ""
            rows.append([f"{len(bundle.targets['b']):,}", kind, explain, len(ms), p50, p99, ratio])
    return rows


def batched(bundle: Bundle, retriever, rng: np.random.Generator, rounds: int = 20) -> list[list]:
    """CPU ms per request of ``Recommender.recommend_many`` over batches of 1, 8 and 32
    requests (``flat`` index), explanations off and on; ratio vs the batch of one."""
    rec = Recommender(bundle, "flat")
    rec.retrievers["b"] = retriever
    rows, every = [], rounds
    for explain in (0, 3):
        reference, rounds = None, every if explain == 0 else max(every // 4, 2)  # the transformer's: slow
        for size in (1, 8, 32):
            asks = [Ask([f"a{i}" for i in rng.choice(N_SOURCE, HISTORY, replace=False)], platform="b", source="a",
                        k=10, explain=explain) for _ in range(size * rounds)]
            rec.recommend_many(asks[:size])  # warm-up
            t = time.process_time()
            for r in range(rounds):
                rec.recommend_many(asks[r * size:(r + 1) * size])
            ms = (time.process_time() - t) * 1e3 / (size * rounds)
            reference = reference or ms
            rows.append([f"{len(bundle.targets['b']):,}", explain, size, size * rounds, f"{ms:.3f}",
                         f"{reference / ms:.2f}x"])
    return rows


@contextmanager
def build_threads():
    """Index builds use every core; queries one thread (as the server runs them)."""
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(1)


def build(kind: str, items: TargetItems, bundle: Bundle | None = None) -> tuple[FaissRetriever, float]:
    """An index (the bundle's own, kept for its save, when given) and its build time."""
    with build_threads():
        t = time.perf_counter()
        index = bundle.retriever("b", kind) if bundle is not None else FaissRetriever.build(kind, items)
        return index, time.perf_counter() - t


def recall_rows(n: int, data: str, items: TargetItems, queries: torch.Tensor, indexes: dict,
                args) -> list[list]:
    """Recall@10 of IVF and HNSW against exact, at three search settings each."""
    _, truth = ExactRetriever(items).search(queries, 10)
    rows = []
    for kind, knobs in (("ivf", (8, 32, 128)), ("hnsw", (32, 128, 512))):
        if kind == "hnsw" and n > args.hnsw_max:
            continue
        retriever = indexes[kind] if kind in indexes else build(kind, items)[0]
        for knob in knobs:
            retriever.set_search_params(nprobe=knob, ef_search=knob)
            t = time.perf_counter()
            _, found = retriever.search(queries, 10)
            ms = (time.perf_counter() - t) * 1e3 / len(queries)
            recall = np.mean([len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(found, truth)])
            rows.append([f"{n:,}", data, kind, f"{'nprobe' if kind == 'ivf' else 'ef_search'}={knob}",
                         f"{recall:.4f}", f"{ms:.2f}"])
        retriever.set_search_params(nprobe=32, ef_search=128)  # the defaults, for what follows
    return rows


def isotropic(n: int, bias: torch.Tensor) -> tuple[TargetItems, torch.Tensor]:
    """The worst case for approximate search: item and query directions with no structure."""
    g = torch.Generator().manual_seed(5)
    return (TargetItems(F.normalize(torch.randn(n, DIM, generator=g), dim=1), bias, 20.0),
            F.normalize(torch.randn(500, DIM, generator=g), dim=1))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, folder: Path, kind: str, port: int, workers: int) -> tuple[subprocess.Popen, float]:
    """``mmi serve`` of the code in ``root`` (``--workers`` only when over 1: code older than
    2026-12-07 has no such option), and its start-up time."""
    import httpx

    env = {**os.environ, "PYTHONPATH": str(root)}
    cmd = [sys.executable, "-m", "multimodal_interest.cli", "-q", "serve", "--model", str(folder),
           "--index", kind, "--port", str(port)] + (["--workers", str(workers)] if workers > 1 else [])
    server = subprocess.Popen(cmd, env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.perf_counter()
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"server exited: {server.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server, time.perf_counter() - t0
        except httpx.TransportError:
            time.sleep(0.5)


def family(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def server_cpu(pid: int) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in family(pid))


def server_memory(pid: int) -> tuple[float, float]:
    """MiB: resident (RSS, summed over processes: shared pages counted in each) and
    proportional (PSS: each shared page split between its sharers) of the server's processes."""
    info = [p.memory_full_info() for p in family(pid)]
    return sum(i.rss for i in info) / 2**20, sum(i.pss for i in info) / 2**20


def over_http(name: str, root: Path, folder: Path, kind: str, explain: int, connections: int, workers: int,
              n: int, args, bodies: Path) -> list:
    """One row: ``benchmarks/http_load.py`` (a process of its own, raw asyncio sockets,
    keep-alive) against ``mmi serve`` of the code in ``root`` for ``--seconds``."""
    port = free_port()
    server, startup = start_server(root, folder, kind, port, workers)
    try:
        client = [sys.executable, str(REPO / "benchmarks" / "http_load.py"), "--url",
                  f"http://127.0.0.1:{port}/recommend", "--bodies", str(bodies), "--concurrency", str(connections),
                  "--seconds", str(args.seconds), "--warmup", "2"]
        proc = subprocess.Popen(client, stdout=subprocess.PIPE, text=True)
        time.sleep(2)  # the client's warm-up
        cpu0, mem0 = server_cpu(server.pid), server_memory(server.pid)
        out, _ = proc.communicate()
        cpu1, mem1 = server_cpu(server.pid), server_memory(server.pid)
        result = json.loads(out)
    finally:
        server.terminate()
        server.wait(timeout=60)
    count = max(result["requests"], 1)
    return [name, f"{n:,}", kind, explain, workers, connections, result["requests"], f"{result['req_per_s']:.0f}",
            result["p50_ms"], result["p99_ms"], result["errors"], f"{(cpu1 - cpu0) / count * 1e3:.2f}",
            f"{result['client_cpu_s'] / count * 1e3:.2f}", f"{mem0[0]:,.0f} -> {mem1[0]:,.0f}",
            f"{mem1[1]:,.0f}", f"{startup:.1f}"]


def write_bodies(path: Path, explain: int, rng: np.random.Generator) -> Path:
    """256 request bodies: a 50-item history each, top-10, ``explain`` items named per item."""
    path.write_text(json.dumps([{"platform": "b", "k": 10, "source": "a", "explain": explain,
                                 "history": [f"a{i}" for i in rng.choice(N_SOURCE, HISTORY, replace=False)]}
                                for _ in range(256)]))
    return path


def http_rows(folder: Path, n: int, args, rng: np.random.Generator, tmp: Path) -> list[list]:
    """Today's code (``--baseline``) and this code, row after row under the same load, each
    with 1 and ``--workers`` processes."""
    rows = []
    for explain in (0, 3):
        bodies = write_bodies(tmp / f"bodies-{n}-{explain}.json", explain, rng)
        kind = "flat" if n <= 100_000 or explain else "ivf"
        for workers in sorted({1, args.workers}):
            if args.baseline:
                rows.append(over_http("baseline", args.baseline, folder, kind, explain, args.concurrency,
                                      workers, n, args, bodies))
            rows.append(over_http("this code", REPO, folder, kind, explain, args.concurrency, workers, n, args, bodies))
    return rows


def soak(folder: Path, n: int, args, rng: np.random.Generator, tmp: Path) -> list[list]:
    """This code's server (``--workers``, flat index, no explanations) under ``--concurrency``
    connections until ``--soak`` requests are answered, in rounds of ``--seconds``; one row
    per round: requests so far, req/s, p99, errors, and the server's memory after it."""
    bodies = write_bodies(tmp / f"bodies-soak-{n}.json", 0, rng)
    port = free_port()
    server, _ = start_server(REPO, folder, "flat", port, args.workers)
    rows, total = [], 0
    try:
        time.sleep(2)
        rss, pss = server_memory(server.pid)
        rows.append([0, "", "", "", f"{rss:,.0f}", f"{pss:,.0f}"])
        while total < args.soak:
            out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "http_load.py"), "--url",
                                  f"http://127.0.0.1:{port}/recommend", "--bodies", str(bodies), "--concurrency",
                                  str(args.concurrency), "--seconds", str(args.seconds), "--warmup", "0"],
                                 stdout=subprocess.PIPE, text=True, check=True).stdout
            result = json.loads(out)
            total += result["requests"]
            rss, pss = server_memory(server.pid)
            rows.append([f"{total:,}", f"{result['req_per_s']:.0f}", result["p99_ms"], result["errors"],
                         f"{rss:,.0f}", f"{pss:,.0f}"])
    finally:
        server.terminate()
        server.wait(timeout=60)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="20000,1000000")
    p.add_argument("--requests", type=int, default=200, help="in-process requests per index (1M exact/flat: a fifth)")
    p.add_argument("--seconds", type=float, default=20.0, help="HTTP load per server")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--hnsw-max", type=int, default=100_000, help="build HNSW only up to this many items (slow)")
    p.add_argument("--no-http", action="store_true")
    p.add_argument("--http-only", action="store_true", help="only the HTTP rows (no in-process, recall or memory)")
    p.add_argument("--kind", default="transformer", choices=("transformer", "linear"), help="the model served")
    p.add_argument("--workers", type=int, default=2, help="`mmi serve --workers` of the last HTTP row per setting")
    p.add_argument("--baseline", type=Path, help="a checkout of today's code (e.g. `git worktree add /tmp/main "
                                                 "main`): its `mmi serve` measured in the same run, row by row")
    p.add_argument("--soak", type=int, default=0, help="after the HTTP rows: this code's server (`--workers`, no "
                                                       "explanations) until this many requests, memory per round")
    args = p.parse_args(argv)
    import faiss

    torch.set_num_threads(1)  # one thread per request, as `mmi serve` runs them
    faiss.omp_set_num_threads(1)
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at start\n")
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    lat, batch_rows, rec_rows, mem, http, soaked = [], [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            folder = Path(tmp) / f"bundle-{n}"
            bundle, queries = make_bundle(Path(tmp) / f"src-{n}", n, args.kind)
            items = bundle.targets["b"]
            indexes, built = {"exact": ExactRetriever(items)}, {}
            for kind in ("flat", "ivf", "hnsw"):
                if (kind != "hnsw" or n <= args.hnsw_max) and (kind == "flat" or n > 100_000 or not args.http_only):
                    indexes[kind], built[kind] = build(kind, items, bundle)
            if not args.http_only:
                lat += in_process(bundle, indexes, args.requests if n <= 100_000 else args.requests // 5, rng)
                batch_rows += batched(bundle, indexes["flat"], rng)
                rec_rows += recall_rows(n, "clustered", items, queries, indexes, args)
                rec_rows += recall_rows(n, "isotropic", *isotropic(n, items.bias), {}, args)
            with build_threads():
                t = time.perf_counter()
                bundle.save(folder, indexes=tuple(built))
                saved = time.perf_counter() - t
            for kind in built:
                size = (folder / "index" / f"b.{kind}.faiss").stat().st_size / 2**20
                mem.append([f"{n:,}", kind, f"{size:,.0f}", f"{built[kind]:.1f}"])
            mem.append([f"{n:,}", "bundle item vectors (safetensors, held in RAM)",
                        f"{(folder / 'targets' / 'b.safetensors').stat().st_size / 2**20:,.0f}", f"{saved:.1f} (save)"])
            del indexes, bundle
            if not args.no_http:
                http += http_rows(folder, n, args, rng, Path(tmp))
            if args.soak:
                soaked += [[f"{n:,}", *row] for row in soak(folder, n, args, rng, Path(tmp))]
    if not args.http_only:
        print("## In-process: one user, 50-item history, top-10 (ms per request)\n")
        print(markdown_table(["items", "index", "explain", "requests", "p50 ms", "p99 ms", "speed vs exact (p50)"], lat))
        print("\n## In-process, in batches: `Recommender.recommend_many` (flat), CPU ms per request\n")
        print(markdown_table(["items", "explain", "batch", "requests", "CPU ms/request", "speed vs batch of 1"],
                             batch_rows))
        print("\n## Recall@10 against exact (500 synthetic queries; clustered as above, and isotropic)\n")
        print(markdown_table(["items", "vectors", "index", "setting", "recall@10", "ms/query"], rec_rows))
        print(f"\n## Index memory (file size = in-memory size of the index; built on {os.cpu_count()} threads)\n")
        print(markdown_table(["items", "index", "MiB", "build s"], mem))
    if http:
        print(f"\n## HTTP on 127.0.0.1: {args.kind} model, {args.seconds:.0f} s per row after 2 s of warm-up "
              f"(client and server on this machine's {os.cpu_count()} cores)\n")
        print(markdown_table(["code", "items", "index", "explain", "workers", "connections", "requests", "req/s",
                              "p50 ms", "p99 ms", "errors", "server CPU ms/req", "client CPU ms/req",
                              "server RSS MiB (start -> end)", "server PSS MiB", "startup s"], http))
    if soaked:
        print(f"\n## Memory under load: this code, {args.workers} workers, {args.concurrency} connections, "
              f"no explanations, rounds of {args.seconds:.0f} s\n")
        print(markdown_table(["items", "requests answered", "req/s", "p99 ms", "errors",
                              "server RSS MiB (summed)", "server PSS MiB"], soaked))
    print(f"\ncommand: PYTHONPATH=. python benchmarks/bench_serving.py {' '.join(argv or sys.argv[1:])}; "
          f"{time.perf_counter() - start:.0f} s; load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
