"""The embedding job: a catalog's items through encoders into the embedding store.

Incremental and restartable: an item is encoded only when the store has no row for its id
with the same content hash, and vectors are written in whole shards of ``shard_size`` items,
so a killed job, run again, encodes exactly what is missing. Under ``accelerate launch`` the
work is split across processes, each writing its own shards.

A job holds its vector set's lock (:meth:`VectorSet.writer_lock`) from reading the stored
content hashes to writing its last shard, so a second job on the same store waits and then
finds the items done; the processes of one launch are one job. Before reading, the job moves
bad shards (changed, cut short, of another width) to quarantine: their items are encoded again,
and the summary lists them.
"""
from __future__ import annotations

import json
import logging
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field

from tqdm.auto import tqdm

from encoders import Encoder
from multimodal_interest.catalog import MAX_TEXT_CHARS, Catalog, RowError, encoder_input
from multimodal_interest.store import EmbeddingStore, VectorSet, atomic_write_bytes

logger = logging.getLogger(__name__)

ERRORS_FILE = "errors.jsonl"


@dataclass
class ModalityReport:
    """What happened to one modality of one catalog."""

    modality: str
    encoder: str
    fingerprint: str
    items: int = 0  # rows that have this content
    encoded: int = 0  # encoded in this run
    reused: int = 0  # already in the store with the same content
    failed: int = 0
    seconds: float = 0.0
    quarantined: list[str] = field(default_factory=list)  # bad shards moved aside: "path: why"

    @property
    def items_per_s(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0


@dataclass
class EmbedSummary:
    catalog: str
    platform: str
    modalities: list[ModalityReport]
    errors: list[RowError] = field(default_factory=list)
    seconds: float = 0.0
    errors_file: str | None = None
    truncated_texts: int = 0  # items whose text was cut to catalog.MAX_TEXT_CHARS

    def format(self, max_errors: int = 10) -> str:
        lines = [f"{self.catalog} -> platform {self.platform!r} in {self.seconds:.1f}s"]
        lines.append(f"  {'modality':<10}{'encoder':<22}{'items':>8}{'encoded':>9}{'reused':>8}"
                     f"{'failed':>8}{'items/s':>9}")
        for m in self.modalities:
            lines.append(f"  {m.modality:<10}{m.encoder:<22}{m.items:>8}{m.encoded:>9}{m.reused:>8}"
                         f"{m.failed:>8}{m.items_per_s:>9.1f}")
        for m in self.modalities:
            if m.quarantined:
                lines.append(f"  {m.modality}: {len(m.quarantined)} bad shard(s) quarantined, "
                             f"their items encoded again:")
                lines += [f"    {q}" for q in m.quarantined]
        if self.truncated_texts:
            lines.append(f"  {self.truncated_texts} item(s) with text cut to {MAX_TEXT_CHARS:,} characters")
        if self.errors:
            lines.append(f"  {len(self.errors)} item(s) skipped:")
            lines += [f"    {e}" for e in self.errors[:max_errors]]
            if len(self.errors) > max_errors:
                lines.append(f"    ... {len(self.errors) - max_errors} more")
            lines.append(f"  all reasons: {self.errors_file}")
        return "\n".join(lines)


def embed_catalog(catalog: Catalog, store: EmbeddingStore, platform: str,
                  encoders: dict[str, Encoder], batch_size: int = 32, shard_size: int = 4096,
                  num_workers: int | None = None, show_progress: bool = True) -> EmbedSummary:
    """Encode every modality of ``catalog`` named in ``encoders`` (store slot -> encoder).

    The slot is the store's modality name ("text", "image", "audio", or a custom one such as
    "vggish"); what the encoder is given follows ``encoder.reads``: the combined text fields,
    the image or audio file, or the item id (precomputed vectors).
    """
    from accelerate import PartialState  # imported here: light jobs need not pay for it

    from multimodal_interest.parallel import cpu_only

    state = PartialState(cpu=cpu_only())
    start = time.perf_counter()
    errors: list[RowError] = list(catalog.errors)
    reports = []
    for slot, encoder in encoders.items():
        report, slot_errors = _embed_slot(catalog, store, platform, slot, encoder, state,
                                          batch_size, shard_size, num_workers, show_progress)
        if report.items or slot_errors:  # a slot this catalog has no content for is not shown
            reports.append(report)
        errors += slot_errors
    summary = EmbedSummary(str(catalog.path), platform, reports, errors,
                           time.perf_counter() - start)
    if any(e.reads == "text" for e in encoders.values()):
        summary.truncated_texts = len(catalog.truncated)
    if state.is_main_process:
        summary.errors_file = write_errors(store, platform, errors)
    return summary


def write_errors(store: EmbeddingStore, platform: str, errors: list[RowError]) -> str:
    """Every skipped item of a job, one JSON object a line; the file's path."""
    path = store.root / platform / ERRORS_FILE
    atomic_write_bytes(path, "".join(json.dumps(asdict(e)) + "\n" for e in errors).encode())
    return str(path)


def _embed_slot(catalog: Catalog, store: EmbeddingStore, platform: str, slot: str,
                encoder: Encoder, state, batch_size: int, shard_size: int, num_workers: int | None,
                show_progress: bool) -> tuple[ModalityReport, list[RowError]]:
    report = ModalityReport(slot, encoder.registry_name, encoder.fingerprint)
    inputs, checked = slot_inputs(catalog, slot, encoder.reads)  # the same in every process
    report.items = len(inputs)
    if not inputs:  # this catalog has no such content: leave the store alone
        return report, checked
    with state.main_process_first():  # one process writes the manifest, the others read it
        vectors = store.open(platform, slot, encoder)
    with ExitStack() as held:
        stored = _stored_hashes(vectors, state, report, held)
        state.wait_for_everyone()  # all processes split the same to-do list: none has written yet
        todo = [x for x in inputs if stored.get(catalog.item_id(x[0])) != x[2]]
        report.reused = len(inputs) - len(todo)
        t0 = time.perf_counter()
        failed = _encode(catalog, todo, vectors, slot, encoder, state, report, batch_size,
                         shard_size, num_workers, f"{platform}/{slot}", show_progress)
        report.seconds = time.perf_counter() - t0
        state.wait_for_everyone()  # every process's shards are in place before the lock goes
    if state.num_processes > 1:
        failed = _gather(report, failed)
    report.failed = len(checked) + len(failed)
    return report, checked + failed


def slot_inputs(catalog: Catalog, slot: str, reads: str) -> tuple[list[tuple[int, object, str]], list[RowError]]:
    """``[(row, encoder input, content hash)]`` of the catalog's rows with content for an
    encoder that ``reads`` it, and the rows whose content is there but unusable."""
    inputs, checked = [], []
    for row in catalog.usable:
        try:
            got = encoder_input(catalog, row, reads)
        except (ValueError, OSError) as e:
            checked.append(catalog.error(row, slot, str(e)))
            continue
        if got is not None:
            inputs.append((row, *got))
    return inputs, checked


def _stored_hashes(vectors: VectorSet, state, report: ModalityReport, held: ExitStack) -> dict[str, str]:
    """item_id -> content hash of the store's row. The main process locks the set for the
    job (another `mmi embed` on it waits, then finds its items done) and repairs it: bad
    shards are quarantined, so their items are encoded again. The others read it after that."""
    if not state.is_main_process:
        state.wait_for_everyone()
        return vectors.content_hashes()
    held.enter_context(vectors.writer_lock())
    repair = vectors.repair()
    report.quarantined = [f"{bad.path}: {bad.reason}" for bad in repair.quarantined]
    state.wait_for_everyone()
    return repair.hashes


def _encode(catalog: Catalog, todo: list, vectors: VectorSet, slot: str, encoder: Encoder, state,
            report: ModalityReport, batch_size: int, shard_size: int, num_workers: int | None,
            desc: str, show_progress: bool) -> list[RowError]:
    """Encode this process's part of ``todo`` in shards of ``shard_size``; its failures."""
    failed: list[RowError] = []
    chunks = [todo[s:s + shard_size] for s in range(0, len(todo), shard_size)]
    with state.split_between_processes(chunks) as mine, \
            tqdm(total=sum(len(c) for c in mine), desc=desc, unit="item",
                 disable=not (show_progress and state.is_main_process)) as bar:
        for chunk in mine:
            result = encoder.encode_with_errors([x for _, x, _ in chunk], batch_size=batch_size,
                                                show_progress_bar=False, num_workers=num_workers)
            if result.ok:
                vectors.write_shard([catalog.item_id(chunk[i][0]) for i in result.ok],
                                    [chunk[i][2] for i in result.ok], result.vectors.numpy(),
                                    rank=state.process_index)
            failed += [catalog.error(chunk[i][0], slot, reason) for i, reason in sorted(result.errors.items())]
            report.encoded += len(result.ok)
            bar.update(len(chunk))
    return failed


def _gather(report: ModalityReport, failed: list[RowError]) -> list[RowError]:
    """Sum the per-process counts into ``report``; every process's failures."""
    from accelerate.utils import gather_object

    parts = gather_object([(report.encoded, report.seconds, failed)])
    report.encoded = sum(p[0] for p in parts)
    report.seconds = max(p[1] for p in parts)
    return [e for p in parts for e in p[2]]


def load_encoders(specs: dict[str, str], device: str | None = None) -> dict[str, Encoder]:
    """``{"text": "sentence-transformer", "image": "resnet:arch=resnet50,weights=r50.pth"}``
    -> encoders. Values after ':' are ``key=value`` options, comma-separated; a value alone
    (no '=') is the encoder's first option, e.g. ``finetuned:runs/ft/encoder``."""
    from encoders import create_encoder, get_encoder_class

    out = {}
    for slot, spec in specs.items():
        name, _, opts = spec.partition(":")
        kwargs = {}
        if opts and "=" not in opts:  # the value of the first option, taken whole (a path)
            keys = get_encoder_class(name).config_keys
            if not keys:
                raise ValueError(f"encoder {spec!r} for {slot!r}: {name} takes no options")
            kwargs[keys[0]] = opts.strip()
            opts = ""
        for opt in filter(None, opts.split(",")):
            key, eq, value = opt.partition("=")
            if not eq:
                raise ValueError(f"encoder option {opt!r} in {spec!r} is not key=value")
            kwargs[key.strip()] = _parse_value(value.strip())
        try:
            out[slot] = create_encoder(name, device=device, **kwargs)
        except TypeError as e:  # an unknown option: say which spec it came from
            raise ValueError(f"encoder {spec!r} for {slot!r}: {e}") from None
    return out


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def default_encoders(catalog: Catalog) -> dict[str, str]:
    """The default encoder of each modality the catalog has."""
    defaults = {"text": "sentence-transformer", "image": "efficientnet-lite0", "audio": "crepe"}
    return {m: defaults[m] for m in catalog.modalities()}

