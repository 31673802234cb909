"""``mmi embed SOURCE --store DIR``: encode items into the embedding store.

SOURCE is one catalog file (one platform), or a dataset folder / registered dataset name
(every platform: its text, image and audio columns, and its precomputed vector files).
"""
from __future__ import annotations

import argparse
from contextlib import nullcontext
from pathlib import Path

from multimodal_interest.catalog import Catalog
from multimodal_interest.data.dataset import CrossPlatformDataset
from multimodal_interest.data.registry import resolve
from multimodal_interest.embed import default_encoders, embed_catalog, load_encoders
from multimodal_interest.store import EmbeddingStore


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="catalog file (.csv, .tsv, .parquet, .jsonl with an item_id "
                                  "column), dataset folder, or registered dataset name")
    p.add_argument("--store", type=Path, required=True, help="embedding store folder (created if new)")
    p.add_argument("--platform", help="catalog: its platform name (default: the file name); "
                                      "dataset: embed only this platform")
    p.add_argument("--text-fields", help="catalog: comma-separated text columns, in order "
                                         "(default: all but id/media)")
    p.add_argument("--image-column", help="catalog: column of image paths (default: 'image' if present)")
    p.add_argument("--audio-column", help="catalog: column of audio paths (default: 'audio' if present)")
    p.add_argument("--encoder", action="append", default=[], metavar="SLOT=NAME[:KEY=VALUE,...]",
                   help="encoder for a store slot, e.g. text=hf-text:pooling=cls or "
                        "vggish=precomputed:path=vggish.npy,ids=item_ids.csv (repeatable)")
    p.add_argument("--modalities", help="comma-separated slots to embed (default: all there are)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--shard-size", type=int, default=4096, help="items per store shard (the unit of resume)")
    p.add_argument("--num-workers", type=int, default=None,
                   help="processes decoding images/audio (default: chosen by the encoder)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: best available)")
    p.add_argument("--strict", action="store_true", help="exit non-zero if any item was skipped")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process (or an accelerate launch); ray: a pool of encoder "
                        "actors on Ray (pip install 'multimodal-interest[distributed]'; docs/distributed.md)")
    p.add_argument("--ray-address", help="ray: the cluster to join (default: a local Ray on this machine)")
    p.add_argument("--ray-workers", type=int, help="ray: encoder actors (default: one per GPU, else per CPU)")


def run(args: argparse.Namespace) -> int:
    store = EmbeddingStore(args.store)
    if Path(args.source).is_file():
        fields = args.text_fields.split(",") if args.text_fields else None
        catalog = Catalog.read(args.source, fields, args.image_column, args.audio_column)
        jobs = [(args.platform or Path(args.source).stem, catalog, default_encoders(catalog))]
    else:
        dataset = CrossPlatformDataset.load(resolve(args.source))
        platforms = [args.platform] if args.platform else dataset.platforms
        jobs = [(p, Catalog.from_dataset(dataset, p), dataset_encoders(dataset, p)) for p in platforms]
    with engine_session(args):
        return _embed(args, store, jobs)


def engine_session(args: argparse.Namespace):
    """One Ray session for the whole command (every platform) with ``--engine ray``."""
    if args.engine != "ray":
        return nullcontext()
    from multimodal_interest.distributed import ray_session

    return ray_session(args.ray_address)


def _embed(args: argparse.Namespace, store: EmbeddingStore, jobs: list) -> int:
    from accelerate import PartialState  # after embed_catalog set it up: the processes' shared state

    failed = False
    for platform, catalog, specs in jobs:
        specs = choose(specs, args.encoder, args.modalities)
        if args.engine == "ray":
            from multimodal_interest.distributed import embed_catalog_ray

            summary = embed_catalog_ray(catalog, store, platform, specs, device=args.device,
                                        batch_size=args.batch_size, shard_size=args.shard_size,
                                        num_workers=args.num_workers, workers=args.ray_workers,
                                        address=args.ray_address, show_progress=args.progress)
        else:
            summary = embed_catalog(catalog, store, platform, load_encoders(specs, device=args.device),
                                    batch_size=args.batch_size, shard_size=args.shard_size,
                                    num_workers=args.num_workers, show_progress=args.progress)
        if PartialState().is_main_process:  # under accelerate launch the others would repeat it
            print(summary.format())
        failed |= bool(summary.errors)
    return 1 if (args.strict and failed) else 0


def dataset_encoders(dataset: CrossPlatformDataset, platform: str) -> dict[str, str]:
    """Default encoders of a dataset platform's columns, plus its precomputed vector files."""
    specs = default_encoders(Catalog.from_dataset(dataset, platform))
    for name, vec in dataset.manifest.platforms[platform].vectors.items():
        modality = vec.modality if vec.modality != "other" else "vector"
        specs[name] = f"precomputed:path={dataset.root / vec.path},modality={modality}"
    return specs


def choose(specs: dict[str, str], overrides: list[str], modalities: str | None) -> dict[str, str]:
    """``specs`` with ``--encoder SLOT=SPEC`` overrides applied, limited to ``--modalities``."""
    specs = dict(specs)
    for item in overrides:
        slot, eq, spec = item.partition("=")
        if not eq or not slot or not spec:
            raise ValueError(f"--encoder {item!r}: expected SLOT=NAME[:KEY=VALUE,...]")
        specs[slot.strip()] = spec.strip()
    if modalities:
        wanted = [m.strip() for m in modalities.split(",")]
        unknown = [m for m in wanted if m not in specs]
        if unknown:
            raise ValueError(f"--modalities {unknown}: there are {sorted(specs)}")
        specs = {m: specs[m] for m in wanted}
    return specs
