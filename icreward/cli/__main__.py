"""``python -m icreward.cli COMMAND ...`` (what ``make demo`` runs)."""

from . import main

raise SystemExit(main())
