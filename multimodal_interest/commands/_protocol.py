"""The protocol options that ``mmi split``, ``mmi train`` and ``mmi evaluate`` share
(``--overlap-fraction``, ``--cold-items``, ``--protocol-seed``; see
:mod:`multimodal_interest.data.protocols`). Not a sub-command."""
from __future__ import annotations

import argparse

from multimodal_interest.data.protocols import Protocol, check_cold_items, parse_fractions

OPTIONS = ("overlap_fraction", "cold_items", "seed")


def add_arguments(p: argparse.ArgumentParser, curve: bool = False) -> None:
    """Add the protocol options; with ``curve``, ``--overlap-fraction`` takes a list."""
    group = p.add_argument_group("evaluation protocols (default: none; a split saved with a "
                                 "protocol by `mmi split` applies it)")
    group.add_argument("--overlap-fraction", metavar="F[,F...]" if curve else "F",
                       help="only this seeded share (0..1) of the overlapping training users stay linked; "
                            "each other one becomes a source-only and a target-only user (0: no shared "
                            "users)" + ("; several, e.g. 0,0.01,0.05,0.2,1: the learning curve, each "
                                        "fraction in its own subfolder of --output, plus a table and a PNG"
                                        if curve else ""))
    group.add_argument("--cold-items", type=float, metavar="F",
                       help="this seeded share (0 < F < 1) of the target's items loses every training "
                            "interaction; half are validation, half test cold items; the report adds "
                            "cold, warm and cold-candidates slices")
    group.add_argument("--protocol-seed", type=int, metavar="N", help="seed of both protocols (default 0)")


def check(args: argparse.Namespace, curve: bool = False) -> None:
    """Refuse out-of-range options at once, before any data is read."""
    if curve:
        protocols(args)
    else:
        single(args)


def protocols(args: argparse.Namespace, recorded: dict | None = None) -> list[Protocol]:
    """The protocols the options ask for, one per overlap fraction (the identity when none
    is given). ``recorded``: the protocol a saved split records (``mmi split``); options
    that disagree with it are an error."""
    fractions = parse_fractions(args.overlap_fraction) if args.overlap_fraction is not None else None
    if args.cold_items is not None:
        check_cold_items(args.cold_items)
    if recorded:
        saved = Protocol.from_meta(recorded)
        given = {"overlap_fraction": fractions, "cold_items": args.cold_items, "seed": args.protocol_seed}
        clash = [f"--{k.replace('_', '-')}" for k, v in given.items()
                 if v is not None and v != ([getattr(saved, k)] if k == "overlap_fraction" else getattr(saved, k))]
        if clash:
            raise ValueError(f"{' and '.join(clash)} {'disagrees' if len(clash) == 1 else 'disagree'} with the protocol the split records "
                             f"({saved.to_meta()}); give them as recorded, or none")
        return [saved]
    seed = 0 if args.protocol_seed is None else args.protocol_seed
    return [Protocol(f, args.cold_items, seed) for f in (fractions or [1.0])]


def single(args: argparse.Namespace, recorded: dict | None = None) -> Protocol:
    """The one protocol of a command that takes a single overlap fraction."""
    found = protocols(args, recorded)
    if len(found) != 1:
        raise ValueError(f"--overlap-fraction {args.overlap_fraction}: give one fraction here "
                         "(several, a learning curve, is for `mmi evaluate`)")
    return found[0]
