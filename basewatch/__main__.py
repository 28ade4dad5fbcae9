"""``python -m basewatch`` runs the CLI."""

from basewatch.cli import main

raise SystemExit(main())
