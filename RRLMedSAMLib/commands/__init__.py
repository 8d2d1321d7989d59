"""One module per sub-command; each defines ``add_arguments(parser)`` and ``run(args) -> int``; its docstring is the help page."""
