"""How many threads a long job's math uses: the cores it may run on, shared among the
processes launched together.

torch and the BLAS libraries otherwise start one thread per core in *every* process, so two
training processes on a 2-core machine run four busy threads that wait on each other.
:func:`configure_threads` gives each process ``cores // processes`` (at least 1), where

- cores: the CPUs this process may run on (its affinity mask, e.g. ``taskset``), capped by a
  cgroup CPU quota (containers);
- processes: ``LOCAL_WORLD_SIZE``, which ``torchrun`` and ``accelerate launch`` set for the
  processes they start on this machine (1 when run alone).

``OMP_NUM_THREADS`` (the usual variable) or ``mmi --threads N`` overrides the choice.
"""
from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

CGROUP_QUOTA = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    why: str  # where the number came from, for the log


def available_cores() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = CGROUP_QUOTA.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def launched_processes() -> int:
    """Processes started together on this machine (``LOCAL_WORLD_SIZE``; 1 when unset)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def choose_threads(threads: int | None = None) -> ThreadChoice:
    """``threads`` if given, else ``OMP_NUM_THREADS`` if set, else cores // processes."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be at least 1, got {threads}")
        return ThreadChoice(threads, "--threads")
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"OMP_NUM_THREADS={env!r} is not a whole number") from None
        if n >= 1:
            return ThreadChoice(n, "OMP_NUM_THREADS")
    cores, processes = available_cores(), launched_processes()
    return ThreadChoice(max(1, cores // processes), f"{cores} cores / {processes} process(es)")


def configure_threads(threads: int | None = None) -> ThreadChoice:
    """Use :func:`choose_threads` threads in this process and the processes it starts.

    Sets ``OMP_NUM_THREADS`` (read by torch, OpenBLAS and MKL when they load, and inherited
    by child processes); torch and BLAS pools already loaded are set directly.
    """
    choice = choose_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(choice.threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(choice.threads)
    if "numpy" in sys.modules:
        from threadpoolctl import threadpool_limits

        threadpool_limits(choice.threads)  # BLAS/OpenMP pools already loaded, process-wide
    logger.debug("threads: %d (%s)", choice.threads, choice.why)
    return choice
