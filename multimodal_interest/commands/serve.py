"""``mmi serve --model BUNDLE``: the HTTP service (FastAPI + uvicorn) on 127.0.0.1:8000 by
default; OpenAPI docs at ``/docs``. See ``docs/serving.md``.

Each process computes on one thread (torch and FAISS run single-threaded: on a busy
machine their thread pools wait on each other far longer than one query takes), the
requests that arrived meanwhile scored together as one batch; ``--workers N`` forks N processes after loading the bundle once (they share
its memory and one listening socket): one per core serves the most."""
from __future__ import annotations

import argparse
from pathlib import Path

from multimodal_interest.data.dataset import CrossPlatformDataset
from multimodal_interest.data.registry import resolve
from multimodal_interest.recommend import Recommender
from multimodal_interest.retrieval import KINDS
from multimodal_interest.server import MAX_BODY_BYTES, create_app


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="bundle folder (`mmi export-index`)")
    p.add_argument("--index", default="flat", choices=KINDS, help="retrieval (default flat)")
    p.add_argument("--dataset", help="dataset whose user ids requests may name (default: none)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES, help="larger requests get 413")
    p.add_argument("--workers", type=int, default=1,
                   help="processes serving at once, forked after the bundle is loaded (default 1; "
                        "one per core serves the most)")


def run(args: argparse.Namespace) -> int:
    import faiss
    import torch

    from multimodal_interest.serve_workers import serve

    torch.set_num_threads(1)  # one thread per request, in the parent before any fork
    faiss.omp_set_num_threads(1)
    dataset = CrossPlatformDataset.load(resolve(args.dataset)) if args.dataset else None
    app = create_app(Recommender.load(args.model, args.index, dataset), args.max_body_bytes)
    return serve(app, args.host, args.port, args.workers, log_level="warning" if not args.progress else "info")
