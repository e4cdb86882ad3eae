"""``python -m online_cnmfe`` runs the command-line interface."""

from online_cnmfe.cli import main

raise SystemExit(main())
