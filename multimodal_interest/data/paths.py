"""The one rule for paths read from a table: a file may be used only from inside its folder.

Every reader of media (``mmi embed CATALOG``, ``mmi embed``/``mmi validate`` of a dataset
folder, the dataset loader) and of a manifest's table paths goes through :func:`inside`:
the real path of the file (symbolic links followed, ``..`` applied) must lie inside the
real path of the folder. A link that stays inside the folder is fine; one that leads out of
it (``media/x.png -> /etc/passwd``) is refused, with the same message everywhere.
"""
from __future__ import annotations

import os
from pathlib import Path

from fusion.files import real_inside


class OutsideFolder(ValueError):
    """A path read from a table leads outside the folder it must stay in."""


def inside(folder: str | Path, value: str) -> Path:
    """The real path that ``value`` (as written in a table, relative to ``folder``) names.

    Raises :class:`OutsideFolder` when that real path, links followed, is not ``folder``'s
    real path or below it. The file need not exist (see :func:`media_file`).
    """
    if "\0" in value:
        raise OutsideFolder(f"path {value!r} holds a NUL character, which no file name can")
    real = real_inside(folder, value)  # the loader rule of every file read (fusion/files.py)
    if real is None:
        raise OutsideFolder(f"path {value!r} leaves {os.path.abspath(folder)} (its real path, links "
                            f"followed, is {os.path.realpath(os.path.join(os.path.realpath(folder), value))})")
    return real


def media_file(folder: str | Path, value: str) -> Path:
    """:func:`inside`, and the file must exist: FileNotFoundError naming ``value`` if not.

    Open the returned real path, not ``folder / value``: it is the file that was checked.
    """
    path = inside(folder, value)
    if not path.is_file():
        raise FileNotFoundError(f"media file {value!r} not found")
    return path
