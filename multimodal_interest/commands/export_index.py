"""``mmi export-index --model RUN --dataset D --store S --output BUNDLE``: write a deployment
bundle (model, item ids, item vectors, features, FAISS indexes) that ``mmi serve`` and
``mmi recommend`` load; see ``docs/serving.md``."""
from __future__ import annotations

import argparse
from pathlib import Path

from multimodal_interest.bundle import MAP_USERS, Bundle, probe_queries
from multimodal_interest.data.dataset import CrossPlatformDataset
from multimodal_interest.data.registry import resolve
from multimodal_interest.retrieval import FAISS_KINDS
from multimodal_interest.store import EmbeddingStore
from multimodal_interest.features import parse_item_spaces


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """What building a bundle needs (shared with ``mmi recommend``)."""
    p.add_argument("--dataset", help="the dataset the model was trained on (folder or registered name)")
    p.add_argument("--store", type=Path, help="the embedding store the model was trained with")
    p.add_argument("--split", help="the training split, a label (default: the one the model records; "
                                   "another is refused)")
    p.add_argument("--item-space", action="append", default=[], metavar="PLATFORM=FILE",
                   help="the file of PLATFORM's own item vectors the model was trained with "
                        "(a model that scores PLATFORM in its own item space needs it)")


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a saved model folder (alone is enough), or a training "
                                                  "run folder (its best model)")
    add_model_arguments(p)
    p.add_argument("--output", type=Path, required=True, help="bundle folder to write (replaced whole)")
    p.add_argument("--index", default="flat",
                   help=f"comma-separated FAISS indexes to build per target: {', '.join(FAISS_KINDS)} "
                        f"or none (default: flat); ivf/hnsw get their recall@10 measured")
    p.add_argument("--nprobe", type=int, default=32, help="IVF cells searched per query (more: slower, "
                                                          "higher recall)")
    p.add_argument("--ef-search", type=int, default=128, help="HNSW candidates per query (more: slower, "
                                                              "higher recall)")
    p.add_argument("--map-users", type=int, default=MAP_USERS,
                   help=f"users whose interest vectors make the bundle's 2-D map, the one the page of "
                        f"`mmi serve` shows (default {MAP_USERS}; 0: no map)")


def parse_kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip() and k.strip() != "none")
    bad = [k for k in kinds if k not in FAISS_KINDS]
    if bad:
        raise ValueError(f"--index {bad}: choose from {', '.join(FAISS_KINDS)} or none")
    return kinds


def build_bundle(args: argparse.Namespace, map_users: int = 0) -> tuple[Bundle, CrossPlatformDataset]:
    if not args.dataset:
        raise ValueError(f"{args.model} is a model, not a bundle: --dataset (and --store) are needed")
    dataset = CrossPlatformDataset.load(resolve(args.dataset))
    store = EmbeddingStore(args.store) if args.store else None
    return Bundle.build(args.model, dataset, store, args.split, parse_item_spaces(args.item_space),
                        map_users), dataset


def run(args: argparse.Namespace) -> int:
    kinds = parse_kinds(args.index)
    if args.map_users < 0:
        raise ValueError(f"--map-users {args.map_users}: give 0 (no map) or more users")
    bundle, dataset = build_bundle(args, args.map_users)
    queries = probe_queries(bundle, dataset) if set(kinds) - {"flat"} else None
    bundle.save(args.output, kinds, queries, args.nprobe, args.ef_search)
    saved = Bundle.load(args.output)
    print(f"bundle {args.output}: model {saved.fingerprint[:19]}…, {saved.info.get('task')} "
          f"on {saved.info.get('dataset')} ({saved.info.get('split')})")
    for p, ids in saved.item_ids.items():
        role = ", ".join(r for r, yes in (("target", p in saved.targets),
                                          ("history", p in saved.history_platforms)) if yes)
        added = saved.info.get("items_added_after_training", {}).get(p)
        print(f"  {p}: {len(ids)} items ({role})" + (f", {added} added after training, scored from their content"
                                                     if added else ""))
    if saved.user_map is not None:
        m = saved.user_map
        print(f"  map: {len(m.points)} users' interest vectors ({m.source} histories), "
              f"PCA explains {m.explained.sum():.0%} of their variance")
    for e in saved.indexes:
        recall = f", recall@10 {e['recall@10']:.4f} on {e['recall_queries']} user queries" if "recall@10" in e else ""
        print(f"  index {e['path']}: {e['kind']} {e['params'] or ''}{recall}")
    return 0
