"""Subcommands of the ``online-cnmfe`` command line, one module each."""
