"""``mmi embed CATALOG --store DIR``: encode a catalog's items into the embedding store."""
from __future__ import annotations

import argparse
from pathlib import Path

from multimodal_interest.catalog import Catalog
from multimodal_interest.embed import default_encoders, embed_catalog, load_encoders
from multimodal_interest.store import EmbeddingStore


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("catalog", type=Path, help="items table: .csv, .tsv, .parquet or .jsonl with an item_id column")
    p.add_argument("--store", type=Path, required=True, help="embedding store folder (created if new)")
    p.add_argument("--platform", help="platform name (default: the catalog's file name without extension)")
    p.add_argument("--text-fields", help="comma-separated text columns, in order (default: all but id/media)")
    p.add_argument("--image-column", help="column of image paths (default: 'image' if present)")
    p.add_argument("--audio-column", help="column of audio paths (default: 'audio' if present)")
    p.add_argument("--encoder", action="append", default=[], metavar="SLOT=NAME[:KEY=VALUE,...]",
                   help="encoder for a store slot, e.g. text=hf-text:pooling=cls or "
                        "audio_vggish=precomputed:path=vggish.npy,ids=item_ids.csv (repeatable)")
    p.add_argument("--modalities", help="comma-separated slots to embed (default: all the catalog has)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--shard-size", type=int, default=4096, help="items per store shard (the unit of resume)")
    p.add_argument("--num-workers", type=int, default=None,
                   help="processes decoding images/audio (default: chosen by the encoder)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: best available)")
    p.add_argument("--strict", action="store_true", help="exit non-zero if any item was skipped")


def run(args: argparse.Namespace) -> int:
    fields = args.text_fields.split(",") if args.text_fields else None
    catalog = Catalog.read(args.catalog, fields, args.image_column, args.audio_column)
    specs = default_encoders(catalog)
    for item in args.encoder:
        slot, eq, spec = item.partition("=")
        if not eq or not slot or not spec:
            raise ValueError(f"--encoder {item!r}: expected SLOT=NAME[:KEY=VALUE,...]")
        specs[slot.strip()] = spec.strip()
    if args.modalities:
        wanted = [m.strip() for m in args.modalities.split(",")]
        unknown = [m for m in wanted if m not in specs]
        if unknown:
            raise ValueError(f"--modalities {unknown}: the catalog has {sorted(specs)}")
        specs = {m: specs[m] for m in wanted}
    encoders = load_encoders(specs, device=args.device)
    summary = embed_catalog(catalog, EmbeddingStore(args.store), args.platform or args.catalog.stem,
                            encoders, batch_size=args.batch_size, shard_size=args.shard_size,
                            num_workers=args.num_workers, show_progress=args.progress)
    print(summary.format())
    return 1 if (args.strict and summary.errors) else 0
