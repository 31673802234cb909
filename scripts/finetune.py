"""Fine-tune the text encoder; the same as ``mmi finetune``, and runnable under accelerate:

    accelerate launch --multi_gpu --num_processes 2 scripts/finetune.py DATASET --source art \
        --target office --encoder text=sentence-transformer --output runs/ft-art2office
"""
from __future__ import annotations

import sys

from multimodal_interest.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["finetune", *sys.argv[1:]]))
