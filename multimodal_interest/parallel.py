"""Several processes with accelerate, on GPUs or on CPUs alone.

``accelerate launch --multi_gpu --num_processes N script ...`` starts N processes through
torchrun. On a machine without a GPU, accelerate joins them into one gloo group only if told
to run on the CPU; :func:`cpu_only` says when to tell it.
"""
from __future__ import annotations

import torch


def cpu_only() -> bool:
    """True when no CUDA device is present (pass as ``cpu=`` to PartialState / Accelerator)."""
    return not torch.cuda.is_available()
