"""The one rule for every file the toolkit reads, and its one file hash.

Every loader (datasets, splits, embedding stores, runs, saved models, bundles) reads through
here, so a file gets the same checks wherever it is met:

* **inside its folder**: the real path (links followed, ``..`` applied) must lie inside the
  real path of the folder it belongs to (:func:`real_inside`, :meth:`Folder.file`);
* **bounded**: a size cap before a byte is parsed (:func:`read_bytes`), a nesting-depth cap
  checked without recursion before JSON is parsed (:func:`parse_json`);
* **shapes before memory**: a safetensors file's header is read and checked on its own
  (:func:`safetensors_header`: 8-byte little-endian length, then bounded JSON) so that a
  tensor's size is compared with what describes it before anything of that size is
  allocated (:func:`check_tensors`);
* **a named error**: anything wrong is a :class:`FileRefused` naming the file (and the field
  or tensor), never a library's traceback.

:func:`sha256_file` is the project's one file hash: model and bundle manifests, dataset
downloads and encoder fingerprints all call it; :func:`verify_hashes` checks the hashes a
manifest records. Standard library only (safetensors is imported only to load tensors), so
any layer may import it (``fusion`` itself imports neither ``encoders`` nor
``multimodal_interest``).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

JSON_LIMIT = 1 << 30  # bytes of a JSON file of data (item ids, titles of a big catalog)
MANIFEST_LIMIT = 16 << 20  # bytes of a manifest or config: small by nature
DEPTH_LIMIT = 64  # nesting of JSON arrays and objects (and YAML collections)
HEADER_LIMIT = 100 << 20  # bytes of a safetensors header (safetensors' own cap)
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2,
               "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


class FileRefused(ValueError):
    """A file the toolkit will not read as it is: it leads out of its folder, is too big or
    nested too deep, is not the kind of file it must be, or disagrees with what describes
    it. The message names the file, then the field or tensor where there is one."""

    def __init__(self, path: str | os.PathLike, reason: str, field: str | None = None) -> None:
        self.path, self.reason, self.field = str(path), reason, field
        super().__init__(f"{path}: {f'{field}: ' if field else ''}{reason}")


# ------------------------------------------------------------------ where a file may be
def real_inside(folder: str | os.PathLike, relative: str) -> Path | None:
    """The real path of ``folder/relative`` (links followed, ``..`` applied) when it lies
    inside the real path of ``folder``; None when it leads out. The file need not exist."""
    if "\0" in relative:
        return None
    real_folder = os.path.realpath(folder)
    real = os.path.realpath(os.path.join(real_folder, relative))
    return Path(real) if os.path.commonpath([real_folder, real]) == real_folder else None


def inside(folder: Path, relative: str, manifest: Path, where: str) -> Path:
    """``folder / relative``, refusing a path recorded in ``manifest`` that leads out of
    ``folder`` (``where`` names it in the error: "the bundle", ...)."""
    if not isinstance(relative, str) or real_inside(folder, relative) is None:
        raise FileRefused(manifest, f"path {relative!r} leads out of {where}")
    return folder / relative


@dataclass(frozen=True)
class Folder:
    """A folder whose files a loader reads (a bundle, a saved model, a vector set, a dataset,
    a run), named ``what`` in errors ("the bundle"). Every read goes through :meth:`file`."""

    root: Path
    what: str

    def file(self, relative: str, recorded_in: str | os.PathLike | None = None) -> Path:
        """The real path of ``relative``, which must stay inside the folder (a link that
        leads out is refused, naming ``recorded_in``, the file that named it, if any)."""
        real = real_inside(self.root, relative) if isinstance(relative, str) else None
        if real is None:
            shown = recorded_in if recorded_in is not None else Path(self.root) / str(relative)
            raise FileRefused(shown, f"path {relative!r} leads out of {self.what} (links followed)")
        return real

    def json(self, relative: str, limit: int = JSON_LIMIT,
             recorded_in: str | os.PathLike | None = None) -> Any:
        """:func:`read_json` of a file of this folder."""
        return read_json(self.file(relative, recorded_in), limit, shown=Path(self.root) / relative)

    def header(self, relative: str, recorded_in: str | os.PathLike | None = None) -> dict[str, TensorInfo]:
        """:func:`safetensors_header` of a file of this folder."""
        return safetensors_header(self.file(relative, recorded_in), shown=Path(self.root) / relative)


# ------------------------------------------------------------------ bytes and JSON
def read_bytes(path: str | os.PathLike, limit: int, shown: str | os.PathLike | None = None) -> bytes:
    """The bytes of the file at ``path``, at most ``limit`` of them (a bigger file is refused
    before it is read). A missing file: FileNotFoundError naming it."""
    path, shown = Path(path), shown if shown is not None else path
    if not path.exists():
        raise FileNotFoundError(f"{shown}: missing")
    if not path.is_file():
        raise FileRefused(shown, "not a file")
    size = path.stat().st_size
    if size > limit:
        raise FileRefused(shown, f"{size} bytes, more than the {limit} a file of this kind may have")
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:  # grew while being read
        raise FileRefused(shown, f"more than the {limit} bytes a file of this kind may have")
    return data


def read_json(path: str | os.PathLike, limit: int = JSON_LIMIT,
              shown: str | os.PathLike | None = None) -> Any:
    """The JSON document in the file at ``path``: at most ``limit`` bytes, nested at most
    :data:`DEPTH_LIMIT` deep; else :class:`FileRefused` naming the file (``shown``, if given)."""
    return parse_json(read_bytes(path, limit, shown), shown if shown is not None else path)


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.S)  # a string, or one left open to the end
_NOT_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def nesting_depth(data: bytes) -> int:
    """How deep the arrays and objects of JSON text nest, counted without recursion
    (brackets outside strings)."""
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKET)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def lines_nesting_depth(path: str | os.PathLike, block: int = 16 << 20) -> int:
    """The deepest nesting of the JSON lines in the file at ``path`` (JSONL), read in blocks
    of whole lines (a string cannot hold a raw newline): exact for balanced lines, more for a
    line left open (which is not JSON anyway). Check it before a parser that recurses in C
    (pyarrow's JSON reader crashes the process on a line nested 100,000 deep)."""
    deepest, carry = 0, b""
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            chunk, _, carry = (carry + chunk).rpartition(b"\n") if b"\n" in chunk else (b"", b"", carry + chunk)
            deepest = max(deepest, nesting_depth(chunk))
    return max(deepest, nesting_depth(carry))


def parse_json(data: bytes | str, where: str | os.PathLike, depth: int = DEPTH_LIMIT) -> Any:
    """JSON text read from ``where``, nested at most ``depth`` deep; anything that is not
    such JSON (bad syntax, not UTF-8, a number too long to convert) is :class:`FileRefused`."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    found = nesting_depth(raw)
    if found > depth:
        raise FileRefused(where, f"JSON nested {found} deep, more than the {depth} allowed")
    try:
        return json.loads(data)
    except RecursionError:  # not reached after the depth check; kept as the last guard
        raise FileRefused(where, f"JSON nested more than {depth} deep") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, an over-long integer
        raise FileRefused(where, f"not valid JSON ({e})") from None


def expect_mapping(doc: Any, where: str | os.PathLike, field: str | None = None) -> dict:
    """``doc`` if it is a JSON object; else :class:`FileRefused` naming ``where`` and ``field``."""
    if not isinstance(doc, dict):
        raise FileRefused(where, f"expected a JSON object, found {_kind(doc)}", field)
    return doc


def _kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


# ------------------------------------------------------------------ safetensors
@dataclass(frozen=True)
class TensorInfo:
    """One tensor as a safetensors header describes it."""

    dtype: str  # "F32", "BOOL", ...
    shape: tuple[int, ...]


def safetensors_header(path: str | os.PathLike, shown: str | os.PathLike | None = None) -> dict[str, TensorInfo]:
    """The tensors of a safetensors file, from its header alone (nothing of their size is
    allocated): an 8-byte little-endian length ``n``, then ``n`` bytes of JSON mapping each
    name to dtype, shape and byte offsets. The header must be bounded, and the offsets must
    tile the rest of the file exactly, each span as long as its shape and dtype say; else
    :class:`FileRefused` naming the file and the tensor."""
    path = Path(path)
    shown = shown if shown is not None else path
    if not path.is_file():
        raise FileNotFoundError(f"{shown}: missing")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise FileRefused(shown, f"{len(head)} bytes: too short for a safetensors file")
        n = int.from_bytes(head, "little")
        if n > min(HEADER_LIMIT, size - 8):
            raise FileRefused(shown, f"safetensors header length {n}: more than the file's "
                                     f"{size - 8} remaining bytes or the {HEADER_LIMIT} allowed")
        doc = expect_mapping(parse_json(f.read(n), shown), shown, "safetensors header")
    data_len, spans, out = size - 8 - n, [], {}
    for name, entry in doc.items():
        if name == "__metadata__":
            continue
        info, span = _tensor_entry(entry, shown, name, data_len)
        out[name] = info
        spans.append((span, name))
    end = 0
    for (begin, stop), name in sorted(spans):
        if begin != end:
            raise FileRefused(shown, f"data offsets [{begin}, {stop}] leave a gap or overlap "
                                     f"another tensor's bytes", f"tensor {name!r}")
        end = stop
    if end != data_len:
        raise FileRefused(shown, f"the tensors hold {end} bytes but the file has {data_len} after "
                                 f"its header (cut short, or bytes appended)")
    return out


def _tensor_entry(entry: Any, shown: str | os.PathLike, name: str,
                  data_len: int) -> tuple[TensorInfo, tuple[int, int]]:
    field = f"tensor {name!r}"
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise FileRefused(shown, "expected dtype, shape and data_offsets", field)
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPE_BYTES:
        raise FileRefused(shown, f"unknown dtype {dtype!r}", field)
    if not isinstance(shape, list) or not all(_count(d) for d in shape):
        raise FileRefused(shown, f"shape {shape!r} is not a list of sizes", field)
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_count(o) for o in offsets)
            and offsets[0] <= offsets[1] <= data_len):
        raise FileRefused(shown, f"data offsets {offsets!r} are not within the file's {data_len} "
                                 f"bytes of data", field)
    need = math.prod(shape) * DTYPE_BYTES[dtype]
    if offsets[1] - offsets[0] != need:
        raise FileRefused(shown, f"shape {shape} of {dtype} needs {need} bytes, its offsets span "
                                 f"{offsets[1] - offsets[0]}", field)
    return TensorInfo(dtype, tuple(shape)), (offsets[0], offsets[1])


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_tensors(path: str | os.PathLike, header: Mapping[str, TensorInfo],
                  expected: Mapping[str, tuple[int, ...]], described_by: str) -> None:
    """The tensors of ``header`` (read from ``path``) are exactly ``expected`` (name ->
    shape), as ``described_by`` (the config that says so) makes them; else
    :class:`FileRefused` naming the file and the first tensor that differs."""
    missing = [k for k in expected if k not in header]
    extra = [k for k in header if k not in expected]
    if missing or extra:
        raise FileRefused(path, f"tensors differ from what {described_by} describes (missing: "
                                f"{missing[:5] or 'none'}; unexpected: {extra[:5] or 'none'})")
    for name, shape in expected.items():
        if tuple(header[name].shape) != tuple(shape):
            raise FileRefused(path, f"shape {list(header[name].shape)} on disk, but {described_by} "
                                    f"makes it {list(shape)}", f"tensor {name!r}")


def load_tensors(path: str | os.PathLike, shown: str | os.PathLike | None = None) -> dict[str, Any]:
    """The tensors (torch) of a safetensors file whose header :func:`safetensors_header`
    accepts; whatever safetensors still refuses is :class:`FileRefused`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    shown = shown if shown is not None else path
    safetensors_header(path, shown)
    try:
        return load_file(str(path))
    except (SafetensorError, RuntimeError) as e:
        raise FileRefused(shown, f"not a readable safetensors file ({e})") from None


# ------------------------------------------------------------------ hashes
def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks. Never cached, so an integrity check
    always reads the bytes as they are now."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_hashes(folder: Path, recorded: Mapping[str, str], needed: Iterable[str], manifest: Path,
                  owner: str, where: str, changed: str, remedy: str) -> None:
    """Every file ``recorded`` (path relative to ``folder`` -> sha256) lies inside ``folder``,
    exists and has that hash, and every ``needed`` file is recorded; else an error naming the
    file. ``owner`` ("the bundle") and ``where`` ("the bundle", "the model folder") name what
    was saved; ``changed`` says what a mismatch means, ``remedy`` what to do."""
    unrecorded = [f for f in needed if f not in recorded]
    if unrecorded:
        raise ValueError(f"{folder / unrecorded[0]}: not recorded in {manifest}, so it cannot be "
                         f"verified; {remedy}")
    for relative, want in recorded.items():
        path = inside(folder, relative, manifest, where)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (recorded in {manifest}); {remedy}")
        got = sha256_file(path)
        if got != want:
            raise ValueError(f"{path}: sha256 {got} but {owner}'s manifest records {want}: {changed}; {remedy}")
