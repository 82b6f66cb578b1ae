"""``python -m membudget``: the same command line as the ``membudget`` script."""

from membudget.cli import main

raise SystemExit(main())
