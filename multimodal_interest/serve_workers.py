"""Run an ASGI app under uvicorn in one process or in ``workers`` forked processes that
share one listening socket and everything loaded before the fork.

The parent loads the model, the index and the item tables once, binds the socket, then forks:
each worker is a copy-on-write view of the parent's memory (the bundle's arrays are never
written, so they stay shared pages) and runs its own event loop, one batch of requests
computed at a time; the kernel hands each new connection to a worker that is waiting in ``accept``. The
parent only waits, and passes SIGINT/SIGTERM on to the workers (each finishes its answers in
flight and stops). Fork is POSIX only: elsewhere ``workers`` must be 1.

Before serving, everything loaded so far (the bundle, torch, the app: Python objects that
live as long as the process) is moved out of the garbage collector's reach (``gc.freeze``):
a full collection walked them all, pauses of about 200 ms every few seconds under load
(``benchmarks/serve_phases.py``), which made the slowest 1% of answers wait for it; and a frozen object's header is never
written again, so a forked worker leaves those pages shared. The young generation is
collected after 10,000 net allocations (Python's default is 700: an answer allocates
hundreds of objects, nearly all freed by reference counting, and 700 made a collection
every few requests).
"""
from __future__ import annotations

import gc
import os
import signal

import uvicorn

from multimodal_interest.http_protocol import HEADER_TIMEOUT, header_deadline, http_protocol

YOUNG_GENERATION = 10_000  # net allocations between collections of the youngest generation


def uvicorn_config(app, host: str, port: int, header_timeout: float = HEADER_TIMEOUT,
                   log_level: str = "warning") -> uvicorn.Config:
    """uvicorn's settings for ``app``: its fastest HTTP/1.1 protocol installed, with a
    deadline of ``header_timeout`` seconds on each request's headers."""
    return uvicorn.Config(app, host=host, port=port, log_level=log_level,
                          http=header_deadline(http_protocol(), header_timeout))


def freeze_loaded_objects() -> None:
    """Everything allocated so far out of the collector's reach; a larger young generation
    (module docstring)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION, *gc.get_threshold()[1:])


def serve(app, host: str, port: int, workers: int = 1, header_timeout: float = HEADER_TIMEOUT,
          log_level: str = "warning") -> int:
    """Serve ``app`` until SIGINT/SIGTERM; 0, or the first failing worker's exit status."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if workers > 1 and not hasattr(os, "fork"):
        raise ValueError("several workers need os.fork (POSIX); on this system run one")
    config = uvicorn_config(app, host, port, header_timeout, log_level)
    freeze_loaded_objects()
    if workers == 1:
        uvicorn.Server(config).run()
        return 0
    sock = config.bind_socket()
    children: list[int] = []

    def stop(signum, frame) -> None:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGINT, stop)  # before the first fork: no signal finds the parent unprepared
    signal.signal(signal.SIGTERM, stop)
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # a worker: the default handlers until uvicorn sets its own
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            code = 1
            try:
                uvicorn.Server(config).run(sockets=[sock])
                code = 0
            finally:
                os._exit(code)
        children.append(pid)
    sock.close()
    status, running = 0, set(children)
    while running:
        pid, code = os.wait()
        running.discard(pid)
        code = os.waitstatus_to_exitcode(code)  # -N: ended by signal N
        if code not in (0, -signal.SIGTERM, -signal.SIGINT) and status == 0:  # uvicorn stops by re-raising these
            status = code if code > 0 else 128 - code
            stop(None, None)  # one worker failed: stop the others
    return status
