"""Train the fusion model; the same as ``mmi train``, and runnable under accelerate:

    accelerate launch --multi_gpu --num_processes 2 scripts/train.py DATASET --source art --target office \
        --store store/ --output runs/art2office
"""
from __future__ import annotations

import sys

from multimodal_interest.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train", *sys.argv[1:]]))
