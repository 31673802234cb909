"""Peak memory (RSS) of an embedding job as the catalog grows: it must stay flat.

    python benchmarks/bench_embed_memory.py --sizes 10000 100000

Each size runs in a fresh process (`mmi embed` on a catalog of real Amazon item text; beyond
the 38k real items, texts are real titles paired with another item's attributes, so every
item is distinct). Reported: peak RSS of that process and its growth over the smallest size.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import amazon_item_texts, machine, markdown_table  # noqa: E402


def make_catalog(n: int, path: Path) -> None:
    base = amazon_item_texts()
    m = len(base)
    rows = [(f"it{i}", base.at[i % m, "title"], base.at[(i * 7 + i // m) % m, "attribute"]) for i in range(n)]
    import pandas as pd

    pd.DataFrame(rows, columns=["item_id", "title", "attribute"]).to_csv(path, index=False)


def child(catalog: str, store: str, batch_size: int) -> None:
    from multimodal_interest.cli import main

    t0 = time.perf_counter()
    rc = main(["-q", "embed", catalog, "--store", store, "--platform", "p", "--device", "cpu",
               "--batch-size", str(batch_size)])
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"RESULT {peak_kb} {time.perf_counter() - t0:.1f} {rc}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(*args.child, args.batch_size)
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            cat = Path(tmp) / f"items{n}.csv"
            make_catalog(n, cat)
            out = subprocess.run([sys.executable, __file__, "--batch-size", str(args.batch_size),
                                  "--child", str(cat), str(Path(tmp) / f"store{n}")],
                                 capture_output=True, text=True, env=os.environ, check=True).stdout
            kb, secs, rc = next(line for line in out.splitlines() if line.startswith("RESULT")).split()[1:]
            rows.append([n, int(kb) / 1024, float(secs), rc])
            print(f"{n} items: peak {int(kb) / 1024:.0f} MiB in {secs}s", file=sys.stderr)
    base = rows[0][1]
    print(f"Machine: {machine()}\n")
    print(markdown_table(["catalog items", "peak RSS (MiB)", "vs smallest", "time (s)", "items/s"],
                         [[n, f"{mb:.0f}", f"{mb / base:.2f}x", f"{s:.0f}", f"{n / s:.0f}"]
                          for n, mb, s, _ in rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
