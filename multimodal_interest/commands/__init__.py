"""One module per ``mmi`` sub-command; each has ``build_parser(parser)`` and ``run(args) -> int``
(``_protocol``: the protocol options several commands share, not a sub-command)."""
