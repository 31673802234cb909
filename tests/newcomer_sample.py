"""A newcomer's own data, as a team would hand it over: a real sample of Amazon Art/Office
(../shared/data/amazon_art_office) written as plain CSVs -- one long interactions file
(user, platform, item, position, split; rows shuffled, so only ``position`` gives the order)
and one items table per platform with titles and attributes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

ART_ITEMS = 18639  # idAfter below this: art; from it: office


def _users(path: Path, n: int) -> list[tuple[str, list[int]]]:
    """The first ``n`` users of a seq_format file, each with their items in time order
    (the union of their two lines: history, then each line's target)."""
    out: dict[str, list[int]] = {}
    with open(path) as f:
        for line in f:
            uid, _, *entries = line.rstrip("\n").rstrip("\t").split("\t")
            if uid not in out and len(out) == n:
                break
            items = out.setdefault(uid, [])
            items += [int(e.split("|")[0]) for e in entries if int(e.split("|")[0]) not in items]
    return list(out.items())


def write_sample(shared_data: Path, folder: Path, n_train: int = 120, n_valid: int = 30,
                 n_test: int = 30, seed: int = 0, max_items: int | None = None) -> dict[str, Path]:
    """Write ``interactions.csv``, ``items_art.csv`` and ``items_office.csv`` into ``folder``
    (``max_items``: each user's first items only)."""
    src = shared_data / "amazon_art_office"
    names = pd.read_csv(src / "seq_format/userlist.txt", sep="\t", header=None, dtype=str)[0]
    rows = []
    for role, file, n in (("train", "traindata_new.txt", n_train), ("valid", "validdata_new.txt", n_valid),
                          ("test", "testdata_new.txt", n_test)):
        for uid, items in _users(src / "seq_format" / file, n):
            for position, item in enumerate(items[:max_items]):
                rows.append((names[int(uid)], "art" if item < ART_ITEMS else "office", str(item),
                             position, role))
    inter = pd.DataFrame(rows, columns=["user", "platform", "item", "position", "split"])
    inter = inter.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # order: position only
    folder.mkdir(parents=True, exist_ok=True)
    out = {"interactions": folder / "interactions.csv"}
    inter.to_csv(out["interactions"], index=False)
    for platform, file in (("art", "item_listA_F.csv"), ("office", "item_listO_AA_F.csv")):
        items = pd.read_csv(src / file, dtype=str, keep_default_na=False)
        used = set(inter.loc[inter["platform"] == platform, "item"])
        items = items[items["idAfter"].isin(used)]
        table = pd.DataFrame({"item": items["idAfter"], "title": items["item_title"],
                              "attributes": items["item_attribute"]})
        out[platform] = folder / f"items_{platform}.csv"
        table.to_csv(out[platform], index=False)
    return out


if __name__ == "__main__":  # python tests/newcomer_sample.py ../shared/data FOLDER
    import sys

    print(write_sample(Path(sys.argv[1]), Path(sys.argv[2])))
