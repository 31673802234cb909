"""The ``mmi`` command line: one sub-command per module in :mod:`multimodal_interest.commands`.

Sub-command modules are imported only when chosen, so ``mmi --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import shlex
import sys

from multimodal_interest.threads import configure_threads

# name -> (module under multimodal_interest.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "the whole toolkit end to end on a demo dataset, in a few minutes"),
    "embed": ("embed", "encode a catalog's items into the embedding store"),
    "validate": ("validate", "check a dataset folder; print its problems or its statistics"),
    "import": ("import_data", "turn a published dataset layout into a dataset folder"),
    "split": ("split", "save user-wise cold-start splits with a dataset"),
    "datasets": ("datasets", "list the registered datasets and which are cached"),
    "fetch": ("fetch", "fetch a registered dataset into the cache, once"),
    "train": ("train", "train the fusion model on one cold-start direction"),
    "finetune": ("finetune", "fine-tune the text encoder end to end on one cold-start direction"),
    "evaluate": ("evaluate", "the model and the baselines on one split: tables, JSON, figures"),
    "export-index": ("export_index", "write a deployment bundle (model, item vectors, FAISS indexes)"),
    "recommend": ("recommend", "recommend items of a platform for a user, history or interest vector"),
    "recommend-batch": ("recommend_batch", "interest vectors and top-k items for every user of a file (Parquet)"),
    "serve": ("serve", "serve recommendations over HTTP (FastAPI + uvicorn)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = argparse.ArgumentParser(prog="mmi", description="Cross-platform user interest transfer.")
    top.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors, no progress bars")
    top.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    top.add_argument("command", nargs="?", choices=sorted(COMMANDS), metavar="COMMAND")
    top.epilog = "commands:\n" + "\n".join(f"  {n:<13} {h}" for n, (_, h) in sorted(COMMANDS.items()))
    top.formatter_class = argparse.RawDescriptionHelpFormatter
    # Only the options before the command belong to `mmi` itself.
    split = next((i for i, a in enumerate(argv) if not a.startswith("-")), len(argv))
    ns = top.parse_args(argv[:split + 1])
    if ns.command is None:
        top.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING if ns.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not ns.debug:  # libraries' own progress notes (checkpoint files saved, ...) are noise here
        for name in ("accelerate", "httpx"):
            logging.getLogger(name).setLevel(logging.WARNING)
    threads = argparse.ArgumentParser(add_help=False)  # every command: before torch loads
    threads.add_argument("--threads", type=int, help="math threads per process (default: "
                         "$OMP_NUM_THREADS, else the cores available / the processes launched)")
    try:
        configure_threads(threads.parse_known_args(argv[split + 1:])[0].threads)
    except ValueError as e:
        print(f"mmi {ns.command}: error: {e}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"multimodal_interest.commands.{COMMANDS[ns.command][0]}")
    parser = argparse.ArgumentParser(prog=f"mmi {ns.command}", description=COMMANDS[ns.command][1],
                                     parents=[threads])
    module.build_parser(parser)
    args = parser.parse_args(argv[split + 1:])
    args.progress = not ns.quiet
    args.command_line = shlex.join(["mmi", *argv])  # recorded in the reports a command writes
    try:
        return int(module.run(args))
    except (ValueError, OSError) as e:  # bad input: one clear line, not a traceback
        if ns.debug:
            raise
        print(f"mmi {ns.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
