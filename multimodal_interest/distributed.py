"""Ray: the catalog embedding job on a pool of encoder actors (``mmi embed --engine ray``).

The driver does what the single-process job does around the encoding: it reads the catalog,
takes the vector set's lock, repairs the set and reads its content hashes, so an unchanged
item is not encoded again. The items to encode become a Ray Dataset; ``map_batches`` sends
them through a pool of encoder actors (each loads its encoder once, and asks for a GPU when
the cluster has them); the driver writes what comes back into the same store with
:meth:`~multimodal_interest.store.VectorSet.write_shard`, in whole shards of
``shard_size`` items. So a Ray-built store is the single-process store: the same shard
format, content hashes and fingerprints.

Faults: Ray restarts a killed actor and runs its batch again, and a batch's result reaches
the driver once, so every row is written once. A killed driver loses only the rows not yet
in a shard; run again, the job encodes exactly those. Only the driver writes the store; the
actors need to read the catalog's media files (a shared filesystem on a cluster).

Ray is imported only here, and only when this engine is chosen (``pip install
multimodal-interest[distributed]``).
"""
from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from typing import Iterator

import numpy as np

from multimodal_interest.catalog import Catalog, RowError
from multimodal_interest.embed import (EmbedSummary, ModalityReport, load_encoders, slot_inputs,
                                       write_errors)
from multimodal_interest.store import EmbeddingStore, VectorSet

logger = logging.getLogger(__name__)

LOCAL_CPUS = 2  # a local Ray started by the toolkit (no address given) uses this many CPUs
INSTALL_HINT = "the ray engine needs Ray: pip install 'multimodal-interest[distributed]'"


class EngineUnavailable(OSError):
    """The engine asked for is not installed here."""


def import_ray():
    """The ``ray`` module, or :class:`EngineUnavailable` saying which extra installs it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the Data library comes with the [data] extra)
    except ImportError as e:
        raise EngineUnavailable(f"{INSTALL_HINT} ({e})") from None
    return ray


@contextmanager
def ray_session(address: str | None = None) -> Iterator[object]:
    """Ray, connected: to the cluster at ``address`` ("auto", "ray://host:10001", a GCS
    address), to the session this process already has, or to a local Ray started here (and
    shut down on leaving)."""
    ray = import_ray()
    ray.data.DataContext.get_current().enable_progress_bars = False  # the jobs show their own
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # not Ray Data's per-second progress log
    if ray.is_initialized():
        yield ray
        return
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=LOCAL_CPUS, include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield ray
    finally:
        ray.shutdown()


def actor_resources(ray, gpus_per_worker: float | None) -> dict[str, float]:
    """Resources of one worker actor: a GPU each when the cluster has GPUs (or as told)."""
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    return {"num_cpus": 1, "num_gpus": gpus_per_worker}


def default_workers(ray, resources: dict[str, float]) -> int:
    """As many workers as the cluster's GPUs (GPU actors) or CPUs hold."""
    total = ray.cluster_resources()
    kind = "GPU" if resources["num_gpus"] > 0 else "CPU"
    need = resources["num_gpus"] if kind == "GPU" else resources["num_cpus"]
    return max(1, int(total.get(kind, 1) // need))


class EncodeActor:
    """One encoder actor: loads ``spec`` once, then encodes batches of ``{"row", "input"}``.

    Returns per input row: ``vector [dim]`` float32 (zeros where it failed), ``error`` ("" when
    it worked). Refuses to start if its encoder's fingerprint is not the driver's (another
    library version or weights file on this node would give other vectors under that name)."""

    def __init__(self, slot: str, spec: str, fingerprint: str, device: str | None,
                 batch_size: int, num_workers: int | None):
        self.encoder = load_encoders({slot: spec}, device=device)[slot]
        if self.encoder.fingerprint != fingerprint:
            raise RuntimeError(f"encoder {spec!r} on this Ray node has fingerprint "
                               f"{self.encoder.fingerprint}, the driver's has {fingerprint}: "
                               f"install the same versions and weights on every node")
        self.batch_size, self.num_workers = batch_size, num_workers

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = batch["input"].tolist()
        result = self.encoder.encode_with_errors(inputs, batch_size=self.batch_size,
                                                 show_progress_bar=False, num_workers=self.num_workers)
        vectors = np.zeros((len(inputs), self.encoder.dim), dtype=np.float32)
        if result.ok:
            vectors[result.ok] = result.vectors.numpy()
        errors = np.array([result.errors.get(i, "") for i in range(len(inputs))], dtype=object)
        return {"row": batch["row"], "vector": vectors, "error": errors}


def embed_catalog_ray(catalog: Catalog, store: EmbeddingStore, platform: str, specs: dict[str, str],
                      *, device: str | None = None, batch_size: int = 32, shard_size: int = 4096,
                      num_workers: int | None = None, workers: int | None = None,
                      gpus_per_worker: float | None = None, address: str | None = None,
                      show_progress: bool = True) -> EmbedSummary:
    """:func:`~multimodal_interest.embed.embed_catalog` on Ray: ``specs`` (store slot ->
    encoder spec, as ``mmi embed --encoder`` takes them) encoded by ``workers`` actors
    (default: one per GPU, else per CPU of the cluster). The driver loads each encoder once
    too, on the CPU, for its fingerprint and width."""
    start = time.perf_counter()
    errors: list[RowError] = list(catalog.errors)
    reports = []
    truncated = False
    with ray_session(address) as ray:
        for slot, spec in specs.items():
            encoder = load_encoders({slot: spec}, device="cpu")[slot]
            truncated |= encoder.reads == "text"
            report, slot_errors = _embed_slot(ray, catalog, store, platform, slot, spec, encoder,
                                              device, batch_size, shard_size, num_workers, workers,
                                              gpus_per_worker, show_progress)
            if report.items or slot_errors:
                reports.append(report)
            errors += slot_errors
    summary = EmbedSummary(str(catalog.path), platform, reports, errors, time.perf_counter() - start)
    summary.truncated_texts = len(catalog.truncated) if truncated else 0
    summary.errors_file = write_errors(store, platform, errors)
    return summary


def _embed_slot(ray, catalog: Catalog, store: EmbeddingStore, platform: str, slot: str, spec: str,
                encoder, device, batch_size: int, shard_size: int, num_workers, workers,
                gpus_per_worker, show_progress: bool) -> tuple[ModalityReport, list[RowError]]:
    report = ModalityReport(slot, encoder.registry_name, encoder.fingerprint)
    inputs, checked = slot_inputs(catalog, slot, encoder.reads)
    report.items = len(inputs)
    if not inputs:
        return report, checked
    vectors = store.open(platform, slot, encoder)
    with vectors.writer_lock():
        repair = vectors.repair()
        report.quarantined = [f"{bad.path}: {bad.reason}" for bad in repair.quarantined]
        todo = [x for x in inputs if repair.hashes.get(catalog.item_id(x[0])) != x[2]]
        report.reused = len(inputs) - len(todo)
        t0 = time.perf_counter()
        failed = _encode(ray, catalog, todo, vectors, slot, spec, encoder.fingerprint, report, device,
                         batch_size, shard_size, num_workers, workers, gpus_per_worker,
                         show_progress and bool(todo), f"{platform}/{slot}")
        report.seconds = time.perf_counter() - t0
    report.failed = len(checked) + len(failed)
    return report, checked + failed


def _encode(ray, catalog: Catalog, todo: list, vectors: VectorSet, slot: str, spec: str,
            fingerprint: str, report: ModalityReport, device, batch_size: int, shard_size: int,
            num_workers, workers, gpus_per_worker, show_progress: bool, desc: str) -> list[RowError]:
    """Encode ``todo`` on the actor pool; write what comes back in shards of ``shard_size``."""
    import pyarrow as pa
    from tqdm.auto import tqdm

    if not todo:
        return []
    resources = actor_resources(ray, gpus_per_worker)
    workers = workers or default_workers(ray, resources)
    # Blocks are the unit a worker takes (and redoes if it dies): small enough to spread the
    # items over the workers a few times, never more than a shard.
    block = max(batch_size, min(shard_size, math.ceil(len(todo) / (4 * workers))))
    tables = [pa.table({"row": pa.array([r for r, _, _ in part], pa.int64()),
                        "input": pa.array([str(x) for _, x, _ in part], pa.string())})
              for part in (todo[s:s + block] for s in range(0, len(todo), block))]
    hash_of = {row: h for row, _, h in todo}
    ds = ray.data.from_arrow(tables).map_batches(
        EncodeActor, fn_constructor_args=(slot, spec, fingerprint, device, batch_size, num_workers),
        batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
        **resources)
    failed: list[RowError] = []
    ids, hashes, rows = [], [], []

    def flush() -> None:
        vectors.write_shard(ids, hashes, np.stack(rows))
        report.encoded += len(ids)
        ids.clear(), hashes.clear(), rows.clear()

    with tqdm(total=len(todo), desc=desc, unit="item", disable=not show_progress) as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for row, vector, error in zip(batch["row"].tolist(), batch["vector"], batch["error"]):
                if error:
                    failed.append(catalog.error(row, slot, str(error)))
                    continue
                ids.append(catalog.item_id(row))
                hashes.append(hash_of[row])
                rows.append(vector)
                if len(ids) == shard_size:
                    flush()
            bar.update(len(batch["row"]))
        if ids:
            flush()
    return sorted(failed, key=lambda e: e.row)  # catalog order, as the single-process job


# ---------------------------------------------------------------------- batch recommendation
class ScoreActor:
    """One scoring actor: loads the bundle once (its files checked against its manifest)."""

    def __init__(self, bundle: str, index: str, model: str):
        from multimodal_interest.recommend import Recommender

        self.rec = Recommender.load(bundle, index)
        if self.rec.fingerprint != model:
            raise RuntimeError(f"{bundle} on this Ray node holds model {self.rec.fingerprint}, the "
                               f"driver's is {model}: every node must see the same bundle")

    def score(self, users: list, settings):
        from multimodal_interest.batch import score_users

        return score_users(self.rec, users, settings)


def score_on_ray(bundle, chunks, settings, done, address: str | None = None,
                 workers: int | None = None) -> None:
    """``done(chunk, table)`` for each of ``chunks`` (streamed), scored by ``workers`` actors
    (default: one per CPU). At most two chunks per actor are in flight, so the driver holds
    a bounded number of users whatever the file's size. A killed actor is restarted and its
    chunk scored again (its result reaches ``done`` once)."""
    with ray_session(address) as ray:
        resources = actor_resources(ray, 0.0)
        workers = workers or default_workers(ray, resources)
        actor = ray.remote(max_restarts=-1, max_task_retries=-1, **resources)(ScoreActor)
        pool = [actor.remote(str(bundle), settings.index, settings.model) for _ in range(workers)]
        pending: dict = {}  # object ref -> chunk
        free = [a for a in pool for _ in range(2)]
        busy: dict = {}  # object ref -> actor

        def collect(block: bool) -> None:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=None if block else 0)
            for ref in ready:
                done(pending.pop(ref), ray.get(ref))
                free.append(busy.pop(ref))

        for chunk in chunks:
            if not free:
                collect(block=True)
            a = free.pop()
            ref = a.score.remote(chunk.users, settings)
            pending[ref], busy[ref] = chunk, a
        while pending:
            collect(block=True)
