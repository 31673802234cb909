"""One module per ``mmi`` sub-command; each has ``build_parser(parser)`` and ``run(args) -> int``."""
