"""``mmi train DATASET --source A --target B --store STORE --output DIR``: train the fusion
model on one cold-start direction; also ``accelerate launch scripts/train.py ...``. The
protocol options (``--overlap-fraction``, ``--cold-items``) make it the same task as
``mmi evaluate`` with them."""
from __future__ import annotations

import argparse
from pathlib import Path

from fusion import InterestModel
from multimodal_interest.commands import _protocol
from multimodal_interest.data.dataset import CrossPlatformDataset
from multimodal_interest.data.registry import resolve
from multimodal_interest.run import Run, model_folder
from multimodal_interest.training import ItemFeatures, TrainConfig, add_platform, train
from multimodal_interest.training.config import apply_overrides
from multimodal_interest.training.errors import SettingsError
from multimodal_interest.training.features import parse_item_spaces
from multimodal_interest.training.record import RESUMABLE


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", help="dataset folder, or the name of a registered dataset")
    p.add_argument("--source", required=True, help="platform the users come from")
    p.add_argument("--target", required=True, help="platform to recommend on")
    p.add_argument("--split", default="published", help="saved split to use (see `mmi validate`)")
    p.add_argument("--store", type=Path, help="embedding store with the item features "
                                              "(`mmi embed DATASET --store ...`); none: item ids only")
    p.add_argument("--modalities", help="comma-separated store modalities to use (default: all)")
    p.add_argument("--item-space", action="append", default=[], metavar="PLATFORM=FILE",
                   help="score PLATFORM in its own item space: a .parquet/.npz of item_id -> vector "
                        "(any width; or VECTORS.npy:IDS.txt), e.g. from its own recommender")
    p.add_argument("--output", type=Path, required=True,
                   help=f"run folder; re-running resumes it, with the same task, store and settings "
                        f"(only {', '.join(RESUMABLE)} may change)")
    p.add_argument("--config", type=Path, help="TrainConfig as YAML or JSON")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set lr=3e-4 (repeatable)")
    p.add_argument("--init", type=Path, help="start from this model (a run folder or a saved model "
                                             "folder); a target it has no head for gets one (zero-shot "
                                             "start); with --set trainable=target-head only that head learns")
    p.add_argument("--no-resume", action="store_true",
                   help="start afresh: delete the checkpoints --output has (e.g. to change settings)")
    _protocol.add_arguments(p)


def flags(settings: dict) -> str:
    """``{"resume": False, "kind": "transformer"}`` -> ``"--no-resume, --set kind=transformer"``."""
    return ", ".join("--no-resume" if (k, v) == ("resume", False) else f"--set {k}={v}" for k, v in settings.items())


def run(args: argparse.Namespace) -> int:
    _protocol.check(args)
    config = (TrainConfig.from_file(args.config, args.set) if args.config
              else TrainConfig.from_dict(apply_overrides({}, args.set), "--set"))
    dataset = CrossPlatformDataset.load(resolve(args.dataset))
    task = dataset.cold_start(args.source, args.target, args.split)
    task = _protocol.single(args, dataset.split(args.split).meta.get("protocol")).apply(task)
    features = ItemFeatures.for_dataset(args.store, dataset, [task.source, task.target], args.modalities,
                                        parse_item_spaces(args.item_space))
    init = None
    if args.init is not None:
        init = InterestModel.from_pretrained(model_folder(args.init), encoder_fingerprints=features.fingerprints)
        if task.target not in init.targets:
            add_platform(init, task, features)
    try:
        result = train(task, features, config, args.output, resume=not args.no_resume,
                       progress_bar=args.progress, init=init)
    except SettingsError as e:  # the library names settings; say them as this command's flags
        raise ValueError(f"{e} (here: {flags(e.settings)})") from None
    chosen = result.history[-1].get("chosen") if result.history else None
    if chosen is not None:  # the linear model's closed-form fit: what validation chose
        weights = ", ".join(f"{k[2:]} {v:g}" for k, v in chosen.items() if k.startswith("w_"))
        how = f"closed form: lam {chosen['lam']:.3g}, block weights {weights}, width {chosen['rank']}"
    else:
        how = f"at epoch {result.best_epoch} of {result.epochs_run} ({result.seconds_to_best:.0f}s to best)"
    print(f"{task.label}: best validation NDCG@10 {result.best_valid_ndcg10:.4f}, {how}; "
          f"{result.seconds:.0f}s in all; model in {Run(args.output).model_dir}")
    return 0
