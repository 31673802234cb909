"""``mmi demo``: the whole toolkit on one dataset, end to end, in a few minutes on a CPU.

fetch the dataset -> embed every platform's items -> train the interest model -> evaluate it
against the baselines on cold-start users -> recommend for three of them, with the history
items behind each recommendation. Default: MovieLens-100k split by genre into two
*synthetic* platforms (comedy -> drama), fetched from the package index.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from multimodal_interest.blend import BLEND
from multimodal_interest.catalog import Catalog
from multimodal_interest.commands.embed import dataset_encoders
from multimodal_interest.data.dataset import CrossPlatformDataset
from multimodal_interest.data.registry import cache_root, get_dataset
from multimodal_interest.embed import embed_catalog, load_encoders
from multimodal_interest.experiment import (MODEL, all_methods, interest_map_vectors, item_texts,
                                            model_run_dir, parse_methods, run_methods, write_report)
from multimodal_interest.run import Run
from multimodal_interest.store import EmbeddingStore
from multimodal_interest.training import ItemFeatures, TrainConfig
from multimodal_interest.training.config import apply_overrides
from multimodal_interest.training.record import NotResumable, check_resumable, trained_with
from multimodal_interest.training.trainer import latest_checkpoint

DEFAULT_SPLIT = "cold20_seed900"


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="movielens-100k", help="a registered dataset (see `mmi datasets`)")
    p.add_argument("--from-dir", type=Path, help="local copy of the dataset's files (see `mmi fetch`)")
    p.add_argument("--source", help="platform users come from (default: the dataset's first)")
    p.add_argument("--target", help="platform to recommend on (default: the dataset's second)")
    p.add_argument("--split", help=f"saved split (default: 'published' if there is one, else {DEFAULT_SPLIT})")
    p.add_argument("--methods", default="all", help=f"comma-separated: {', '.join(all_methods())}")
    p.add_argument("--workdir", type=Path, help="store, runs and report (default: in the cache folder)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="TrainConfig override")
    p.add_argument("--users", type=int, default=3, help="cold-start users to recommend for")


def run(args: argparse.Namespace) -> int:
    say = print
    say(f"[1/5] dataset {args.dataset}")
    dataset = CrossPlatformDataset.load(get_dataset(args.dataset, from_dir=args.from_dir))
    source = args.source or dataset.platforms[0]
    target = args.target or dataset.platforms[1]
    split = args.split or ("published" if "published" in dataset.splits() else DEFAULT_SPLIT)
    task = dataset.cold_start(source, target, split)
    say(f"      {task.label}: {len(task.overlap_users())} users on both platforms teach the map; "
        f"{len(task.test_users)} cold-start test users")
    work = args.workdir or cache_root() / "demo" / dataset.name
    store = EmbeddingStore(work / "store")

    say(f"[2/5] embedding the items into {store.root}")
    for platform in (source, target):
        catalog = Catalog.from_dataset(dataset, platform)
        summary = embed_catalog(catalog, store, platform, load_encoders(dataset_encoders(dataset, platform)),
                                show_progress=args.progress)
        say("      " + summary.format().replace("\n", "\n      "))

    methods = parse_methods(args.methods)
    say(f"[3/5] training the interest model and fitting {len(set(methods) - {MODEL, BLEND})} baselines")
    features = ItemFeatures.for_dataset(store.root, dataset, [source, target])
    config = TrainConfig.from_dict(apply_overrides({}, args.set), "--set")
    _drop_stale_run(model_run_dir(work, task), task, features, config, say)
    runs = run_methods(task, methods, features, work, config, progress=args.progress,
                       texts=item_texts(dataset, task.platforms))

    say("[4/5] cold-start evaluation on the test users")
    model_run = runs.get(MODEL) if MODEL in runs and runs[MODEL].error is None else None  # failed: no model
    report = write_report(task, runs, work / "report",
                          interest_map_vectors(model_run.model, task) if model_run else None,
                          command=args.command_line)
    say(report.summary())
    say(f"      full report with figures: {report.path}")

    if model_run is not None:
        say(f"[5/5] recommendations on {target} for {args.users} cold-start users, from their {source} history alone")
        _show_recommendations(dataset, task, Path(model_run.notes["run"]), store, args.users, say)
    return 0


def _show_recommendations(dataset, task, run_dir: Path, store, n_users: int, say) -> None:
    from multimodal_interest.bundle import Bundle
    from multimodal_interest.recommend import Recommender

    rec = Recommender(Bundle.build(Run(run_dir).model_dir, dataset, store))
    titles = {p: _titles(dataset, p) for p in (task.source, task.target)}
    rng = np.random.default_rng(0)
    users = rng.choice(task.test_users, size=min(n_users, len(task.test_users)), replace=False)
    for user, truth in zip(users, task.target_truth(users)):
        h = task.source_histories(np.array([user]))
        history = [dataset.items[task.source]["item_id"].iat[i] for i in h.items[0][h.mask[0]].tolist()]
        out = rec.recommend(history, source=task.source, platform=task.target, k=5, explain=2)
        liked = set(dataset.items[task.target]["item_id"].iloc[truth])
        say(f"\n  user {dataset.user_ids[user]}: {len(history)} {task.source} items, latest: "
            + "; ".join(titles[task.source][i] for i in history[-3:]))
        for r in out.items:
            mark = "*" if r.item_id in liked else " "
            because = ", ".join(f"{titles[task.source][c.item_id]} (+{c.contribution:.2f})" for c in r.because)
            say(f"   {mark} {titles[task.target][r.item_id]:<45.45} score {r.score:6.2f}  because: {because}")
    say(f"\n  * = in the user's real {task.target} history (hidden from the model)")


def _titles(dataset, platform: str) -> dict[str, str]:
    items = dataset.items[platform]
    fields = dataset.text_fields(platform)
    text = items[fields[0]].astype(str) if fields else items["item_id"].astype(str)
    return dict(zip(items["item_id"].astype(str), text))


def _drop_stale_run(run_dir: Path, task, features: ItemFeatures, config: TrainConfig, say) -> None:
    """The demo's own run folder resumes when it can; one trained otherwise (other ``--set``
    values, an older version) is the demo's cache, not the user's work: start it afresh."""
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:  # a closed-form fit keeps no checkpoint: its settings must be the same
        if Run(run_dir).holds_other_settings(config):
            say("      the demo's earlier run was fitted with other settings; training afresh")
            shutil.rmtree(run_dir)
        return
    try:
        check_resumable(ckpt, trained_with(task, features, config))
    except NotResumable as exc:
        say(f"      the demo's earlier run cannot be resumed ({exc.reason[:200]}); training afresh")
        shutil.rmtree(run_dir)
