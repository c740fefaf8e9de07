"""`newsclf data`: prepare datasets and move them to and from Cloud Storage."""

from __future__ import annotations

import typer

app = typer.Typer(help="Prepare datasets; push and pull them to and from Cloud Storage.", no_args_is_help=True)
