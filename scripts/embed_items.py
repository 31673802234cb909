"""Embed a catalog's items into the store; the same as ``mmi embed``.

    python scripts/embed_items.py items.csv --store store/ --platform office
    accelerate launch --multi_gpu --num_processes 4 scripts/embed_items.py items.csv --store store/
"""
from __future__ import annotations

import sys

from multimodal_interest.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["embed", *sys.argv[1:]]))
