"""What a dataset holds: users, items and interactions per platform, overlap, history lengths."""
from __future__ import annotations

from itertools import combinations

import numpy as np

QUANTILES = {"min": 0.0, "p25": 0.25, "median": 0.5, "p75": 0.75, "p90": 0.9, "max": 1.0}


def dataset_stats(dataset) -> dict:
    """A JSON-able summary of ``dataset`` (a :class:`CrossPlatformDataset`)."""
    inter = dataset.interactions
    codes = inter["platform"].cat.codes.to_numpy()
    users = inter["user_idx"].to_numpy()
    active = {p: dataset.active_users(p) for p in dataset.platforms}
    platforms = {}
    for k, p in enumerate(dataset.platforms):
        rows = codes == k
        lengths = np.bincount(users[rows], minlength=dataset.n_users)[active[p]]
        pairs = inter.loc[rows, ["user_idx", "item_idx"]]
        platforms[p] = {
            "users": int(active[p].sum()),
            "items": dataset.n_items[p],
            "items with interactions": int(inter.loc[rows, "item_idx"].nunique()),
            "interactions": int(rows.sum()),
            "repeated user-item interactions": int(pairs.duplicated().sum()),
            "history length": {name: float(np.quantile(lengths, q)) if len(lengths) else 0.0
                               for name, q in QUANTILES.items()}
                              | {"mean": float(lengths.mean()) if len(lengths) else 0.0},
            "empty text cells": {c: int((dataset.items[p][c] == "").sum())
                                 for c in dataset.text_fields(p)},
        }
    on = np.stack(list(active.values())).sum(0) if active else np.zeros(0)
    return {
        "name": dataset.name,
        "synthetic": dataset.synthetic,
        "users": dataset.n_users,
        "interactions": len(inter),
        "overlapping users (on 2+ platforms)": int((on >= 2).sum()),
        "overlap by pair": {f"{a} & {b}": int((active[a] & active[b]).sum())
                            for a, b in combinations(dataset.platforms, 2)},
        "platforms": platforms,
        "splits": dataset.splits(),
        "import report": dict(dataset.manifest.import_report),
    }


def format_stats(stats: dict) -> str:
    """The summary as Markdown for a terminal."""
    mark = "  **SYNTHETIC platforms**" if stats["synthetic"] else ""
    out = [f"# {stats['name']}{mark}", "",
           f"users {stats['users']:,} | interactions {stats['interactions']:,} | overlapping "
           f"users {stats['overlapping users (on 2+ platforms)']:,}"]
    out += [f"overlap {pair}: {n:,}" for pair, n in stats["overlap by pair"].items()]
    q = list(QUANTILES) + ["mean"]
    out += ["", "| platform | users | items (with interactions) | interactions | repeats | "
                "history length " + " / ".join(q) + " |", "|---|---|---|---|---|---|"]
    for p, s in stats["platforms"].items():
        hist = " / ".join(f"{s['history length'][k]:.4g}" for k in q)
        out.append(f"| {p} | {s['users']:,} | {s['items']:,} ({s['items with interactions']:,}) | "
                   f"{s['interactions']:,} | {s['repeated user-item interactions']:,} | {hist} |")
    empty = [f"{p}.{c}: {n:,}" for p, s in stats["platforms"].items()
             for c, n in s["empty text cells"].items() if n]
    if empty:
        out += ["", "empty text cells: " + ", ".join(empty)]
    if stats["import report"]:
        out += ["", "import report (rows read, kept, dropped):"]
        out += [f"  {k}: {v:,}" for k, v in stats["import report"].items()]
    out += ["", "splits: " + (", ".join(stats["splits"]) or "none")]
    return "\n".join(out)
