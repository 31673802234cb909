"""A lean HTTP/1.1 load generator: ``--concurrency`` keep-alive connections on raw asyncio
sockets, each posting pre-encoded JSON bodies back to back for ``--seconds``; prints one JSON
line (requests, errors, req/s, p50/p99 ms, the client's own CPU seconds).

    python benchmarks/http_load.py --url http://127.0.0.1:8000/recommend --bodies bodies.json \
        [--concurrency 32] [--seconds 10] [--warmup 2]

Run it as a process of its own (``bench_serving.py`` does), so that the server's and the
client's CPU are counted apart: on a shared machine a slow client (httpx spends about a
millisecond of CPU per request) measures itself, not the server. Each request is written in
one ``write``; a response is read by its ``content-length`` (the server never chunks JSON).
Status other than 200, or a connection the server closed, counts as an error.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from urllib.parse import urlsplit

import numpy as np


def request_bytes(host: str, path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> int:
    """The status of one response, its body read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def run(url: str, bodies: list[bytes], concurrency: int, seconds: float) -> tuple[list[float], int]:
    parts = urlsplit(url)
    requests = [request_bytes(parts.netloc, parts.path, b) for b in bodies]
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def connection(w: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        i = w
        try:
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                writer.write(requests[i % len(requests)])
                try:
                    status = await read_response(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
                    continue
                latencies.append((time.perf_counter() - t) * 1e3)
                errors += status != 200
                i += concurrency
        finally:
            writer.close()

    await asyncio.gather(*(connection(w) for w in range(concurrency)))
    return latencies, errors


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--bodies", required=True, help="a JSON file: a list of request bodies")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    args = p.parse_args(argv)
    with open(args.bodies, encoding="utf-8") as f:
        bodies = [json.dumps(b).encode() for b in json.load(f)]
    if args.warmup > 0:
        asyncio.run(run(args.url, bodies, args.concurrency, args.warmup))
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    latencies, errors = asyncio.run(run(args.url, bodies, args.concurrency, args.seconds))
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    print(json.dumps({"requests": len(latencies), "errors": errors, "seconds": round(wall, 2),
                      "req_per_s": round(len(latencies) / wall, 1),
                      "p50_ms": round(float(np.percentile(latencies, 50)), 2) if latencies else None,
                      "p99_ms": round(float(np.percentile(latencies, 99)), 2) if latencies else None,
                      "client_cpu_s": round(cpu, 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
