"""``mmi import KIND SRC DST``: turn a published dataset layout into a dataset folder."""
from __future__ import annotations

import argparse

from multimodal_interest.data.dataset import CrossPlatformDataset
from multimodal_interest.data.importers import import_dataset, list_importers
from multimodal_interest.data.stats import format_stats


def build_parser(parser: argparse.ArgumentParser) -> None:
    kinds = list_importers()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "kinds:\n" + "\n".join(f"  {k:<18} {h}" for k, h in kinds.items())
    parser.add_argument("kind", choices=sorted(kinds), metavar="KIND")
    parser.add_argument("src", help="the published files (folder or file, as the kind expects)")
    parser.add_argument("dst", help="new dataset folder to write (must not exist)")
    parser.add_argument("--genres", nargs=2, metavar=("A", "B"),
                        help="movielens-genres: the two genres that become platforms")
    parser.add_argument("--name", help="movielens-genres, csv: the dataset's name")
    parser.add_argument("--platform", help="recbole: the platform's name")


def run(args: argparse.Namespace) -> int:
    options = {"genres": tuple(args.genres) if args.genres else None, "name": args.name,
               "platform": args.platform}
    try:
        path = import_dataset(args.kind, args.src, args.dst, **options)
    except TypeError as exc:  # an option this kind does not take
        raise ValueError(f"{args.kind}: {exc}") from None
    print(f"wrote {path}\n")
    print(format_stats(CrossPlatformDataset.load(path).stats()))
    return 0
