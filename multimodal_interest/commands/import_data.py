"""``mmi import KIND SRC DST``: turn a published dataset layout, or your own tables
(``mmi import csv``), into a dataset folder."""
from __future__ import annotations

import argparse
from pathlib import Path

from multimodal_interest.data.dataset import CrossPlatformDataset
from multimodal_interest.data.importers import create_draft, list_importers
from multimodal_interest.data.importers.plain_csv import COLUMNS, GIVEN, MEDIA, SPLIT_VALUES
from multimodal_interest.data.stats import format_stats
from multimodal_interest.data.writer import write_dataset


def build_parser(parser: argparse.ArgumentParser) -> None:
    kinds = list_importers()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    columns = "\n".join(f"  {c + (f' (or {a})' if a else ''):<26} {h}" for c, (a, h) in COLUMNS.items())
    parser.epilog = (
        "kinds:\n" + "\n".join(f"  {k:<18} {h}" for k, h in kinds.items())
        + "\n\ncsv: the interactions table's columns (CSV, TSV, Parquet or JSONL):\n" + columns
        + f"\n  {'SPLIT (--split-column)':<26} {'/'.join(SPLIT_VALUES)}: the user's role, kept as "
          f"split '{GIVEN}'\n  any other column           kept as it is (the import lists them)"
        + "\ncsv: an items table (--items PLATFORM=FILE): item (or item_id), image/audio path "
          f"columns ({', '.join(sum(MEDIA.values(), ()))}; relative to the file's folder), every "
          "other column is text.\nexample:\n  mmi import csv interactions.csv data/mine "
          "--items art=items_art.csv --items office=items_office.csv --split-column split")
    parser.add_argument("kind", choices=sorted(kinds), metavar="KIND")
    parser.add_argument("src", help="the published files (folder or file, as the kind expects)")
    parser.add_argument("dst", help="new dataset folder to write (must not exist)")
    parser.add_argument("--genres", nargs=2, metavar=("A", "B"),
                        help="movielens-genres: the two genres that become platforms")
    parser.add_argument("--name", help="movielens-genres, csv: the dataset's name")
    parser.add_argument("--platform", help="recbole: the platform's name")
    parser.add_argument("--items", action="append", default=[], metavar="PLATFORM=FILE",
                        help="csv: the items table of PLATFORM (repeatable)")
    parser.add_argument("--split-column", metavar="COLUMN",
                        help=f"csv: the interactions' column of {'/'.join(SPLIT_VALUES)} values")
    parser.add_argument("--split-users", action="append", default=[], metavar="ROLE=FILE",
                        help="csv: the valid or test users, one file per role (.txt one id per "
                             "line, or a table with user_id and optional target)")
    parser.add_argument("--split-name", help=f"csv: the given split's name (default: {GIVEN})")


def pairs(values: list[str], flag: str) -> dict[str, Path] | None:
    """``["a=x.csv", ...]`` -> ``{"a": Path("x.csv")}``; None when empty."""
    out = {}
    for value in values:
        key, sep, path = value.partition("=")
        if not sep or not key or not path:
            raise ValueError(f"{flag} {value!r}: expected NAME=FILE")
        if key in out:
            raise ValueError(f"{flag} {key}=... given twice")
        out[key] = Path(path)
    return out or None


def run(args: argparse.Namespace) -> int:
    options = {"genres": tuple(args.genres) if args.genres else None, "name": args.name,
               "platform": args.platform, "items": pairs(args.items, "--items"),
               "split_column": args.split_column,
               "split_users": pairs(args.split_users, "--split-users"), "split_name": args.split_name}
    try:
        draft = create_draft(args.kind, args.src, **options)
    except TypeError as exc:  # an option this kind does not take
        raise ValueError(f"{args.kind}: {exc}") from None
    path = write_dataset(draft, args.dst)
    print(f"wrote {path}\n")
    for note in draft.notes:
        print(f"note: {note}")
    dataset = CrossPlatformDataset.load(path)
    print(("\n" if draft.notes else "") + format_stats(dataset.stats()))
    print("\n" + next_steps(path, dataset, draft.splits[0].name if draft.splits else None))
    return 0


def next_steps(path: Path, dataset: CrossPlatformDataset, split: str | None) -> str:
    """The commands a newcomer runs next, with this dataset's names filled in."""
    a, b = (dataset.platforms + dataset.platforms)[:2]
    split = split or next(iter(dataset.splits()), "SPLIT")
    run = f"runs/{a}-{b}"
    return "\n".join([
        "next:",
        f"  mmi validate {path}",
        f"  mmi embed {path} --store store/",
        f"  mmi train {path} --source {a} --target {b} --split {split} --store store/ --output {run}",
        f"  mmi evaluate {path} --source {a} --target {b} --split {split} --store store/ "
        f"--output results/",
        f"  mmi export-index --model {run} --dataset {path} --store store/ --output bundles/{a}-{b}",
        f"  mmi serve --model bundles/{a}-{b}"])
