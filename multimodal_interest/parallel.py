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


def accelerator_for(mixed_precision: str, **kwargs):
    """An ``Accelerator`` running in ``mixed_precision`` ("no", "fp16" or "bf16").

    accelerate keeps one precision per process. In a single process (a notebook or script
    training one model after another) a run in another precision than the last one starts
    accelerate's process-wide state afresh; a launched multi-process run cannot change it and
    gets a clear error instead.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    current = AcceleratorState._shared_state.get("_mixed_precision")  # read without initialising it
    if current is not None and str(current) != mixed_precision:
        if PartialState._shared_state.get("num_processes", 1) > 1:
            raise ValueError(f"mixed_precision={mixed_precision!r}: this launched run already trains in "
                             f"{str(current)!r}, and accelerate cannot change it within a launch")
        AcceleratorState._reset_state()  # accelerate's own way to drop its per-process precision
    return Accelerator(cpu=cpu_only(), mixed_precision=mixed_precision, **kwargs)
