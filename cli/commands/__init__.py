"""One module per ``tune2serve`` verb, each ``add_arguments(parser)`` and ``run(args) -> int``, importing only the standard library at top level."""
