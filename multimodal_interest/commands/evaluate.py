"""``mmi evaluate DATASET --source A --target B``: the interest model and the baselines on the
same cold-start split; prints a table, writes JSON, Markdown and figures. With A = B, a
within-platform task from the interactions' own labels (``CrossPlatformDataset.within_platform``).
Protocols (``--overlap-fraction``, ``--cold-items``: :mod:`multimodal_interest.data.protocols`)
transform the task first; several overlap fractions make a learning curve."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from multimodal_interest.baselines import DEFAULT_BUDGET
from multimodal_interest.commands import _protocol
from multimodal_interest.data.dataset import CrossPlatformDataset
from multimodal_interest.data.registry import resolve
from multimodal_interest.experiment import (MODEL, all_methods, interest_map_vectors, item_texts,
                                            parse_methods, run_methods, write_report)
from multimodal_interest.learning_curve import LearningCurve, fraction_folder, write_learning_curve
from multimodal_interest.training import ItemFeatures, TrainConfig
from multimodal_interest.training.config import apply_overrides
from multimodal_interest.training.features import parse_item_spaces


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", help="dataset folder, or the name of a registered dataset")
    p.add_argument("--source", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--both", action="store_true", help="also the other direction (target -> source)")
    p.add_argument("--split", default="published",
                   help="saved user split (with --source = --target: the interactions' own train/valid/test labels)")
    p.add_argument("--store", type=Path, help="embedding store of the dataset's items (none: ids only)")
    p.add_argument("--modalities", help="store modalities the model uses (default: all)")
    p.add_argument("--item-space", action="append", default=[], metavar="PLATFORM=FILE",
                   help="score PLATFORM in its own item space: a .parquet/.npz of item_id -> vector "
                        "(any width; or VECTORS.npy:IDS.txt), e.g. from its own recommender")
    p.add_argument("--content-modality", default="text", help="modality of the content baselines")
    p.add_argument("--methods", default="all",
                   help=f"comma-separated: {', '.join(all_methods())} (default: all)")
    p.add_argument("--model", type=Path, help="a finished `mmi train` run folder to evaluate instead "
                                              "of training a model")
    p.add_argument("--config", type=Path, help="TrainConfig (YAML/JSON) for the interest model")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="TrainConfig override")
    p.add_argument("--sampled", action="store_true", help="also rank against 999 sampled negatives")
    p.add_argument("--tuning-budget", type=int, default=DEFAULT_BUDGET, metavar="N",
                   help=f"settings each baseline tries on the validation users (>= 1, default "
                        f"{DEFAULT_BUDGET}: its grid); above its grid's size, the grid then seeded random "
                        f"draws from its documented space, e.g. 20 for about the interest model's number")
    p.add_argument("--output", type=Path, required=True,
                   help="folder for results, figures and runs; each method's results are saved as "
                        "it finishes, and a rerun on the folder skips the methods already done "
                        "with the same split, data and settings")
    _protocol.add_arguments(p, curve=True)


def run(args: argparse.Namespace) -> int:
    methods = parse_methods(args.methods)
    if args.tuning_budget < 1:
        raise ValueError(f"--tuning-budget must be >= 1, got {args.tuning_budget}")
    _protocol.check(args, curve=True)
    config = (TrainConfig.from_file(args.config, args.set) if args.config
              else TrainConfig.from_dict(apply_overrides({}, args.set), "--set"))
    dataset = CrossPlatformDataset.load(resolve(args.dataset))
    directions = [(args.source, args.target)] + ([(args.target, args.source)] if args.both else [])
    for source, target in directions:
        if source == target:
            base, recorded = dataset.within_platform(source), None
        else:
            base, recorded = dataset.cold_start(source, target, args.split), dataset.split(args.split).meta.get("protocol")
        protocols = _protocol.protocols(args, recorded)
        if len(protocols) > 1 and args.model is not None:
            raise ValueError("--model: a trained run is one task; a learning curve (several "
                             "--overlap-fraction values) trains one model per fraction")
        features = ItemFeatures.for_dataset(args.store, dataset, [source, target], args.modalities,
                                            parse_item_spaces(args.item_space))
        curve = []
        for protocol in protocols:
            task = protocol.apply(base)
            output = args.output if len(protocols) == 1 else fraction_folder(args.output, protocol.overlap_fraction)
            runs = run_methods(task, methods, features, output, config, args.model,
                               args.content_modality, args.sampled, args.progress,
                               texts=item_texts(dataset, task.platforms), tuning_budget=args.tuning_budget)
            model = runs[MODEL].model if MODEL in runs else None
            report = write_report(task, runs, output,
                                  interest_map_vectors(model, task) if model is not None else None,
                                  command=args.command_line, tuning_budget=args.tuning_budget)
            print(report.summary())
            print(f"full report: {report.path}")
            curve.append((task, runs))
        if len(protocols) > 1:
            title = dataclasses.replace(protocols[0], overlap_fraction=1.0).apply(base).label
            learning = LearningCurve.from_runs(title, curve)
            paths = write_learning_curve(learning, args.output, f"{source}-{target}")
            print(learning.markdown())
            print(f"learning curve: {', '.join(str(p) for p in paths)}")
    return 0
