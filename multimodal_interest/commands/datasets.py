"""``mmi datasets``: the registered datasets, where they come from, which are cached."""
from __future__ import annotations

import argparse

from multimodal_interest.data.registry import cache_root, cached_path, list_datasets


def build_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", help="dataset cache (default: $MMI_CACHE or "
                                       "~/.cache/multimodal-interest/datasets)")


def run(args: argparse.Namespace) -> int:
    print(f"cache: {cache_root(args.root)}\n")
    print("| name | platforms | source | cached | about |\n|---|---|---|---|---|")
    for entry in list_datasets():
        kind = "SYNTHETIC" if entry.synthetic else "real"
        source = ("package index" if entry.fetch else entry.url or "--from-dir only")
        cached = "yes" if cached_path(entry.name, args.root) else "no"
        print(f"| {entry.name} | {kind} | {source} | {cached} | {entry.description} |")
    return 0
