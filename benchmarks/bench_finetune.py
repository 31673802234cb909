"""Fine-tuning cost on the CPU: items/s of forward+backward against the frozen forward.

MiniLM (the packaged all-MiniLM-L6-v2) encodes the same real Amazon Art item texts, tokenized
once (``ItemTokens``), in every condition of one run, rounds interleaved, best round kept:

* frozen forward: ``torch.no_grad``, eval mode (the reference: what ``mmi embed`` pays);
* forward+backward, every weight learning (``mmi finetune``'s default);
* forward+backward with only the top ``--train-layers`` layers learning;
* the same from cached lower-layer states (``LowerLayerCache``, what ``mmi finetune`` runs
  with ``--train-layers`` and no LoRA): the first round fills the cache (each item through
  the lower layers once, alone; its items/s is printed above the table), the best round is
  the steady state, where a step runs the top layers only;
* forward+backward with LoRA of rank ``--lora-rank`` on every layer;
* forward+backward, every weight, one padded batch instead of length-sorted chunks (what the
  chunking of ``InterestTowers.embed`` saves).

    PYTHONPATH=. python benchmarks/bench_finetune.py                  # 1-3 min on the shared 2 cores
    PYTHONPATH=. python benchmarks/bench_finetune.py --items 256       # 6 min there (load 3-5)
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import amazon_item_texts, machine, markdown_table  # noqa: E402
from encoders.text import combine_text_fields  # noqa: E402
from multimodal_interest.training.finetune.lower_cache import LowerLayerCache  # noqa: E402
from multimodal_interest.training.finetune.model import InterestTowers, adapt, load_base  # noqa: E402
from multimodal_interest.training.finetune.tokens import ItemTokens  # noqa: E402


PLATFORM = "art"


def texts(n: int, seed: int = 0) -> list[str]:
    df = amazon_item_texts().iloc[:18639]  # the Art catalog
    rows = np.random.default_rng(seed).choice(len(df), n, replace=False)
    return [combine_text_fields(r, ["title", "attribute"]) or "-" for r in df.iloc[rows].to_dict("records")]


def one_round(towers: InterestTowers, ids: torch.Tensor, mask: torch.Tensor, items: np.ndarray, batch: int,
              learn: bool) -> float:
    """Seconds to encode every row of ``ids`` (the tokens of ``items``) in batches of ``batch``
    (and backpropagate); from the cached lower-layer states when ``towers`` has a cache."""
    t0 = time.perf_counter()
    for s in range(0, len(ids), batch):
        b_ids, b_mask = ids[s:s + batch], mask[s:s + batch]
        if towers.lower is not None:
            towers.lower.embed([(PLATFORM, int(i)) for i in items[s:s + batch]], towers.chunk_size).sum().backward()
            towers.zero_grad(set_to_none=True)
        elif learn:
            towers.embed(b_ids, b_mask).sum().backward()
            towers.zero_grad(set_to_none=True)
        else:
            with torch.no_grad():
                towers.embed(b_ids, b_mask)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=128)
    ap.add_argument("--batch", type=int, default=128, help="items per step (a step's distinct items)")
    ap.add_argument("--chunk", type=int, default=64, help="items encoded at once within a step, by length")
    ap.add_argument("--max-seq-length", type=int, default=64)
    ap.add_argument("--train-layers", type=int, default=2)
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)

    st, _ = load_base("sentence-transformer")
    st.max_seq_length = args.max_seq_length
    tokens = ItemTokens.build(st.preprocess, texts(args.items), st.tokenizer.pad_token_id or 0)
    # a step's items arrive in no particular order: shuffle, so a padded batch pads as a real one
    items = np.random.default_rng(1).permutation(args.items)
    ids, mask = tokens.batch(items)
    layers = st[0].auto_model.config.num_hidden_layers
    conditions = {  # label -> (base encoder, learns, chunk, options)
        "frozen forward (reference)": (st, False, args.chunk, {}),
        "forward+backward, all weights": (st, True, args.chunk, {}),
        f"forward+backward, top {args.train_layers} layers": (st, True, args.chunk,
                                                               {"train_layers": args.train_layers}),
        f"forward+backward, top {args.train_layers} layers, lower {layers - args.train_layers} cached": (
            st, True, args.chunk, {"train_layers": args.train_layers, "cached": True}),
        f"forward+backward, LoRA rank {args.lora_rank}": (st, True, args.chunk, {"lora_rank": args.lora_rank}),
        "forward+backward, all weights, one padded batch": (st, True, args.batch, {}),
    }
    built = {}
    for label, (base, learn, chunk, options) in conditions.items():
        model = copy.deepcopy(base)
        adapt(model, options.get("lora_rank", 0), 16.0, options.get("train_layers"))
        lower = LowerLayerCache.for_encoder(model, args.train_layers, {PLATFORM: tokens}, (PLATFORM,)) \
            if options.get("cached") else None
        assert lower is not None or not options.get("cached"), "MiniLM splits into embeddings + layers"
        towers = InterestTowers(model, 0.05, chunk, lower).train(learn)
        built[label] = (towers, learn)
    best = {label: float("inf") for label in built}
    first = {}
    for _ in range(args.rounds):  # interleaved: load on the shared machine hits every condition alike
        for label, (towers, learn) in built.items():
            seconds = one_round(towers, ids, mask, items, args.batch, learn)
            first.setdefault(label, seconds)
            best[label] = min(best[label], seconds)
    ref = args.items / best["frozen forward (reference)"]
    filling = next(label for label in built if label.endswith("cached"))
    rows = [[label, f"{args.items / s:.1f}", f"{args.items / s / ref:.2f}"] for label, s in best.items()]
    n = tokens.lengths(np.arange(args.items))
    print(f"`PYTHONPATH=. python benchmarks/bench_finetune.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
          f" on {machine()}; {args.items} Art item texts, tokens per item mean {n.mean():.1f} "
          f"(max {n.max()}, cut at {args.max_seq_length}), {args.batch} items a step, best of {args.rounds} rounds; "
          f"the cached row's first round, filling the cache: {args.items / first[filling]:.1f} items/s "
          f"({args.items / first[filling] / ref:.2f} of the frozen forward)\n")
    print(markdown_table(["condition", "items/s", "ratio to frozen forward"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
