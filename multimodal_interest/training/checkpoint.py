"""Training checkpoints that hold only safetensors and JSON: saving, verifying, choosing one.

A run's ``checkpoints/`` folder keeps the two newest complete checkpoints, ``step-N``::

    weights.safetensors    the unwrapped model's state_dict
    optimizer.safetensors  the optimizer's per-parameter tensors, named ``state/<param index>/<name>``
    optimizer.json         its param_groups and per-parameter values that are not tensors
    progress.json          the trainer's progress (epoch, steps, best score, history, ...)
    accelerator.json       accelerate's step counter (gradient accumulation) and, under fp16,
                           the GradScaler's state
    rng-r<rank>.json       each process's RNG states: python, numpy, torch CPU (and CUDA)
    grads-r<rank>.safetensors  each process's half-accumulated gradients, only when saved between
                           two optimizer steps of gradient accumulation
    trained_with.json      and any other JSON the caller adds (what it was trained with)
    manifest.json          format, version, step, processes, and the size and sha256 of each file

Nothing is pickled and nothing is read with ``torch.load``: a pickle planted in a checkpoint
is never opened (files the manifest does not list are ignored, with a warning), and a folder
in accelerate's own format (``custom_checkpoint_0.pkl``, ``random_states_0.pkl``, ...) is
refused, not loaded. Reading verifies every file's size and sha256 before parsing those
very bytes, then that tensors are finite and RNG states are valid; any problem names the file.

Saving (only the main process writes; every process's RNG state is gathered to it as JSON
bytes) goes into ``tmp-N``, is read back and verified, renamed to ``step-N``, and only then are
older checkpoints deleted. A run starting again removes leftover ``tmp-N`` folders; when its
newest checkpoint fails verification it falls back to the one before, moving the bad one
aside as ``rejected-step-N``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch

from fusion.files import FileRefused, parse_json
from multimodal_interest.training.errors import SettingsError

logger = logging.getLogger(__name__)

FORMAT = "multimodal-interest checkpoint"
VERSION = 1
MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "weights.safetensors"
OPTIMIZER_TENSORS_FILE = "optimizer.safetensors"
OPTIMIZER_FILE = "optimizer.json"
PROGRESS_FILE = "progress.json"
ACCELERATOR_FILE = "accelerator.json"
REQUIRED = (WEIGHTS_FILE, OPTIMIZER_TENSORS_FILE, OPTIMIZER_FILE, PROGRESS_FILE, ACCELERATOR_FILE)
KEEP = 2  # complete checkpoints kept: the newest and one to fall back to
ACCELERATE_FILES = ("custom_checkpoint_0.pkl", "random_states_0.pkl", "pytorch_model.bin", "model.safetensors",
                    "optimizer.bin", "scaler.pt")
AFRESH = "start afresh with resume=False (which deletes the checkpoints) or in a new output folder"
START_AFRESH = {"resume": False}  # the settings AFRESH names
_STEP = re.compile(r"step-(\d+)")


class CheckpointError(ValueError):
    """A checkpoint file that is missing, altered or unusable; ``path`` names it."""

    def __init__(self, path: Path, why: str):
        super().__init__(f"{path}: {why}")
        self.path, self.why = path, why


@dataclass
class Checkpoint:
    """A verified checkpoint, read for one process (``rng`` is its own, or None if not saved)."""

    folder: Path
    step: int
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]  # a torch optimizer state_dict
    progress: dict[str, Any]
    accelerator: dict[str, Any]  # {"step": int, "scaler": dict | None}
    rng: dict[str, Any] | None
    grads: dict[str, torch.Tensor] | None  # this process's half-accumulated gradients, if any


def rng_file(rank: int) -> str:
    return f"rng-r{rank}.json"


def grads_file(rank: int) -> str:
    return f"grads-r{rank}.safetensors"


# ---------------------------------------------------------------- finding checkpoints

def complete_checkpoints(root: Path) -> list[Path]:
    """The ``step-N`` folders under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: Path) -> Path | None:
    found = complete_checkpoints(root)
    return found[-1] if found else None


def remove_partial(root: Path) -> None:
    """Delete ``tmp-N`` folders a killed or failed save left behind; put back a ``step-N``
    that was being replaced when its save was killed (main process only)."""
    if not root.is_dir():
        return
    for p in sorted(root.iterdir()):
        if p.name.startswith("tmp-"):
            logger.warning("%s: removing a partly written checkpoint (its save did not finish)", p)
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.startswith("old-step-"):
            final = root / p.name.removeprefix("old-")
            if final.exists():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.rename(final)


def refuse_old_format(folder: Path) -> None:
    """A checkpoint in accelerate's pickle format (no manifest) is an error, never loaded."""
    if (folder / MANIFEST_FILE).is_file():
        return
    old = sorted(p.name for p in folder.iterdir() if p.name in ACCELERATE_FILES or p.suffix in (".pkl", ".bin"))
    if old:
        raise SettingsError(f"{folder}: a checkpoint in accelerate's pickle format ({', '.join(old)}), written "
                            f"by an older version; it is not loaded, since unpickling a file can run code. "
                            f"To train this folder again, {AFRESH}", START_AFRESH)


# ---------------------------------------------------------------- reading and verifying

def read_checkpoint(folder: Path, rank: int) -> Checkpoint:
    """Verify ``folder`` (every file's size and sha256, then its contents) and read what
    process ``rank`` needs. Raises :class:`CheckpointError` naming the file at fault."""
    refuse_old_format(folder)
    manifest, blobs = _verified_files(folder)
    for name in (*REQUIRED, rng_file(0)):
        if name not in blobs:
            raise CheckpointError(folder / MANIFEST_FILE, f"lists no {name}")
    weights = _tensors(folder / WEIGHTS_FILE, blobs[WEIGHTS_FILE])
    optimizer = _optimizer_state(folder, blobs)
    progress = _json(folder / PROGRESS_FILE, blobs[PROGRESS_FILE], dict)
    accelerator = _accelerator_state(folder / ACCELERATOR_FILE, blobs[ACCELERATOR_FILE])
    rng = None
    if rng_file(rank) in blobs:
        rng = _json(folder / rng_file(rank), blobs[rng_file(rank)], dict)
        check_rng(rng, folder / rng_file(rank))
    grads = _tensors(folder / grads_file(rank), blobs[grads_file(rank)]) if grads_file(rank) in blobs else None
    return Checkpoint(folder, int(manifest["step"]), weights, optimizer, progress, accelerator, rng, grads)


def _verified_files(folder: Path) -> tuple[dict, dict[str, bytes]]:
    """The manifest and the bytes of each file it lists, each checked against its sha256."""
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise CheckpointError(path, "missing, so the checkpoint cannot be verified")
    manifest = _json(path, path.read_bytes(), dict)
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise CheckpointError(path, f"not a {FORMAT} of version {VERSION} (format {manifest.get('format')!r}, "
                                    f"version {manifest.get('version')!r})")
    files = manifest.get("files")
    if not isinstance(files, dict) or not isinstance(manifest.get("step"), int):
        raise CheckpointError(path, "has no files table or no step")
    blobs = {}
    for name, entry in files.items():
        if "/" in name or "\\" in name or name.startswith(".") or not name.endswith((".json", ".safetensors")):
            raise CheckpointError(path, f"lists {name!r}, which is not a checkpoint file name")
        if not isinstance(entry, dict):
            raise CheckpointError(path, f"gives no size and sha256 for {name}")
        file = folder / name
        if not file.is_file():
            raise CheckpointError(file, "missing (listed in the manifest)")
        data = file.read_bytes()
        if len(data) != entry.get("bytes") or hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            raise CheckpointError(file, f"altered or damaged: its size or sha256 differs from {MANIFEST_FILE}'s")
        blobs[name] = data
    unlisted = sorted(p.name for p in folder.iterdir() if p.name not in files and p.name != MANIFEST_FILE)
    if unlisted:
        logger.warning("%s: ignoring %s, not part of the checkpoint (never read)", folder, ", ".join(unlisted))
    return manifest, blobs


def _json(path: Path, data: bytes, kind: type) -> Any:
    try:
        value = parse_json(data, path)  # the loader rule: bounded depth, a named error
    except FileRefused as exc:
        raise CheckpointError(path, exc.reason) from None
    if not isinstance(value, kind):
        raise CheckpointError(path, f"holds a JSON {type(value).__name__}, not a {kind.__name__}")
    return value


def _tensors(path: Path, data: bytes) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors (from its verified bytes), all floating ones finite."""
    try:
        tensors = safetensors.torch.load(data)
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise CheckpointError(path, f"not a readable safetensors file ({exc})") from None
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(path, f"tensor {name!r} {tuple(t.shape)} holds NaN or infinite values")
    return tensors


def _optimizer_state(folder: Path, blobs: dict[str, bytes]) -> dict[str, Any]:
    """Rebuild a torch optimizer state_dict from its JSON structure and safetensors tensors."""
    path = folder / OPTIMIZER_FILE
    meta = _json(path, blobs[OPTIMIZER_FILE], dict)
    groups, per_param = meta.get("param_groups"), meta.get("state")
    if not isinstance(groups, list) or not isinstance(per_param, dict) or not all(
            isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups):
        raise CheckpointError(path, "needs param_groups (each with its params) and state")
    params = {i for g in groups for i in g["params"]}
    state = {}
    for key, values in per_param.items():
        if not key.isdigit() or int(key) not in params or not isinstance(values, dict):
            raise CheckpointError(path, f"state of {key!r}, which is no parameter of its param_groups")
        state[int(key)] = dict(values)
    for name, t in _tensors(folder / OPTIMIZER_TENSORS_FILE, blobs[OPTIMIZER_TENSORS_FILE]).items():
        _, index, field = (name.split("/") + ["", ""])[:3]
        if not index.isdigit() or int(index) not in state or not field:
            raise CheckpointError(folder / OPTIMIZER_TENSORS_FILE, f"tensor {name!r} belongs to no parameter state")
        state[int(index)][field] = t
    return {"state": state, "param_groups": groups}


def _accelerator_state(path: Path, data: bytes) -> dict[str, Any]:
    value = _json(path, data, dict)
    if not isinstance(value.get("step"), int) or not isinstance(value.get("scaler"), (dict, type(None))):
        raise CheckpointError(path, "needs step (an int) and scaler (an object or null)")
    return value


# ---------------------------------------------------------------- RNG states as JSON

def capture_rng() -> dict[str, Any]:
    """This process's RNG states, JSON-ready."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {"python": [version, list(internal), gauss],
             "numpy": {"kind": kind, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                       "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state().numpy().tobytes().hex()}
    if torch.cuda.is_available():
        state["cuda"] = [s.numpy().tobytes().hex() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Set this process's RNGs to ``state`` (checked by :func:`check_rng`)."""
    python, numpy_state, torch_state = _rng_objects(state)
    random.setstate(python)
    np.random.set_state(numpy_state)
    torch.set_rng_state(torch_state)
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([_bytes_tensor(h) for h in cuda])
        else:
            logger.warning("the checkpoint holds CUDA RNG states of %d devices, this process sees %d: "
                           "CUDA RNGs not restored", len(cuda), torch.cuda.device_count())


def check_rng(state: dict[str, Any], path: Path) -> None:
    """Refuse RNG states that are malformed: each is tried on a scratch generator."""
    try:
        python, numpy_state, torch_state = _rng_objects(state)
        random.Random().setstate(python)
        np.random.RandomState().set_state(numpy_state)
        torch.Generator().set_state(torch_state)
        for h in state.get("cuda") or []:
            _bytes_tensor(h)
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
        raise CheckpointError(path, f"not a valid RNG state ({type(exc).__name__}: {exc})") from None


def _rng_objects(state: dict[str, Any]) -> tuple[tuple, tuple, torch.Tensor]:
    version, internal, gauss = state["python"]
    if len(internal) != 625 or not all(isinstance(x, int) and 0 <= x < 2 ** 32 for x in internal):
        raise ValueError("python state needs 625 ints in [0, 2**32)")
    n = state["numpy"]
    keys = np.asarray(n["keys"])
    if keys.shape != (624,) or keys.dtype.kind not in "iu" or keys.min() < 0 or keys.max() >= 2 ** 32:
        raise ValueError("numpy state needs 624 ints in [0, 2**32)")
    numpy_state = (n["kind"], keys.astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    return (version, tuple(internal), gauss), numpy_state, _bytes_tensor(state["torch"])


def _bytes_tensor(hex_string: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(bytes.fromhex(hex_string)), dtype=torch.uint8)


def _gather_rng(acc) -> list[bytes]:
    """Every process's :func:`capture_rng` as JSON bytes, on the main process (a collective)."""
    blob = json.dumps(capture_rng()).encode()
    if acc.num_processes == 1:
        return [blob]
    mine = torch.frombuffer(bytearray(blob), dtype=torch.uint8).to(acc.device)
    padded = acc.pad_across_processes(mine, dim=0, pad_index=ord(" "))  # JSON allows trailing blanks
    return [bytes(row.cpu().tolist()) for row in acc.gather(padded).reshape(acc.num_processes, -1)]


# ---------------------------------------------------------------- choosing one to resume

def resume_point(acc, root: Path, resume: bool, check) -> Checkpoint | None:
    """Where a run in ``root`` starts (a collective): half-written checkpoints are removed, then
    the checkpoint :func:`choose_checkpoint` gives, which ``check(folder)`` must accept (it raises
    if the checkpoint was trained otherwise); None: from the start (``resume`` False, or none)."""
    if acc.is_main_process:
        remove_partial(root)
    acc.wait_for_everyone()
    ckpt = choose_checkpoint(acc, root) if resume else None
    if ckpt is not None:
        check(ckpt.folder)
    return ckpt


def choose_checkpoint(acc, root: Path) -> Checkpoint | None:
    """The newest checkpoint under ``root`` that every process verifies, or None if there is
    none (a collective). A newer one that fails is moved aside with a warning naming the file
    and why; if none passes, the error names the newest one's problem and how to start afresh."""
    candidates = complete_checkpoints(root)
    if not candidates:
        return None
    refuse_old_format(candidates[-1])
    rejected: list[tuple[Path, str]] = []
    chosen = None
    for folder in reversed(candidates):
        try:
            found, why = read_checkpoint(folder, acc.process_index), ""
        except CheckpointError as exc:
            found, why = None, str(exc)
        if _everywhere(acc, found is not None):
            chosen = found
            break
        rejected.append((folder, why or f"{folder}: could not be read by another process"))
        logger.warning("checkpoint %s cannot be resumed: %s", folder.name, rejected[-1][1])
    if chosen is None:
        raise SettingsError(f"no checkpoint in {root} can be resumed: {rejected[0][1]}. {AFRESH[0].upper()}"
                            f"{AFRESH[1:]}", START_AFRESH)
    if rejected:
        logger.warning("falling back to %s (%d newer one%s moved aside as rejected-step-N)", chosen.folder,
                       len(rejected), "" if len(rejected) == 1 else "s")
    if acc.is_main_process:
        for folder, _ in rejected:
            aside = folder.with_name("rejected-" + folder.name)
            shutil.rmtree(aside, ignore_errors=True)
            folder.rename(aside)
    acc.wait_for_everyone()
    return chosen


def _everywhere(acc, ok: bool) -> bool:
    """True on every process when ``ok`` is true on every process (a collective)."""
    if acc.num_processes == 1:
        return ok
    return int(acc.reduce(torch.tensor(int(ok), device=acc.device), reduction="sum")) == acc.num_processes


def restore(acc, checkpoint: Checkpoint, model: torch.nn.Module, optimizer) -> None:
    """Load ``checkpoint`` into the prepared ``model`` and ``optimizer``, accelerate's step
    counter and scaler, and this process's RNGs."""
    try:
        acc.unwrap_model(model).load_state_dict(checkpoint.weights)
    except RuntimeError as exc:
        raise CheckpointError(checkpoint.folder / WEIGHTS_FILE, f"does not fit the model: {exc}") from None
    try:
        optimizer.load_state_dict(_like(checkpoint.optimizer, optimizer.state_dict()))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(checkpoint.folder / OPTIMIZER_FILE, f"does not fit the optimizer: {exc}") from None
    scaler = checkpoint.accelerator["scaler"]
    if (scaler is None) != (acc.scaler is None):
        raise CheckpointError(checkpoint.folder / ACCELERATOR_FILE,
                              f"{'has no' if scaler is None else 'has a'} GradScaler state, and this run "
                              f"{'uses' if acc.scaler is not None else 'does not use'} one (fp16)")
    if scaler is not None:
        acc.scaler.load_state_dict(scaler)
    acc.step = checkpoint.accelerator["step"]
    if checkpoint.grads is not None:
        _restore_grads(checkpoint, acc.unwrap_model(model), acc.process_index)
    if checkpoint.rng is None:
        logger.warning("%s: no RNG state saved for process %d (saved by fewer processes); its RNGs "
                       "start from the seed", checkpoint.folder, acc.process_index)
    else:
        restore_rng(checkpoint.rng)


def _restore_grads(checkpoint: Checkpoint, model: torch.nn.Module, rank: int) -> None:
    params = dict(model.named_parameters())
    unknown = sorted(set(checkpoint.grads) - set(params))
    bad = [n for n, g in checkpoint.grads.items() if n in params and g.shape != params[n].shape]
    if unknown or bad:
        raise CheckpointError(checkpoint.folder / grads_file(rank),
                              f"gradients of no such parameter {unknown[:3]} or of another shape {bad[:3]}")
    for name, p in params.items():
        grad = checkpoint.grads.get(name)
        p.grad = None if grad is None else grad.to(device=p.device, dtype=p.dtype)


def _like(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """``saved`` with JSON lists turned back into tuples where the optimizer has tuples (betas)."""
    groups = [{k: tuple(v) if isinstance(now.get(k), tuple) and isinstance(v, list) else v for k, v in g.items()}
              for g, now in zip(saved["param_groups"], current["param_groups"])]
    return {"state": saved["state"], "param_groups": groups + saved["param_groups"][len(groups):]}


# ---------------------------------------------------------------- saving

def save_checkpoint(acc, root: Path, step: int, model: torch.nn.Module, optimizer, progress: dict[str, Any],
                    extra: dict[str, Any]) -> Path:
    """Save the training state as ``root/step-<step>`` (a collective; the main process writes).

    ``progress`` and each of ``extra`` (file name -> JSON value) are written as JSON. The
    folder is written as ``tmp-<step>``, verified, renamed, and only then are checkpoints
    beyond the newest :data:`KEEP` deleted. A failed save (e.g. a full disk) removes its
    ``tmp`` folder, keeps the earlier checkpoints and raises OSError on every process.
    """
    rng = _gather_rng(acc)
    grads = _gather_grads(acc, model)
    weights = acc.get_state_dict(model)
    final, problem = root / f"step-{step}", None  # None: written (or not the main process)
    if acc.is_main_process:
        files = {WEIGHTS_FILE: _safetensors(weights), **_optimizer_files(optimizer.state_dict()),
                 PROGRESS_FILE: _json_bytes(progress),
                 ACCELERATOR_FILE: _json_bytes({"step": acc.step, "scaler": _scaler_state(acc)}),
                 **{rng_file(r): blob.rstrip(b" ") for r, blob in enumerate(rng)},
                 **{grads_file(r): _safetensors(g) for r, g in enumerate(grads or [])},
                 **{name: _json_bytes(value) for name, value in extra.items()}}
        try:
            _write_verified(root, step, files, acc.num_processes)
            _prune(root)
        except (OSError, CheckpointError) as exc:
            problem = str(exc) or type(exc).__name__
            shutil.rmtree(root / f"tmp-{step}", ignore_errors=True)
    if not _everywhere(acc, problem is None):
        kept = latest_checkpoint(root)
        raise OSError(f"{root / f'tmp-{step}'}: the checkpoint could not be written "
                      f"({problem or 'it failed on the main process'}); removed it, and kept "
                      f"{kept.name if kept else 'no earlier checkpoint'}")
    return final


def _gather_grads(acc, model: torch.nn.Module) -> list[dict[str, torch.Tensor]] | None:
    """Each process's gradients while an accumulation is half done (None when the optimizer
    has just stepped), on the main process (a collective): without them a resumed run would
    drop the micro-batches already accumulated. Flattened to [processes, parameters' numel]."""
    if acc.sync_gradients:
        return None
    params = [(n, p) for n, p in acc.unwrap_model(model).named_parameters() if p.requires_grad]
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().flatten().float()
                      for _, p in params])
    has = torch.tensor([p.grad is not None for _, p in params], dtype=torch.uint8, device=flat.device)
    if acc.num_processes > 1:
        flat, has = acc.gather(flat), acc.gather(has)
    flat, has = flat.reshape(acc.num_processes, -1).cpu(), has.reshape(acc.num_processes, -1).cpu()
    per_rank = []
    for r in range(acc.num_processes):
        grads, offset = {}, 0
        for i, (name, p) in enumerate(params):
            if has[r, i]:
                grads[name] = flat[r, offset:offset + p.numel()].reshape(p.shape).to(p.dtype)
            offset += p.numel()
        per_rank.append(grads)
    return per_rank


def _write_verified(root: Path, step: int, files: dict[str, bytes], num_processes: int) -> None:
    """Write ``files`` and their manifest into ``tmp-<step>``, read them back, rename to ``step-<step>``."""
    tmp, final = root / f"tmp-{step}", root / f"step-{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, data in files.items():
        _write(tmp / name, data)
    manifest = {"format": FORMAT, "version": VERSION, "step": step, "num_processes": num_processes,
                "files": {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                          for name, data in sorted(files.items())}}
    _write(tmp / MANIFEST_FILE, _json_bytes(manifest))
    read_checkpoint(tmp, 0)
    if final.exists():  # the same step saved again (end of epoch): keep it until the new one is in
        old = root / f"old-{final.name}"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
    _fsync_dir(root)


def _prune(root: Path) -> None:
    for old in complete_checkpoints(root)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)


def _safetensors(tensors: dict[str, torch.Tensor]) -> bytes:
    """Tensors as safetensors bytes; each is copied (safetensors refuses shared storage)."""
    return safetensors.torch.save({k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()})


def _optimizer_files(state_dict: dict[str, Any]) -> dict[str, bytes]:
    """A torch optimizer state_dict as tensors (safetensors) plus the rest (JSON)."""
    tensors, per_param = {}, {}
    for index, values in state_dict["state"].items():
        per_param[str(index)] = {k: v for k, v in values.items() if not isinstance(v, torch.Tensor)}
        tensors.update({f"state/{index}/{k}": v for k, v in values.items() if isinstance(v, torch.Tensor)})
    return {OPTIMIZER_TENSORS_FILE: _safetensors(tensors),
            OPTIMIZER_FILE: _json_bytes({"param_groups": state_dict["param_groups"], "state": per_param})}


def _scaler_state(acc) -> dict[str, Any] | None:
    return None if acc.scaler is None else dict(acc.scaler.state_dict())


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=1) + "\n").encode()


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not every platform opens folders
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
