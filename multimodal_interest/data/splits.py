"""User-wise cold-start splits, saved with the dataset so that every method sees the same users.

A split is ``splits/<name>.csv`` with columns ``user_id, role, target`` plus
``splits/<name>.json`` (how it was made). ``role`` is ``valid`` or ``test``; ``target`` is
the platform on which the user is cold (their interactions there are hidden), or ``*`` for
every target. Users not listed are training users.

Random splits follow PTUPCDR: a ``ratio`` of the overlapping users (active on at least two
platforms) become test users, a further ``valid_ratio`` of them valid users, drawn with
``numpy.random.default_rng(seed)`` over the overlapping users sorted by id.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fusion.files import MANIFEST_LIMIT, FileRefused, expect_mapping, read_json
from multimodal_interest.data.errors import DatasetError, Problems
from multimodal_interest.data.paths import OutsideFolder, inside
from multimodal_interest.data.tables import ROW_LIMIT, read_table, write_table

ROLES = ("valid", "test")
ANY = "*"
RATIOS = (0.2, 0.5, 0.8)  # PTUPCDR's held-out shares of the overlapping users
SEEDS = (900, 1000, 10, 2020, 500)
VALID_RATIO = 0.1
PUBLISHED = "published"


@dataclass(frozen=True)
class Split:
    name: str
    users: pd.DataFrame  # user_id, role, target
    meta: dict = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {role: int(self.users.loc[self.users["role"] == role, "user_id"].nunique())
                for role in ROLES}


def split_name(ratio: float, seed: int) -> str:
    """``cold20_seed900`` for ratio 0.2 and seed 900."""
    return f"cold{round(ratio * 100):02d}_seed{seed}"


def overlapping_users(dataset) -> np.ndarray:
    """[K] int64 user_idx of users active on at least two platforms."""
    active = np.stack([dataset.active_users(p) for p in dataset.platforms])
    return np.flatnonzero(active.sum(0) >= 2)


def random_split(dataset, ratio: float, seed: int, valid_ratio: float = VALID_RATIO) -> Split:
    """Hold out ``ratio`` of the overlapping users as test and ``valid_ratio`` as valid users."""
    if not 0 < ratio < 1 or not 0 <= valid_ratio < 1 or ratio + valid_ratio > 1:
        raise ValueError(f"need 0 < ratio < 1, 0 <= valid_ratio < 1 and ratio + valid_ratio <= 1; "
                         f"got ratio={ratio}, valid_ratio={valid_ratio}")
    ids = np.sort(dataset.user_ids[overlapping_users(dataset)])
    if len(ids) < 2:
        raise ValueError(f"dataset {dataset.name!r} has {len(ids)} overlapping users; a cold-start "
                         "split needs users active on at least two platforms")
    n_test = int(np.floor(ratio * len(ids) + 0.5))
    n_valid = min(int(np.floor(valid_ratio * len(ids) + 0.5)), len(ids) - n_test)
    chosen = ids[np.random.default_rng(seed).permutation(len(ids))[:n_test + n_valid]]
    users = pd.DataFrame({"user_id": chosen, "role": ["test"] * n_test + ["valid"] * n_valid,
                          "target": ANY})
    meta = {"kind": "random", "dataset": dataset.name, "ratio": ratio, "seed": seed,
            "valid_ratio": valid_ratio, "overlapping_users": len(ids), "test": n_test,
            "valid": n_valid, "rule": "test/valid users drawn from users active on >= 2 "
            "platforms (sorted by id) with numpy default_rng(seed).permutation; they are cold "
            "on every target platform"}
    return Split(split_name(ratio, seed), users.sort_values(["role", "user_id"], ignore_index=True),
                 meta)


def read_user_list(path: Path, role: str, users: pd.Index, platforms: list[str],
                   problems: Problems) -> pd.DataFrame:
    """``user_id, role, target`` of the users listed in ``path`` as ``role`` users.

    ``path``: a ``.txt`` of one user id per line, or a table (CSV, TSV, Parquet, JSONL) with
    a ``user_id`` (or ``user``) column and an optional ``target`` column (a platform or
    ``*``; ``*`` when absent). Unknown users, roles and targets are problems at their line.
    """
    empty = pd.DataFrame(columns=["user_id", "role", "target"], dtype="str")
    if role not in ROLES:
        problems.add(str(path), f"unknown role {role!r} for a user list (expected "
                                f"{' or '.join(ROLES)}, e.g. test=test_users.txt)")
        return empty
    if path.suffix == ".txt":
        if not path.is_file():
            problems.add(str(path), "file not found")
            return empty
        lines = path.read_text(encoding="utf-8").splitlines()
        rows = [(i, line.strip()) for i, line in enumerate(lines, 1) if line.strip()]
        for line, user in rows:
            if user not in users:
                problems.add(str(path), f"user {user!r} is not in the interactions", line=line)
        ids = pd.Series([u for _, u in rows], dtype="str")
        targets = pd.Series([ANY] * len(ids), dtype="str")
    else:
        table = read_table(path, str(path), problems, ("user", "user_id", "target"))
        if table is None:
            return empty
        table.alias("user", "user_id")
        if not table.require(problems, "user_id"):
            return empty
        ids = table.text("user_id", problems)
        table.flag(problems, (users.get_indexer(ids) < 0) & (ids != "").to_numpy(), "user_id",
                   "user {value} is not in the interactions", ids)
        targets = (table.text("target", problems) if "target" in table.frame.columns
                   else pd.Series([ANY] * len(ids), dtype="str"))
        table.flag(problems, ~targets.isin([*platforms, ANY]).to_numpy(), "target",
                   f"unknown target {{value}} (expected one of {', '.join(platforms)} or '*')",
                   targets)
    return pd.DataFrame({"user_id": ids.to_numpy(), "role": role, "target": targets.to_numpy()})


def given_split(name: str, lists: dict[str, Path], users: pd.Index, platforms: list[str]) -> Split:
    """The split ``name`` of the users listed per role (:func:`read_user_list`) among
    ``users`` (ids) of ``platforms``; raises ``DatasetError`` naming every bad line."""
    problems = Problems()
    parts = [read_user_list(Path(p), role, users, platforms, problems) for role, p in lists.items()]
    problems.raise_if_any(f"split {name!r}")
    chosen = pd.concat(parts, ignore_index=True)
    clash = chosen.duplicated(["user_id", "target"], keep=False) | (
        chosen["user_id"].duplicated(keep=False) & (chosen["target"] == ANY))
    for user in pd.unique(chosen.loc[clash, "user_id"])[:ROW_LIMIT]:
        where = ", ".join(str(lists[r]) for r in pd.unique(chosen.loc[chosen["user_id"] == user, "role"]))
        problems.add(where, f"user {user!r} is listed more than once for the same target")
    problems.raise_if_any(f"split {name!r}")
    meta = {"kind": "given", "from": {role: str(p) for role, p in lists.items()}}
    meta |= {role: int(chosen.loc[chosen["role"] == role, "user_id"].nunique()) for role in ROLES}
    return Split(name, chosen.sort_values(["role", "user_id"], ignore_index=True), meta)


def list_splits(root: Path) -> list[str]:
    folder = Path(root) / "splits"
    return sorted(p.stem for p in folder.glob("*.csv")) if folder.is_dir() else []


def save_split(root: Path, split: Split) -> Path:
    """Write ``splits/<name>.csv`` and ``.json``; an existing split must be identical."""
    path = Path(root) / "splits" / f"{split.name}.csv"
    users = split.users[["user_id", "role", "target"]].astype("str")
    if path.exists():
        if _same(pd.read_csv(path, dtype=str, keep_default_na=False), users):
            return path
        raise FileExistsError(f"{path} exists with other users; delete it to replace the split")
    meta = path.with_suffix(".json")  # first: the .csv is what makes the split exist
    meta.parent.mkdir(parents=True, exist_ok=True)
    tmp = meta.with_name(f".{meta.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"name": split.name, **split.meta}, indent=2) + "\n")
    os.replace(tmp, meta)
    write_table(users, path)
    return path


def _same(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    key = ["user_id", "role", "target"]
    return a[key].astype(str).sort_values(key, ignore_index=True).equals(
        b[key].astype(str).sort_values(key, ignore_index=True))


def load_split(root: Path, name: str, platforms: list[str], user_index: pd.Index) -> Split:
    """Read and check a saved split against the dataset's platforms and users."""
    path = Path(root) / "splits" / f"{name}.csv"
    if not path.is_file():
        have = ", ".join(list_splits(root)) or "none"
        raise DatasetError([], f"dataset {root}: no split {name!r} (saved splits: {have}; "
                               f"make one with `mmi split {root}`)")
    problems = Problems()
    shown = f"splits/{path.name}"
    real = _inside(root, shown, problems)
    table = None if real is None else read_table(real, shown, problems, ("user_id", "role", "target"), "csv")
    if table is not None and table.require(problems, "user_id", "role", "target"):
        users = pd.DataFrame({c: table.text(c, problems) for c in ("user_id", "role", "target")})
        table.flag(problems, ~users["role"].isin(ROLES).to_numpy(), "role",
                   f"unknown role {{value}} (expected {' or '.join(ROLES)})", users["role"])
        table.flag(problems, ~users["target"].isin([*platforms, ANY]).to_numpy(), "target",
                   f"unknown target {{value}} (expected one of {', '.join(platforms)} or '*')",
                   users["target"])
        table.flag(problems, user_index.get_indexer(users["user_id"]) < 0, "user_id",
                   "user {value} is not in the dataset", users["user_id"])
        clash = users.duplicated(["user_id", "target"], keep=False) | (
            users["user_id"].duplicated(keep=False) & (users["target"] == ANY))
        table.flag(problems, clash.to_numpy(), "user_id",
                   "user {value} is listed more than once for the same target", users["user_id"])
    meta = _meta(root, f"splits/{name}.json", problems)
    problems.raise_if_any(f"split {name!r}")
    return Split(name, users, meta)


def _inside(root: Path, shown: str, problems: Problems) -> Path | None:
    """The real path of a split's file, if it stays inside the dataset folder (the loader
    rule: a link that leads out is a problem, and the file it names is never read)."""
    try:
        return inside(root, shown)
    except OutsideFolder as exc:
        problems.add(shown, str(exc))
        return None


def _meta(root: Path, shown: str, problems: Problems) -> dict:
    """How a split was made (``splits/<name>.json``, a JSON object; {} if there is none),
    read by the loader rule (inside the folder, bounded size and depth)."""
    path = _inside(root, shown, problems)
    if path is None or not path.exists():
        return {}
    try:
        return expect_mapping(read_json(path, MANIFEST_LIMIT, shown), shown)
    except FileRefused as exc:
        problems.add(shown, exc.reason)
        return {}
