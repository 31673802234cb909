"""Micro-batching on an asyncio event loop: the requests that arrive while one batch computes
are computed together as the next batch.

>>> batcher = MicroBatcher(score_all, max_batch=64, max_queue=256)
>>> answer = await batcher.submit(item)     # in a coroutine: one item in, its answer out

``compute(items) -> answers`` (one answer per item, in order; an answer that is an exception
is raised to that item's caller alone) runs on the event loop's own thread, as a plain
callback: a coroutine that submits an item is parked on a future, and the batch starts once a
turn of the loop (its callbacks ready, then the sockets polled once more) added no item, so
the requests already received join it. Nothing waits on a timer: at low load a batch is one request, computed at once;
under load the requests that arrived while a batch computed (up to ``max_batch``) make the
next one. At most ``max_queue`` items wait: one more raises :class:`Overloaded` at once (the
server answers 503), so a burst never makes the queue, nor the latency, grow without bound.
Each event loop has its own queue (a test client may run one loop per request).
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable, Sequence


class Overloaded(Exception):
    """The queue already holds ``max_queue`` items."""


class MicroBatcher:
    """See the module docstring."""

    def __init__(self, compute: Callable[[Sequence[Any]], Sequence[Any]], max_batch: int = 64,
                 max_queue: int = 256):
        if max_batch < 1 or max_queue < 1:
            raise ValueError(f"max_batch and max_queue must be at least 1, got {max_batch} and {max_queue}")
        self.compute, self.max_batch, self.max_queue = compute, max_batch, max_queue
        self._queues: dict[asyncio.AbstractEventLoop, list[tuple[Any, asyncio.Future]]] = {}
        self.batches = 0  # batches computed (how many requests each held: ``items / batches``)
        self.items = 0

    async def submit(self, item: Any) -> Any:
        """``item``'s answer, computed in a batch with the items submitted meanwhile."""
        loop = asyncio.get_running_loop()
        queue = self._queues.setdefault(loop, [])
        if len(queue) >= self.max_queue:
            raise Overloaded(f"{len(queue)} requests already wait")
        future = loop.create_future()
        queue.append((item, future))
        if len(queue) == 1:  # a batch is scheduled exactly while the queue is not empty
            loop.call_soon(self._run, loop)
        return await future

    def _run(self, loop: asyncio.AbstractEventLoop, looked: int = 0) -> None:
        queue = self._queues[loop]
        if looked < len(queue) < self.max_batch:  # requests still arriving: one more turn of the loop
            loop.call_soon(self._run, loop, len(queue))
            return
        batch = [(item, future) for item, future in queue[:self.max_batch] if not future.done()]
        del queue[:self.max_batch]
        if queue:
            loop.call_soon(self._run, loop)
        else:
            del self._queues[loop]
        if not batch:
            return
        self.batches += 1
        self.items += len(batch)
        try:
            answers = self.compute([item for item, _ in batch])
            if len(answers) != len(batch):
                raise RuntimeError(f"compute answered {len(answers)} of {len(batch)} items")
        except Exception as e:  # noqa: BLE001 -- a bug in compute: every caller of the batch sees it
            answers = [e] * len(batch)
        for (_, future), answer in zip(batch, answers):
            if future.done():  # its caller gave up (cancelled) meanwhile
                continue
            if isinstance(answer, BaseException):
                future.set_exception(answer)
            else:
                future.set_result(answer)
