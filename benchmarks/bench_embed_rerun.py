"""Re-running `mmi embed` on an unchanged catalog: time as a fraction of the first run.

    python benchmarks/bench_embed_rerun.py --items 20000

Goal: the re-run takes <= 2% of the first run's time (it reads content hashes, encodes nothing).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import amazon_item_texts, machine, markdown_table  # noqa: E402

from multimodal_interest.catalog import Catalog  # noqa: E402
from multimodal_interest.embed import embed_catalog, load_encoders  # noqa: E402
from multimodal_interest.store import EmbeddingStore  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--items", type=int, default=20000)
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "items.csv"
        amazon_item_texts().head(args.items).to_csv(path, index=False)
        store = EmbeddingStore(Path(tmp) / "store")
        encoders = load_encoders({"text": "sentence-transformer"}, device="cpu")
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            summary = embed_catalog(Catalog.read(path), store, "amazon", encoders,
                                    batch_size=args.batch_size, show_progress=False)
            times.append(time.perf_counter() - t0)
            m = summary.modalities[0]
            print(f"run: encoded {m.encoded}, reused {m.reused}, {times[-1]:.2f}s", file=sys.stderr)
    print(f"Machine: {machine()}\n")
    print(markdown_table(["catalog items", "first run (s)", "re-run (s)", "re-run / first"],
                         [[args.items, f"{times[0]:.1f}", f"{times[1]:.2f}", f"{times[1] / times[0]:.2%}"]]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
