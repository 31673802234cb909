"""``mmi finetune DATASET --source A --target B --encoder text=NAME --output DIR``: fine-tune the
text encoder end to end on the interest objective (a user's source history must pick their
target items); also ``accelerate launch scripts/finetune.py ...``. The protocol options make
it the task ``mmi train`` and ``mmi evaluate`` see with them. The best encoder on validation,
the starting one (epoch 0) included, lands in ``DIR/encoder``: ``mmi embed ... --encoder
text=finetuned:DIR/encoder`` puts its vectors in a store. ``--encoder image=efficientnet-lite0``
tunes the image encoder's last blocks on the catalogs' images instead (``mmi embed ...
--encoder image=finetuned-image:DIR/encoder``)."""
from __future__ import annotations

import argparse
from pathlib import Path

from multimodal_interest.commands import _protocol
from multimodal_interest.data.dataset import CrossPlatformDataset
from multimodal_interest.data.registry import resolve
from multimodal_interest.parallel import cpu_only
from multimodal_interest.training.errors import SettingsError
from multimodal_interest.training.finetune import FinetuneConfig, finetune, item_texts
from multimodal_interest.training.finetune.image import TUNABLE, item_images

# FinetuneConfig fields given on the command line: name -> (type, help)
SETTINGS: dict[str, tuple[type, str]] = {
    "epochs": (int, "epochs (default 1)"),
    "epoch_steps": (int, "steps per epoch (default: one pass over the training users)"),
    "batch_size": (int, "users per step, all processes together (default 32)"),
    "grad_accum": (int, "steps per optimizer update (default 1)"),
    "lr": (float, "learning rate (default 2e-5; LoRA wants more, e.g. 5e-4)"),
    "temperature": (float, "InfoNCE temperature (default 0.05)"),
    "negatives": (int, "target items drawn by popularity per step (default 64)"),
    "max_len": (int, "most recent source items of a history (default 20)"),
    "max_seq_length": (int, "tokens per item text (default 64; saved with the encoder)"),
    "lora_rank": (int, "LoRA adapters of this rank instead of every weight; merged when saved (default 0: off)"),
    "train_layers": (int, "only the top N transformer layers learn (default: all); for an image encoder the "
                          "last N stages of blocks and the head (default 1)"),
    "lower_cache_mb": (float, "with --train-layers and no LoRA, and for images: MB per process for the frozen "
                              "lower layers' output, computed once per item (default 1024)"),
    "mixed_precision": (str, "auto (bf16 on CUDA, else fp32), no, bf16"),
    "patience": (int, "epochs without progress before stopping (default 2)"),
    "checkpoint_every": (int, "also save the training state every N steps (default: at epoch ends)"),
    "seed": (int, "seed (default 0)"),
}


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", help="dataset folder, or the name of a registered dataset")
    p.add_argument("--source", required=True, help="platform the users come from")
    p.add_argument("--target", required=True, help="platform to recommend on")
    p.add_argument("--split", default="published", help="saved split to use (see `mmi validate`)")
    p.add_argument("--encoder", default="text=sentence-transformer", metavar="text=NAME[:OPTIONS]",
                   help="the encoder to start from: text=sentence-transformer (packaged MiniLM, the "
                        "default), text=mpnet, text=finetuned:PATH; or an image encoder, whose last blocks "
                        "learn on the catalogs' images: image=efficientnet-lite0, image=finetuned-image:PATH")
    p.add_argument("--output", type=Path, required=True,
                   help="run folder; re-running resumes it with the same task, encoder and settings "
                        "(epochs, patience, checkpoint-every, lower-cache-mb may change)")
    p.add_argument("--no-resume", action="store_true", help="start afresh: delete the checkpoints --output has")
    group = p.add_argument_group("fine-tuning settings")
    for name, (kind, text) in SETTINGS.items():
        group.add_argument(f"--{name.replace('_', '-')}", type=kind, help=text)
    _protocol.add_arguments(p)


def base_encoder(option: str) -> tuple[str, str]:
    """``text=NAME[:OPTIONS]`` or ``image=NAME[:OPTIONS]`` -> (modality, ``NAME[:OPTIONS]``)."""
    from encoders import get_encoder_class

    slot, eq, spec = (part.strip() for part in option.partition("="))
    name = spec.partition(":")[0]
    if slot not in ("text", "image") or not eq or not spec or (slot == "image" and name not in TUNABLE):
        raise ValueError(f"--encoder {option!r}: expected text=NAME[:OPTIONS], e.g. text=sentence-transformer "
                         f"(a text encoder), or image={TUNABLE[0]} or image={TUNABLE[1]}:PATH (the image "
                         f"encoder whose last blocks fine-tuning tunes)")
    if get_encoder_class(name).modality != slot:
        raise ValueError(f"--encoder {option!r}: {name} is an encoder of {get_encoder_class(name).modality}, "
                         f"not {slot}")
    return slot, spec


def run(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    _protocol.check(args)
    modality, spec = base_encoder(args.encoder)
    config = FinetuneConfig.from_dict({k: getattr(args, k) for k in SETTINGS if getattr(args, k) is not None})
    dataset = CrossPlatformDataset.load(resolve(args.dataset))
    task = dataset.cold_start(args.source, args.target, args.split)
    task = _protocol.single(args, dataset.split(args.split).meta.get("protocol")).apply(task)
    if modality == "image":  # PartialState told cpu= as the Accelerator will be (else a launch on CPUs splits)
        contents = image_contents(dataset, task.platforms, PartialState(cpu=cpu_only()).is_main_process)
    else:
        contents = {p: item_texts(dataset, p) for p in task.platforms}
    try:
        result = finetune(task, contents, spec, config, args.output, resume=not args.no_resume,
                          progress_bar=args.progress)
    except SettingsError as e:
        raise ValueError(f"{e} (here: --no-resume)") from None
    if PartialState().is_main_process:
        cold = bool(result.history) and "valid_cold_among_cold_ndcg10" in result.history[0]
        what = "NDCG@10 of the cold items among the cold items" if cold else "NDCG@10"
        start = "" if result.start_valid is None else f" (the starting encoder, epoch 0: {result.start_valid:.4f})"
        print(f"{task.label}: best validation {what} {result.best_valid:.4f} at epoch {result.best_epoch} of "
              f"{result.epochs_run}{start}; {result.seconds:.0f}s of training; encoder in {result.encoder_dir} "
              f"(--encoder {modality}={'finetuned-image' if modality == 'image' else 'finetuned'}:"
              f"{result.encoder_dir})")
        if result.best_epoch == 0:
            print(f"fine-tuning did not beat the starting encoder on validation: {result.encoder_dir} is the "
                  f"starting encoder, re-saved")
    return 0


def image_contents(dataset, platforms, report: bool, max_errors: int = 10) -> dict[str, list[str | None]]:
    """Each platform's item image files; the items whose image is unusable are printed (when
    ``report``: the main process) as ``mmi embed`` lists the items it skips."""
    contents, errors = {}, []
    for p in platforms:
        contents[p], bad = item_images(dataset, p)
        errors += bad
    if errors and report:
        lines = [f"{len(errors)} item(s) without a usable image, encoded as a blank image:",
                 *[f"  {e}" for e in errors[:max_errors]]]
        if len(errors) > max_errors:
            lines.append(f"  ... {len(errors) - max_errors} more")
        print("\n".join(lines))
    return contents
