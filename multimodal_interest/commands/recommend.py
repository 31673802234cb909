"""``mmi recommend --model M --platform P (--user U | --history FILE | --interest FILE)``:
recommendations for one person, as a table or JSON; see ``docs/serving.md``.

``--model`` is a bundle (``mmi export-index``), or a saved model folder (alone is enough) or
a training run folder, with ``--dataset`` and ``--store`` (the bundle is then built in
memory). A history file is JSON (a list of item
ids of ``--source``, or of ``{"platform", "item_id"}`` objects) or text, one item id of
``--source`` per line, oldest first.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from fusion.files import MANIFEST_LIMIT, read_json
from fusion.saving import MANIFEST
from multimodal_interest.bundle import FORMAT, Bundle
from multimodal_interest.commands.export_index import add_model_arguments, build_bundle
from multimodal_interest.data.dataset import CrossPlatformDataset
from multimodal_interest.data.registry import resolve
from multimodal_interest.recommend import Recommendation, Recommender, UserHistories
from multimodal_interest.retrieval import KINDS
from multimodal_interest.store import atomic_write_bytes


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="bundle folder, or a saved model or training run folder "
                                                 "(+ --dataset, --store)")
    p.add_argument("--platform", required=True, help="platform to recommend on")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="a user id of --dataset: their history on the other platforms")
    who.add_argument("--history", type=Path, help="history file (JSON or one item id per line), oldest first")
    who.add_argument("--interest", type=Path, help="a portable interest document (JSON)")
    p.add_argument("--source", help="platform of the history file's plain item ids")
    add_model_arguments(p)
    p.add_argument("-k", type=int, default=10, help="how many items (default 10)")
    p.add_argument("--index", default="exact", choices=KINDS, help="retrieval (default exact)")
    p.add_argument("--explain", type=int, default=3, help="history items named per item (0: none)")
    p.add_argument("--include-seen", action="store_true", help="allow items the person already has")
    p.add_argument("--skip-unknown", action="store_true", help="leave unknown item ids out instead of failing")
    p.add_argument("--save-interest", type=Path, help="also write the person's interest document here")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def open_recommender(args: argparse.Namespace) -> Recommender:
    model = Path(args.model)
    if (model / MANIFEST).is_file() and _format(read_json(model / MANIFEST, MANIFEST_LIMIT)) == FORMAT:
        bundle = Bundle.load(model)
        dataset = CrossPlatformDataset.load(resolve(args.dataset)) if args.dataset else None
    else:
        bundle, dataset = build_bundle(args)
    return Recommender(bundle, args.index, UserHistories(dataset) if dataset is not None else None)


def _format(manifest) -> str | None:
    """The ``format`` a manifest declares (None: it is not even a JSON object)."""
    return manifest.get("format") if isinstance(manifest, dict) else None


def read_history(path: Path) -> list:
    if path.suffix != ".json":
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    doc = read_json(path)
    if not isinstance(doc, list):
        raise ValueError(f"{path}: expected a JSON list of item ids or {{platform, item_id}} objects")
    out = []
    for n, x in enumerate(doc):
        if isinstance(x, dict) and set(x) == {"platform", "item_id"}:
            out.append((str(x["platform"]), str(x["item_id"])))
        elif isinstance(x, (str, int)) and not isinstance(x, bool):
            out.append(str(x))
        else:
            raise ValueError(f"{path}: entry {n}: expected an item id or {{\"platform\", \"item_id\"}}, got {x!r}")
    return out


def run(args: argparse.Namespace) -> int:
    if args.user and not args.dataset:
        raise ValueError("--user needs --dataset: the user's history comes from its interactions")
    rec = open_recommender(args)
    history = read_history(args.history) if args.history else None
    person = dict(source=args.source, user_id=args.user, skip_unknown=args.skip_unknown)
    if args.interest:
        interest = args.interest.read_text(encoding="utf-8")
        result = rec.recommend(platform=args.platform, k=args.k, interest=interest,
                               exclude_seen=not args.include_seen, explain=args.explain)
    else:
        result = rec.recommend(history, platform=args.platform, k=args.k,
                               exclude_seen=not args.include_seen, explain=args.explain, **person)
    if args.save_interest:
        if args.interest:
            raise ValueError("--save-interest: the input is already an interest document")
        doc = rec.export_interest(history, **person)
        atomic_write_bytes(args.save_interest, (json.dumps(doc) + "\n").encode())
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_table(result))
    return 0


def format_table(r: Recommendation) -> str:
    h = r.history
    who = ("an interest document" if h is None else
           f"a history of {h.given} item(s), {h.used} used"
           + (f", {h.truncated} older left out" if h.truncated else "")
           + (f", {len(h.unknown)} unknown skipped" if h.unknown else "")
           + (f", {len(h.not_embeddable)} with nothing to embed" if h.not_embeddable else ""))
    lines = [f"{r.platform}: top {len(r.items)} for {who} (model {r.model[:19]}…, index {r.index})"]
    if r.fallback:
        lines.append(f"  nothing carried interest: ranked by {r.fallback} (the model's item bias)")
    width = max([len(x.item_id) for x in r.items] + [7])
    lines.append(f"  {'rank':>4}  {'item_id':<{width}}  {'score':>8}  because (score drop without it)")
    for n, x in enumerate(r.items, 1):
        because = ", ".join(f"{c.platform}:{c.item_id} (+{c.contribution:.3f})" for c in x.because)
        lines.append(f"  {n:>4}  {x.item_id:<{width}}  {x.score:>8.3f}  {because}")
    return "\n".join(lines)
