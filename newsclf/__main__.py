"""`python -m newsclf` runs the CLI."""

from newsclf.cli import main

raise SystemExit(main())
