"""``mmi validate DATASET|CATALOG``: check a dataset folder or one catalog file; print every
problem, or its statistics."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from multimodal_interest.catalog import MAX_TEXT_CHARS, Catalog, CatalogError
from multimodal_interest.data.dataset import CrossPlatformDataset
from multimodal_interest.data.errors import DatasetError
from multimodal_interest.data.registry import resolve
from multimodal_interest.data.stats import format_stats


def build_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset folder, the name of a registered dataset, or "
                                        "one catalog file (.csv, .tsv, .parquet, .jsonl) as "
                                        "`mmi embed` reads it")
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")


def run(args: argparse.Namespace) -> int:
    if Path(args.dataset).is_file():
        return validate_catalog(Path(args.dataset))
    try:
        dataset = CrossPlatformDataset.load(resolve(args.dataset))
        splits = {name: dataset.split(name) for name in dataset.splits()}
    except DatasetError as exc:  # every problem, not just the first 40 of the message
        print("\n".join([exc.headline] + [f"  {p}" for p in exc.problems]))
        return 1
    stats = dataset.stats()
    stats["split users"] = {name: split_users(dataset, split) for name, split in splits.items()}
    print(json.dumps(stats, indent=2) if args.json else
          format_stats(stats) + "\n\n" + format_split_users(stats["split users"]))
    return 0


def split_users(dataset: CrossPlatformDataset, split) -> dict[str, int]:
    """How many users a split holds: valid, test (each counted once), and training users
    (every other user of the dataset)."""
    counts = split.counts()
    listed = split.users["user_id"].nunique()
    return {"train": dataset.n_users - listed, **counts}


def format_split_users(counts: dict[str, dict[str, int]]) -> str:
    lines = ["| split | train users | valid users | test users |", "|---|---|---|---|"]
    lines += [f"| {name} | {c['train']:,} | {c['valid']:,} | {c['test']:,} |" for name, c in counts.items()]
    return "\n".join(lines)


def validate_catalog(path: Path) -> int:
    """The checks ``mmi embed CATALOG`` makes (ids, text cells, media paths and files),
    without encoding; 1 when any item would be skipped or the file cannot be used."""
    try:
        catalog = Catalog.read(path)
    except CatalogError as exc:
        print(exc)
        return 1
    problems = catalog.check()
    print(f"{path}: {len(catalog.items)} rows, {len(catalog.usable)} items, "
          f"{len(problems)} problem(s)")
    for problem in problems:
        print(f"  {problem}")
    if catalog.truncated:
        print(f"  {len(catalog.truncated)} item(s) with text over {MAX_TEXT_CHARS:,} characters "
              "(cut to that length when embedded)")
    return 1 if problems else 0
